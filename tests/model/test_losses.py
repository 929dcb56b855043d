"""Triplet semi-hard loss against a plain NumPy reference written from the definition (loops, no tricks)."""

import numpy as np
import pytest
import tensorflow as tf

from speechid.model.losses import pairwise_distances, triplet_semihard_loss


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
