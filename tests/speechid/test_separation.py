"""The speaker-level statistic: exact against brute force, about 1 for one voice at any size, growing between
voices, and right where the RMS cross distance is wrong (a tight voice beside a loose one)."""

import numpy as np
import pytest

from speechid.indexing import synthetic
from speechid.separation import PRIOR_DOF, Groups, separation, separation_of, spreads

DIM = 32


def _brute(x, y, pooled, prior=PRIOR_DOF):
    def spread(g):
        ss = float(((g - g.mean(0)) ** 2).sum())
        return (ss + prior * pooled) / (len(g) - 1 + prior)

    d = np.linalg.norm(x.mean(0) - y.mean(0))
    return d / np.sqrt(spread(x) / len(x) + spread(y) / len(y))


def test_groups_and_separation_match_brute_force():
    x, voice = synthetic.clustered_unit_vectors(6, [1, 2, 5, 9, 3, 7], dim=DIM, seed=2)
    g = Groups.of_labels(x, voice)
    x64 = x.astype(np.float64)
    for s in range(6):
        rows = x64[voice == s]
        assert g.counts[s] == len(rows) and g.dof[s] == len(rows) - 1
        assert g.ss[s] == pytest.approx(((rows - rows.mean(0)) ** 2).sum(), abs=1e-5)
    pooled = g.pooled_spread()
    assert pooled == pytest.approx(g.ss.sum() / g.dof.sum())
    a, b = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 5])
    got = separation(g, a, b, pooled)
    want = [_brute(x64[voice == i], x64[voice == j], pooled) for i, j in zip(a, b, strict=True)]
    assert got == pytest.approx(want, rel=1e-5)
    assert separation_of(x64[voice == 4], x64[voice == 5], pooled) == pytest.approx(
        _brute(x64[voice == 4], x64[voice == 5], pooled), rel=1e-5)
    # a one-clip group's spread is the pooled one
    assert spreads(g, pooled)[0] == pytest.approx(pooled)


def test_of_sums_copies_and_merge_keeps_within_spread():
    x, voice = synthetic.clustered_unit_vectors(3, 6, dim=DIM, seed=4)
    g = Groups.of_labels(x, voice)
    sums_before = g.sums.copy()
    h = Groups.of_sums(g.sums, g.counts)
    h.merge(np.array([0]), np.array([1]))
    assert np.array_equal(g.sums, sums_before)  # the source arrays are untouched
    # the merged group's spread is its parts' own, not the spread of two voices around their joint mean
    assert h.ss[0] == pytest.approx(g.ss[0] + g.ss[1]) and h.dof[0] == 10 and h.counts[0] == 12
    joint = x[voice <= 1].astype(np.float64)
    assert ((joint - joint.mean(0)) ** 2).sum() > h.ss[0] * 1.5


def test_one_voice_is_about_one_apart_at_any_size_and_two_voices_grow_apart():
    """Split one voice's clips in two ids: the separation stays near 1 from 3 to 40 clips a side; two voices
    (centres 0.3 apart, the same spread) separate more with every clip."""
    rng = np.random.default_rng(0)
    centres = synthetic.normalize(rng.standard_normal((2, DIM)))
    centres[1] = synthetic.normalize(centres[0] + 0.3 * synthetic.normalize(rng.standard_normal(DIM)))
    same_medians, diff_medians = [], []
    for n in (3, 10, 40):
        same, diff = [], []
        for _ in range(200):
            x, lab = synthetic.clips_around(centres, [2 * n, n], 0.5, rng)
            a, b, c = x[lab == 0][:n], x[lab == 0][n:], x[lab == 1]
            pooled = Groups.of_labels(x, lab).pooled_spread()
            same.append(separation_of(a, b, pooled))
            diff.append(separation_of(a, c, pooled))
        same_medians.append(np.median(same))
        diff_medians.append(np.median(diff))
    assert all(0.7 < m < 1.3 for m in same_medians), same_medians
    assert diff_medians[0] < diff_medians[1] < diff_medians[2]
    assert diff_medians[2] > 2.5 * max(same_medians)


def test_a_tight_pair_of_voices_and_a_loose_voice_split_in_two():
    """Where the RMS cross distance fails: two different TIGHT voices close together have a smaller RMS cross
    distance than one LOOSE voice split under two ids; the separation orders them the right way round."""
    rng = np.random.default_rng(1)
    c = synthetic.normalize(rng.standard_normal((2, DIM)))
    c[1] = synthetic.normalize(c[0] + 0.4 * synthetic.normalize(rng.standard_normal(DIM)))
    tight, tl = synthetic.clips_around(c, [12, 12], 0.15, rng)  # two voices, |c0 - c1| ~ 0.4
    loose, _ = synthetic.clips_around(c[:1], [24], 0.7, rng)  # one voice, clips ~0.9 apart
    everyone = np.concatenate([tight, loose])
    pooled = Groups.of_labels(everyone, np.r_[tl, np.full(24, 2)]).pooled_spread()  # as dedup pools over all ids

    def rms(x, y):
        return np.sqrt(((x[:, None] - y[None]) ** 2).sum(-1).mean())

    t0, t1, l0, l1 = tight[tl == 0], tight[tl == 1], loose[:12], loose[12:]
    assert rms(t0, t1) < rms(l0, l1)  # the old rule would merge the two tight voices first
    assert separation_of(t0, t1, pooled) > 3 * separation_of(l0, l1, pooled)
