"""The speaker-level statistic: how far apart two groups of clips' mean voices are, in standard errors.

For two groups a and b of unit embeddings (n_a and n_b clips, means m_a and m_b, spreads W_a and W_b: the
mean squared distance of a clip from its own group's mean)::

    separation = |m_a - m_b| / sqrt(W_a / n_a + W_b / n_b)

The denominator is the standard error of the difference of two means. Two groups of ONE voice are about 1
apart whatever their sizes (their means differ only by each mean's noise), while two voices grow apart
like sqrt(n): more clips make a difference between voices plainer, never a sameness. That is what a
client_id merge needs and what the clip threshold applied to centroids, or the RMS distance over all cross
pairs of clips, lacks: both are dominated by each voice's own spread (which varies from voice to voice by
a factor of two), so a tight voice and a loose one look "different" and two loose voices look "same".
Measured on ``make demo``'s embeddings and on held-out FOTAQ characters (``speechid demo --real``), ranking
client_id pairs by separation put the planted aliases first where the RMS distance ranked them 2nd-67th.

Each group's spread is shrunk toward a pooled spread (the mean over the groups being compared, with the
weight of ``PRIOR_DOF`` degrees of freedom), so a one-clip group has a spread and a two-clip group does not
pass for a very tight voice. Merging groups adds their sums, counts and WITHIN-group sums of squares (the
spread of a merged group is that of its parts around their own means), so a wrong merge does not widen the
group and make the next merge easier.

One clip against a voice of m clips (``speechid query --by speaker``) is the same idea with the clip
scattering as that voice's own clips would: |x - m_b| / sqrt(W_b (1 + 1/m)).

Used by ``speechid.model.calibration`` (dev-speaker trials of n clips vs n clips: the speaker-level
operating points) and ``speechid.indexing.dedup`` (client_id merges); ``speechid.operating_points`` reads
and explains the thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRIOR_DOF = 4.0  # weight of the pooled spread in each group's, in degrees of freedom (clips beyond the first)


@dataclass
class Groups:
    """Sufficient statistics of groups of unit vectors: per group, the sum of its vectors, its number of
    clips, the sum of squared distances of its clips from their own id's mean, and that sum's degrees of
    freedom (clips minus ids)."""

    sums: np.ndarray  # [k, D] float64
    counts: np.ndarray  # [k] float64
    ss: np.ndarray  # [k] float64
    dof: np.ndarray  # [k] float64

    @classmethod
    def of_sums(cls, sums: np.ndarray, counts: np.ndarray) -> Groups:
        """Groups of UNIT vectors given only their sums and counts: sum |x - mean|^2 = n - |sum|^2 / n.
        The arrays are copied (``merge`` updates the groups in place)."""
        sums = np.array(sums, np.float64)
        counts = np.array(counts, np.float64)
        sq = np.einsum("ij,ij->i", sums, sums)
        ss = np.maximum(counts - np.divide(sq, counts, out=np.zeros_like(sq), where=counts > 0), 0.0)
        return cls(sums, counts, ss, np.maximum(counts - 1.0, 0.0))

    @classmethod
    def of_labels(cls, vectors: np.ndarray, labels: np.ndarray, k: int | None = None) -> Groups:
        """Groups of unit ``vectors`` by integer ``labels`` (0..k-1)."""
        labels = np.asarray(labels, np.int64)
        k = int(labels.max()) + 1 if k is None else int(k)
        sums = np.zeros((k, vectors.shape[1]), np.float64)
        np.add.at(sums, labels, np.asarray(vectors, np.float64))
        return cls.of_sums(sums, np.bincount(labels, minlength=k).astype(np.float64))

    def pooled_spread(self) -> float:
        """The spread of a typical group: within sums of squares over their degrees of freedom (over every
        group that has one); 1.0 (the spread of random unit vectors, about) when none has."""
        dof = float(self.dof.sum())
        return float(self.ss.sum() / dof) if dof > 0 else 1.0

    def merge(self, a: np.ndarray, b: np.ndarray) -> None:
        """Group a[i] absorbs group b[i] (disjoint pairs)."""
        self.sums[a] += self.sums[b]
        self.counts[a] += self.counts[b]
        self.ss[a] += self.ss[b]
        self.dof[a] += self.dof[b]


def spreads(groups: Groups, pooled: float, prior_dof: float = PRIOR_DOF) -> np.ndarray:
    """Each group's spread, shrunk toward ``pooled`` with ``prior_dof`` degrees of freedom."""
    return (groups.ss + prior_dof * pooled) / (groups.dof + prior_dof)


def separation(groups: Groups, a: np.ndarray, b: np.ndarray, pooled: float, prior_dof: float = PRIOR_DOF,
               chunk: int = 1 << 14) -> np.ndarray:
    """Separation of group a[i] from group b[i] (see the module docstring), per pair."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    w = spreads(groups, pooled, prior_dof)
    out = np.empty(a.size, np.float64)
    for s in range(0, a.size, chunk):
        aa, bb = a[s:s + chunk], b[s:s + chunk]
        na, nb = groups.counts[aa], groups.counts[bb]
        diff = groups.sums[aa] / na[:, None] - groups.sums[bb] / nb[:, None]
        d2 = np.einsum("ij,ij->i", diff, diff)
        out[s:s + chunk] = np.sqrt(d2 / (w[aa] / na + w[bb] / nb))
    return out


def clip_separation(groups: Groups, rows: np.ndarray, x: np.ndarray, pooled: float,
                    prior_dof: float = PRIOR_DOF) -> np.ndarray:
    """Separation of one clip ``x`` from each group in ``rows``: were the clip that group's voice, it would
    scatter around the group's mean as the group's own clips do, |x - m| / sqrt(W (1 + 1/m))."""
    rows = np.asarray(rows, np.int64)
    w = spreads(groups, pooled, prior_dof)[rows]
    m = groups.counts[rows]
    d = np.linalg.norm(groups.sums[rows] / m[:, None] - np.asarray(x, np.float64)[None], axis=1)
    return d / np.sqrt(w * (1.0 + 1.0 / m))


def separation_of(x: np.ndarray, y: np.ndarray, pooled: float, prior_dof: float = PRIOR_DOF) -> float:
    """Separation of two groups given as arrays of unit vectors [n, D] and [m, D]."""
    g = Groups.of_labels(np.concatenate([x, y]), np.r_[np.zeros(len(x), np.int64), np.ones(len(y), np.int64)], 2)
    return float(separation(g, np.array([0]), np.array([1]), pooled, prior_dof)[0])
