"""From vectors to voices: blocked range search -> sparse "same person" graph -> clusters.

``iter_range_search`` / ``range_search`` run FAISS range searches block by block and return FAISS shapes
(``lims, D, I``, as ``faiss.contrib.exhaustive_search``), so memory is bounded by the block, not by N.
``range_graph`` turns them into an undirected graph of the pairs closer than the threshold (Euclidean).

Clustering rule: average linkage, restricted to the graph. Plain connected components of the threshold
graph are single linkage: A~B and B~C put A and C together even when A and C are far apart, and on a
corpus a chain of such links can swallow many voices. ``average_linkage`` merges two groups only if the
mean squared distance over ALL pairs across them (not only the linked ones) stays under threshold^2,
i.e. their average cosine similarity stays above the threshold's cosine. Why this rule:

* it is the natural group version of the pairwise rule ("same person" if closer than the threshold),
  and a group that fails it is one where a typical cross pair would be judged "different";
* on unit vectors it is exact and cheap: mean |a - b|^2 over X x Y = 2 - 2 <sum X, sum Y> / (|X| |Y|),
  so the cost of a merge test is one dot product of cluster sums, however big the clusters;
* unlike a distance-to-centroid check it cannot be fooled by a chain whose ends are both near the middle.

Merges happen in rounds: every group picks its best partner (lowest mean cross distance, among groups it
shares an edge with) and reciprocal pairs merge. This is the reciprocal-nearest-neighbour scheme (as in
"reciprocal agglomerative clustering"), which gives exactly the closest-pair-first result for average
linkage over all pairs, because an average-linkage merge never brings a group closer to a third one; on
the graph, where only linked groups are compared, it is a close approximation. Every round is a handful
of NumPy passes over the edges, so a million clips take seconds, not a Python loop per merge.

Known limit: a group that is mostly one voice can absorb a few clips of a near neighbour voice (they are a
minority of its cross pairs). ``speechid dedup`` therefore places clips by the speaker-level decisions
(``speechid.indexing.clusters``) and uses this linkage only for clips no client_id accounts for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from speechid import config, separation
from speechid.indexing import store


def _hnsw_query_cap(index) -> int | None:
    """Queries per HNSW range_search call that FAISS 1.15 survives.

    IndexHNSW::range_search walks the queries in chunks of InterruptCallback::get_period_hint(max_level * d *
    efSearch) = 1e8 / that, and allocating the result once per chunk aborts the process ("labels == nullptr
    && distances == nullptr" failed) when there is more than one. Half a chunk per call stays clear of it.
    """
    hnsw = getattr(index, "hnsw", None)
    if hnsw is None:
        return None
    flops = max(1, hnsw.max_level) * index.d * max(1, hnsw.efSearch)
    return max(1, 10**8 // (flops + 1) // 2)


def _range_search_one(index, xq: np.ndarray, radius: float, cap: int | None):
    if cap is None or len(xq) <= cap:
        return index.range_search(xq, radius)
    parts = [index.range_search(xq[s:s + cap], radius) for s in range(0, len(xq), cap)]
    lims = [np.zeros(1, np.uint64)]
    for p in parts:
        lims.append(p[0][1:] + lims[-1][-1])
    return np.concatenate(lims), np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def iter_range_search(index, blocks: Iterable[np.ndarray], radius: float
                      ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """FAISS range search of each query block: yields ``(lims, D, I)`` per block (D in the index's metric)."""
    cap = _hnsw_query_cap(index)
    for xq in blocks:
        lims, d, i = _range_search_one(index, np.ascontiguousarray(xq, dtype=np.float32), float(radius), cap)
        yield lims.astype(np.int64), d, i  # FAISS gives uint64 offsets; int64 mixes safely with row ids


def range_search(index, blocks: Iterable[np.ndarray], radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All blocks' results in one ``(lims, D, I)``, queries numbered in block order."""
    lims_all, d_all, i_all, offset = [np.zeros(1, np.int64)], [], [], 0
    for lims, d, i in iter_range_search(index, blocks, radius):
        lims_all.append(lims[1:] + offset)
        offset += int(lims[-1])
        d_all.append(d)
        i_all.append(i)
    if not d_all:
        return lims_all[0], np.zeros(0, np.float32), np.zeros(0, np.int64)
    return np.concatenate(lims_all), np.concatenate(d_all), np.concatenate(i_all)


@dataclass(frozen=True)
class RangeGraph:
    """Undirected pairs (u < v) of rows closer than ``threshold``; ``distance`` is Euclidean."""

    n: int
    u: np.ndarray
    v: np.ndarray
    distance: np.ndarray
    threshold: float

    @property
    def edges(self) -> int:
        return int(self.u.size)

    def keys(self) -> np.ndarray:
        """Sorted int64 pair keys u * n + v (for membership tests with np.searchsorted / np.isin)."""
        return self.u.astype(np.int64) * self.n + self.v

    def to_sparse(self) -> sparse.csr_matrix:
        """Symmetric adjacency (scipy.sparse) with 1 on each edge (distances may be exactly 0)."""
        ones = np.ones(2 * self.edges, dtype=np.int8)
        rows = np.concatenate([self.u, self.v])
        cols = np.concatenate([self.v, self.u])
        return sparse.csr_matrix((ones, (rows, cols)), shape=(self.n, self.n))

    def components(self) -> np.ndarray:
        """Connected-component label of every row: what single linkage would cluster."""
        return single_linkage(self.n, self.u, self.v)

    def neighbours(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Both directions: (src, dst, distance), sorted by src."""
        src = np.concatenate([self.u, self.v])
        dst = np.concatenate([self.v, self.u])
        dist = np.concatenate([self.distance, self.distance])
        order = np.argsort(src, kind="stable")
        return src[order], dst[order], dist[order]


def _nearest_per_query(q: np.ndarray, score: np.ndarray, keep_max: bool, cap: int) -> np.ndarray:
    """Mask keeping each query's ``cap`` best results (``q`` is grouped by query, as FAISS returns it)."""
    order = np.lexsort((-score if keep_max else score, q))
    qs = q[order]
    starts = np.flatnonzero(np.r_[True, qs[1:] != qs[:-1]])
    rank = np.arange(qs.size) - np.repeat(starts, np.diff(np.r_[starts, qs.size]))
    mask = np.zeros(q.size, dtype=bool)
    mask[order[rank < cap]] = True
    return mask


def row_blocks(vectors: np.ndarray, batch_size: int = 8192, order: np.ndarray | None = None
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(row ids, their vectors) in blocks, in row order or in ``order``: the queries of ``range_graph``."""
    order = np.arange(len(vectors), dtype=np.int64) if order is None else np.asarray(order, np.int64)
    for s in range(0, len(order), batch_size):
        rows = order[s:s + batch_size]
        yield rows, vectors[rows]


def range_graph(index, blocks: Iterable[tuple[np.ndarray, np.ndarray]], metric: str,
                threshold: float, n: int | None = None,
                max_neighbors: int | None = None) -> RangeGraph:
    """Range search each block of (row ids, vectors) against ``index``; keep pairs under ``threshold``.

    The queries are the indexed vectors themselves, so self-matches are dropped and a pair found from either
    end counts once. ``max_neighbors`` keeps only each row's nearest that many (bounds memory when one voice
    has thousands of clips; the clustering only needs the links, not all of them).
    """
    radius = store.search_radius(metric, threshold)
    keep_max = metric == "ip"
    n = int(index.ntotal if n is None else n)
    keys, dists = [], []
    cap = _hnsw_query_cap(index)
    for rows, xq in blocks:
        lims, d, i = _range_search_one(index, np.ascontiguousarray(xq, dtype=np.float32), radius, cap)
        lims = lims.astype(np.int64)
        q = np.repeat(np.asarray(rows, np.int64), np.diff(lims))
        keep = (i != q) & (i >= 0)
        q, i, d = q[keep], i[keep], d[keep]
        if max_neighbors is not None and q.size and np.diff(lims).max() > max_neighbors:
            keep = _nearest_per_query(q, d, keep_max, int(max_neighbors))
            q, i, d = q[keep], i[keep], d[keep]
        lo, hi = np.minimum(q, i), np.maximum(q, i)
        keys.append(lo * n + hi)
        dists.append(store.to_euclidean(metric, d))
    key = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    dist = np.concatenate(dists) if dists else np.zeros(0, np.float32)
    key, first = np.unique(key, return_index=True)
    return RangeGraph(n=n, u=key // n, v=key % n, distance=dist[first], threshold=float(threshold))


# -- average linkage -----------------------------------------------------------------------------------


def _unique_pairs(a: np.ndarray, b: np.ndarray, m: int, values: np.ndarray | None = None):
    """Canonical (lo < hi) unique pairs without self-loops; with ``values``, also the first value of each."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keep = lo != hi
    key, first = np.unique(lo[keep].astype(np.int64) * m + hi[keep], return_index=True)
    if values is None:
        return key // m, key % m
    return key // m, key % m, values[keep][first]


def mean_sq_cross(sums: np.ndarray, counts: np.ndarray, a: np.ndarray, b: np.ndarray,
                  chunk: int = 1 << 14) -> np.ndarray:
    """Mean squared Euclidean distance over all pairs across groups a and b of unit vectors, per pair (a, b).

    |x - y|^2 = 2 - 2 <x, y> for unit vectors, so the mean over X x Y is 2 - 2 <sum X, sum Y> / (|X| |Y|).
    """
    out = np.empty(a.size, dtype=np.float64)
    for s in range(0, a.size, chunk):
        aa, bb = a[s:s + chunk], b[s:s + chunk]
        dot = np.einsum("ij,ij->i", sums[aa], sums[bb], dtype=np.float64)
        out[s:s + chunk] = 2.0 - 2.0 * dot / (counts[aa] * counts[bb])
    return out


def _best_partner(a: np.ndarray, b: np.ndarray, score: np.ndarray, m: int) -> np.ndarray:
    """For each group, the adjacent group with the lowest score (ties: the lowest id); -1 if none."""
    src = np.concatenate([a, b])
    dst = np.concatenate([b, a])
    sc = np.concatenate([score, score])
    best_score = np.full(m, np.inf)
    np.minimum.at(best_score, src, sc)  # unbuffered scatter-min: one pass, no sort
    tie = sc == best_score[src]
    best = np.full(m, m, dtype=np.int64)
    np.minimum.at(best, src[tie], dst[tie])
    best[best == m] = -1
    return best


def _reciprocal_merges(m: int, a: np.ndarray, b: np.ndarray, score: np.ndarray,
                       limit: Callable[[np.ndarray, np.ndarray], np.ndarray | float],
                       merge: Callable[[np.ndarray, np.ndarray], None],
                       rescore: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """The merge rounds both linkages share: among edges (a, b) whose ``score`` is under ``limit(a, b)``,
    every group picks its best partner and reciprocal pairs merge (``merge(ma, mb)``: group ma absorbs mb);
    edges touching a merged group are relabelled and ``rescore``d, until no edge is under its limit.
    Returns the group label (0..k-1, in order of first row) of each of the ``m`` nodes."""
    node = np.arange(m, dtype=np.int64)
    while a.size:
        cand = score < limit(a, b)
        if not cand.any():
            break
        ca, cb = a[cand], b[cand]
        best = _best_partner(ca, cb, score[cand], m)
        mutual = (best[ca] == cb) & (best[cb] == ca)
        ma, mb = ca[mutual], cb[mutual]  # disjoint pairs: each group has one best partner
        merge(ma, mb)
        rep = np.arange(m, dtype=np.int64)
        rep[mb] = ma
        node = rep[node]
        # Only edges that touch a merged group change; the rest keep their ids and scores. A relabelled
        # edge always has a merged end, so it cannot duplicate an untouched one.
        dirty = np.zeros(m, dtype=bool)
        dirty[ma] = True
        dirty[mb] = True
        touched = dirty[a] | dirty[b]
        ta, tb = _unique_pairs(rep[a[touched]], rep[b[touched]], m)
        keep = ~touched
        a = np.concatenate([a[keep], ta])
        b = np.concatenate([b[keep], tb])
        score = np.concatenate([score[keep], rescore(ta, tb)])
    return np.unique(node, return_inverse=True)[1].astype(np.int64)


def average_linkage(sums: np.ndarray, counts: np.ndarray, u: np.ndarray, v: np.ndarray,
                    threshold: float | Callable[[np.ndarray, np.ndarray], np.ndarray],
                    sq_distance: np.ndarray | None = None, copy: bool = True) -> np.ndarray:
    """Cluster label (0..k-1, in order of first row) of each node, merging along edges (u, v) by average linkage.

    ``sums[i]`` is the sum of node i's unit vectors and ``counts[i]`` their number (a clip: its vector and
    1; a speaker: the sum of its clips and their count). Two groups merge only while the mean squared
    Euclidean distance over all their cross pairs is below threshold^2 (see the module docstring).
    ``threshold``: one Euclidean distance, or a function of the two groups' counts (arrays) giving each
    pair's threshold (speaker merges: the operating point calibrated for groups of that size).
    ``sq_distance``: the edges' starting scores when already known (clips: squared distance), to skip
    computing them. ``copy=False`` lets the function accumulate into ``sums`` (saves a copy of a big matrix).
    """
    if callable(threshold):
        def pair_t2(a, b):
            return np.square(np.asarray(threshold(cnt[a], cnt[b]), np.float64))
    else:
        t2 = config.l2_to_squared(threshold)

        def pair_t2(a, b):
            return t2
    m = len(sums)
    s = np.array(sums, dtype=np.float32, copy=copy)
    cnt = np.asarray(counts, dtype=np.float64).copy()
    if np.any(cnt <= 0):
        raise ValueError("every node needs a positive count")
    u, v = np.asarray(u, np.int64), np.asarray(v, np.int64)
    if sq_distance is None:
        a, b = _unique_pairs(u, v, max(m, 1))
        score = mean_sq_cross(s, cnt, a, b)
    else:
        a, b, score = _unique_pairs(u, v, max(m, 1), np.asarray(sq_distance, np.float64))

    def merge(ma, mb):
        s[ma] += s[mb]
        cnt[ma] += cnt[mb]

    return _reciprocal_merges(m, a, b, score, pair_t2, merge, lambda ta, tb: mean_sq_cross(s, cnt, ta, tb))


def separation_linkage(groups: separation.Groups, u: np.ndarray, v: np.ndarray,
                       threshold: float | Callable[[np.ndarray, np.ndarray], np.ndarray], pooled: float
                       ) -> np.ndarray:
    """Group label (0..k-1, in order of first row) of each node of ``groups`` (speakers: sums, counts and
    within sums of squares of their clips), merging along edges (u, v) while the two groups' separation
    (``speechid.separation``, spreads shrunk toward ``pooled``) is below the threshold: one number, or a
    function of the two groups' clip counts giving each pair's (the operating point calibrated for groups
    of that size). Same reciprocal-best-partner rounds as ``average_linkage``; ``groups`` is updated in place
    (merged groups hold the sums of their parts). A merged group compares by its mean and the pooled spread
    of its parts, so no chain A~B~C forms unless C is close to A and B together. With one threshold this
    equals merging the closest pair first (tested); with thresholds that grow with the clip counts, a merge
    can make a pair eligible, and the rounds may then differ from closest-pair-first in a rare case."""
    if callable(threshold):
        def pair_t(a, b):
            return np.asarray(threshold(groups.counts[a], groups.counts[b]), np.float64)
    else:
        def pair_t(a, b):
            return float(threshold)
    m = len(groups.counts)
    if np.any(groups.counts <= 0):
        raise ValueError("every node needs a positive count")
    a, b = _unique_pairs(np.asarray(u, np.int64), np.asarray(v, np.int64), max(m, 1))
    return _reciprocal_merges(m, a, b, separation.separation(groups, a, b, pooled), pair_t, groups.merge,
                              lambda ta, tb: separation.separation(groups, ta, tb, pooled))


def single_linkage(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Connected components of the edges (the chaining baseline the tests compare against)."""
    g = sparse.csr_matrix((np.ones(len(u), np.int8), (u, v)), shape=(n, n))
    return csgraph.connected_components(g, directed=False)[1].astype(np.int64)
