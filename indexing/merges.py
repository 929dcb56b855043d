"""Client_id merges (``speechid dedup``'s speaker level): which ids are one voice, by their separation.

Every pair of client_ids linked by at least one cross pair of clips in the range graph is scored by the
distance between their centroids, the number and mean distance of those cross pairs, and their separation
(``speechid.separation``); ids merge by ``graph.separation_linkage`` under a merge rule (one separation, or
a function of two groups' clip counts: the model's speaker-level merge point for that size).
``merge_curve`` redoes the merges at a sweep of uniform thresholds, scored against a ground truth.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from speechid.indexing import graph as g
from speechid.indexing.build import add_by_code
from speechid.indexing.scores import score_groups
from speechid.operating_points import is_same
from speechid.separation import Groups, separation

MergeRule = float | Callable[[np.ndarray, np.ndarray], np.ndarray]


def _pair_thresholds(rule: MergeRule, counts_a: np.ndarray, counts_b: np.ndarray) -> np.ndarray:
    if callable(rule):
        return np.asarray(rule(counts_a, counts_b), np.float64)
    return np.full(np.shape(counts_a), float(rule))


def _speaker_sums(vectors: np.ndarray, codes: np.ndarray, n_spk: int) -> tuple[np.ndarray, np.ndarray]:
    sums = np.zeros((n_spk, vectors.shape[1]), dtype=np.float64)
    counts = np.zeros(n_spk, dtype=np.int64)
    add_by_code(sums, counts, codes, vectors)
    return sums, counts


def _linked_speakers(graph: g.RangeGraph, codes: np.ndarray, m: int):
    """Pairs (a < b) of speaker codes linked by a cross pair of clips in the graph, with counts and keys."""
    cu, cv = codes[graph.u], codes[graph.v]
    cross = (cu >= 0) & (cv >= 0) & (cu != cv)
    lo, hi = np.minimum(cu[cross], cv[cross]), np.maximum(cu[cross], cv[cross])
    key, inv, cross_pairs = np.unique(lo * m + hi, return_inverse=True, return_counts=True)
    return key // m, key % m, key, inv, cross_pairs, cross


def merge_curve(vectors: np.ndarray, graph: g.RangeGraph, codes: np.ndarray, speakers: pa.Array,
                truth: Mapping[str, str], thresholds: Sequence[float]) -> list[dict]:
    """Client_id merges redone at each uniform separation threshold, scored against ``truth``:
    [{threshold, precision, recall, predicted_pairs, correct_pairs, true_pairs}] (where to set it)."""
    n_spk = len(speakers)
    if not n_spk:
        return []
    sums, counts = _speaker_sums(vectors, codes, n_spk)
    pooled = Groups.of_sums(sums, counts).pooled_spread()
    a, b, *_ = _linked_speakers(graph, codes, max(n_spk, 1))
    names = speakers.to_pylist()
    out = []
    for t in thresholds:
        groups = g.separation_linkage(Groups.of_sums(sums, counts), a, b, float(t), pooled)
        sc = score_groups(dict(zip(names, groups.tolist(), strict=True)), truth)
        out.append({"threshold": round(float(t), 4), "precision": sc.precision, "recall": sc.recall,
                    "predicted_pairs": sc.predicted_pairs, "correct_pairs": sc.correct_pairs,
                    "true_pairs": sc.true_pairs})
    return out


def speaker_merges(vectors: np.ndarray, graph: g.RangeGraph, codes: np.ndarray, speakers: pa.Array,
                    merge_rule: MergeRule) -> tuple[np.ndarray, pa.Table, pa.Table, dict, float]:
    """(group of every speaker code, speaker_pairs table, speaker_groups table, stats, pooled spread)."""
    n_spk = len(speakers)
    m = max(n_spk, 1)
    sums, counts = _speaker_sums(vectors, codes, n_spk)
    a, b, key, inv, cross_pairs, cross = _linked_speakers(graph, codes, m)
    mean_cross = np.bincount(inv.reshape(-1), weights=graph.distance[cross], minlength=key.size) / np.maximum(
        cross_pairs, 1)
    unit = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    centroid_d = np.sqrt(np.maximum(2.0 - 2.0 * np.einsum("ij,ij->i", unit[a], unit[b]), 0.0))
    ids = Groups.of_sums(sums, counts)
    pooled = ids.pooled_spread()
    sep = separation(ids, a, b, pooled)
    groups = (g.separation_linkage(Groups.of_sums(sums, counts), a, b, merge_rule, pooled) if n_spk
              else np.zeros(0, np.int64))
    merged = groups[a] == groups[b]
    pair_t = _pair_thresholds(merge_rule, counts[a], counts[b])
    show = is_same(sep, pair_t) | merged
    sel = np.flatnonzero(show)[np.argsort(sep[show], kind="stable")]
    pairs = pa.table({
        "speaker_a": speakers.take(pa.array(a[sel])), "speaker_b": speakers.take(pa.array(b[sel])),
        "clips_a": counts[a[sel]], "clips_b": counts[b[sel]],
        "centroid_distance": centroid_d[sel].astype(np.float32),
        "cross_pairs": cross_pairs[sel].astype(np.int64),
        "mean_cross_distance": mean_cross[sel].astype(np.float32),
        "separation": sep[sel].astype(np.float32),
        "merge_threshold": pair_t[sel].astype(np.float32),
        "merged": merged[sel],
    })
    group_size = np.bincount(groups, minlength=1)[groups]
    order = np.lexsort((groups, -group_size))
    table = pa.table({"speaker_id": speakers.take(pa.array(order)), "n_clips": counts[order],
                      "group": groups[order], "group_speakers": group_size[order]})
    stats = {
        "speakers": int(n_spk), "speaker_pairs_linked": int(key.size), "speaker_pairs_proposed": int(show.sum()),
        "merged_groups": int((np.bincount(groups, minlength=1) > 1).sum()),
        "speakers_in_merged_groups": int((group_size > 1).sum()),
        "pooled_spread": round(float(pooled), 6),
    }
    return groups, pairs, table, stats, pooled
