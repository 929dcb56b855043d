"""Triplet semi-hard and AAM softmax losses against plain NumPy references written from their definitions."""

import numpy as np
import pytest
import tensorflow as tf

from speechid.model.losses import aam_softmax_loss, pairwise_distances, triplet_semihard_loss


def reference_loss(labels: np.ndarray, emb: np.ndarray, margin: float, squared: bool) -> float:
    emb = emb.astype(np.float64)
    n = len(labels)
    d = np.array([[np.sum((emb[i] - emb[j]) ** 2) for j in range(n)] for i in range(n)])
    if not squared:
        d = np.sqrt(d)
    total, pairs = 0.0, 0
    for a in range(n):
        negatives = [x for x in range(n) if labels[x] != labels[a]]
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            semi = [d[a, x] for x in negatives if d[a, x] > d[a, p]]
            if semi:
                neg = min(semi)
            else:
                neg = max((d[a, x] for x in negatives), default=0.0)
            total += max(0.0, margin + d[a, p] - neg)
            pairs += 1
    return total / pairs if pairs else 0.0


@pytest.mark.parametrize("seed", range(6))
def test_matches_numpy_reference_on_random_batches(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 40))
    labels = rng.integers(0, int(rng.integers(2, 6)), size=n)
    emb = rng.standard_normal((n, int(rng.integers(2, 16)))).astype(np.float32)
    if seed % 2:
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)  # the unit vectors the model really produces
    margin = float(rng.uniform(0.2, 1.5))
    for squared in (False, True):
        got = float(triplet_semihard_loss(tf.constant(labels), tf.constant(emb), margin=margin, squared=squared))
        want = reference_loss(labels, emb, margin, squared)
        assert got == pytest.approx(want, abs=1e-5, rel=1e-5)


def test_pk_batch_and_fallback_cases():
    # Two speakers far apart: the loss is zero; pulling them together makes it positive.
    labels = np.array([0, 0, 1, 1])
    far = np.array([[1, 0], [0.99, 0.141], [-1, 0], [-0.99, -0.141]], np.float32)
    assert float(triplet_semihard_loss(tf.constant(labels), tf.constant(far), margin=0.5)) == pytest.approx(0.0)
    near = np.array([[1, 0], [0, 1], [0.9, 0.436], [0.436, 0.9]], np.float32)
    got = float(triplet_semihard_loss(tf.constant(labels), tf.constant(near), margin=0.5))
    assert got > 0 and got == pytest.approx(reference_loss(labels, near, 0.5, False), abs=1e-5)


def test_no_positive_pair_gives_zero_and_gradients_stay_finite():
    emb = tf.Variable(np.ones((4, 3), np.float32) / np.sqrt(3))  # identical rows: distance exactly 0
    assert float(triplet_semihard_loss(tf.constant([0, 1, 2, 3]), emb)) == 0.0
    with tf.GradientTape() as tape:
        loss = triplet_semihard_loss(tf.constant([0, 0, 1, 1]), emb, margin=1.0)
    grad = tape.gradient(loss, emb)
    assert float(loss) == pytest.approx(1.0)
    assert np.all(np.isfinite(grad.numpy()))


def test_pairwise_distances_zero_diagonal_and_euclidean():
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    d = pairwise_distances(tf.constant(x)).numpy()
    want = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.testing.assert_allclose(d, want, atol=1e-5)
    assert np.all(np.diag(d) == 0)


def numpy_aam(labels, emb, centres, scale, margin):
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    w = centres / np.linalg.norm(centres, axis=0, keepdims=True)
    cos = np.clip(e @ w, -1 + 1e-7, 1 - 1e-7)
    theta = np.arccos(cos)
    logits = scale * cos
    for i, y in enumerate(labels):
        t = theta[i, y]
        logits[i, y] = scale * (np.cos(t + margin) if t + margin < np.pi else cos[i, y] - margin * np.sin(margin))
    logits -= logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -np.mean(logp[np.arange(len(labels)), labels])


def test_aam_matches_numpy_reference():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 7, 24)
    emb = rng.normal(size=(24, 16)).astype(np.float32)
    emb[0] = -rng.normal(size=16)  # some angles near pi to hit the fallback branch
    centres = rng.normal(size=(16, 7)).astype(np.float32)
    centres[:, labels[0]] = -emb[0] + 0.01
    for scale, margin in ((30.0, 0.2), (10.0, 0.5)):
        got = float(aam_softmax_loss(labels, emb, centres, scale, margin))
        assert got == pytest.approx(numpy_aam(labels, emb, centres, scale, margin), rel=1e-4, abs=1e-4)


def test_aam_margin_raises_the_loss():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 5, 16)
    emb = rng.normal(size=(16, 8)).astype(np.float32)
    centres = rng.normal(size=(8, 5)).astype(np.float32)
    with_margin = float(aam_softmax_loss(labels, emb, centres, 30.0, 0.3))
    assert with_margin > float(aam_softmax_loss(labels, emb, centres, 30.0, 0.0))
