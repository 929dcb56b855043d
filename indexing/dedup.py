"""Find voices hiding under several client_ids, and clips whose label looks wrong (``speechid dedup``).

Steps (``dedup`` does the I/O, ``find_duplicates`` the work on arrays):

1. Range search of every indexed vector against the index at Euclidean distance < threshold (the clip
   level's: the model's seed operating point unless given), in blocks (``graph.range_graph``) -> sparse
   graph of "same person" pairs.
2. Clip level: clusters of clips by average linkage on that graph (``graph.average_linkage``: no chaining
   of distinct voices, see its docstring).
3. Speaker level: every pair of client_ids linked by at least one cross pair of clips is scored by the
   distance between their centroids (mean of their clips, re-normalised), the number of cross pairs under
   the clip threshold, their mean distance, and their SEPARATION (``speechid.separation``: the distance
   between the two ids' mean embeddings in standard errors, from each id's own spread; about 1 for one
   voice under two ids, growing with the clips between two voices). Ids merge by the same reciprocal
   rounds as the clip clusters (``graph.separation_linkage``: a merged group compares by its mean and the
   pooled spread of its parts, so A~B~C cannot chain) while the separation is under the SPEAKER-level
   operating point calibrated for groups of that size (``speechid.operating_points``: FAR 0.1% on dev
   speakers' n-clip groups, capped where 99% of one voice's splits pass; a corpus of N ids compares N^2/2
   pairs of them, so a merge needs a much lower FAR than one verification). Proposed pairs: separation
   under that threshold, or merged. Given a ground truth, the merges are redone at a sweep of uniform
   separations: precision/recall against the threshold (``merge_curve``).
4. Suspicious labels: a clip with at least ``min_neighbors`` labelled neighbours of which more than
   ``label_fraction`` belong to other speakers (other merged groups, so aliases already proposed for a merge
   do not flag every clip twice).

Outputs in ``--output`` (written atomically): ``clips.parquet`` (cluster of every clip and its neighbour
counts), ``suspicious.parquet``, ``speaker_pairs.parquet``, ``speaker_groups.parquet`` (every speaker and
its group), ``summary.txt`` (short, for people) and ``summary.json`` (the counts, for the demo). Given a
ground truth (client_id -> true speaker, e.g. synth's aliases.tsv) it reports pairwise precision/recall.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from speechid import outputs
from speechid.embedding_table import short_id
from speechid.errors import ConfigError
from speechid.indexing import graph as g
from speechid.indexing import store
from speechid.indexing.build import add_by_code, speaker_codes
from speechid.indexing.query import SpeakerIndex
from speechid.operating_points import is_same
from speechid.separation import Groups, separation

LEVELS = ("clip", "speaker", "both")
SUMMARY_JSON = "summary.json"
SUMMARY_TXT = "summary.txt"
CLIPS_OUT = "clips.parquet"
SUSPICIOUS_OUT = "suspicious.parquet"
PAIRS_OUT = "speaker_pairs.parquet"
GROUPS_OUT = "speaker_groups.parquet"
DEFAULT_MAX_NEIGHBORS = 1000
HNSW_DEDUP_EF = 256


# -- scoring against a ground truth --------------------------------------------------------------------


@dataclass(frozen=True)
class PairScores:
    """Pairwise precision/recall: a pair of items is "together" in the prediction and/or in the truth."""

    precision: float | None  # None when nothing was put together
    recall: float | None  # None when the truth puts nothing together
    predicted_pairs: int
    true_pairs: int
    correct_pairs: int
    items: int

    def __str__(self) -> str:
        def f(x):
            return "n/a" if x is None else f"{x:.3f}"

        return (f"precision {f(self.precision)} recall {f(self.recall)} "
                f"({self.correct_pairs} of {self.predicted_pairs} predicted pairs, {self.true_pairs} true pairs, "
                f"{self.items} items)")


def _pairs(counts: np.ndarray) -> int:
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def pairwise_scores(predicted: Sequence[Hashable] | np.ndarray, truth: Sequence[Hashable] | np.ndarray) -> PairScores:
    """Pairwise precision/recall of a clustering (``predicted[i]``) against true labels (``truth[i]``),
    counted from the contingency table, so it never lists the pairs."""
    p = np.unique(np.asarray(predicted), return_inverse=True)[1].reshape(-1).astype(np.int64)
    t = np.unique(np.asarray(truth), return_inverse=True)[1].reshape(-1).astype(np.int64)
    if p.size != t.size:
        raise ValueError(f"{p.size} predicted labels for {t.size} true ones")
    if p.size == 0:
        return PairScores(None, None, 0, 0, 0, 0)
    pred_pairs = _pairs(np.bincount(p))
    true_pairs = _pairs(np.bincount(t))
    correct = _pairs(np.unique(p * (t.max() + 1) + t, return_counts=True)[1])
    return PairScores(
        precision=correct / pred_pairs if pred_pairs else None,
        recall=correct / true_pairs if true_pairs else None,
        predicted_pairs=pred_pairs, true_pairs=true_pairs, correct_pairs=correct, items=int(p.size),
    )


def score_groups(groups: Mapping[str, Hashable], truth: Mapping[str, str]) -> PairScores:
    """Client_id merges (client_id -> group) against the truth (client_id -> true speaker), over the ids both
    know: a pair of ids is predicted if they share a group and true if they share a speaker."""
    ids = sorted(set(groups) & set(truth))
    return pairwise_scores([str(groups[i]) for i in ids], [str(truth[i]) for i in ids])


def _score_tables(speaker_groups: pa.Table | None, clips: pa.Table | None,
                  truth: Mapping[str, str]) -> dict[str, PairScores]:
    scores = {}
    if speaker_groups is not None:
        t = speaker_groups.select(["speaker_id", "group"]).to_pydict()
        scores["speakers"] = score_groups(dict(zip(t["speaker_id"], t["group"], strict=True)), truth)
    if clips is not None:
        t = clips.select(["speaker_id", "cluster"]).to_pydict()
        known = [(c, truth[s]) for s, c in zip(t["speaker_id"], t["cluster"], strict=True) if s in truth]
        scores["clips"] = pairwise_scores([k[0] for k in known], [k[1] for k in known])
    return scores


def evaluate_dedup(dedup_dir: str | os.PathLike, truth: Mapping[str, str]) -> dict[str, PairScores]:
    """Pairwise precision/recall of a dedup output against ``truth`` (client_id -> true speaker).

    "speakers": client_ids merged into one group vs same true speaker. "clips": clips in one clip cluster vs
    same true speaker (of their client_id). Each level is scored if its output exists.
    """
    dedup_dir = os.fspath(dedup_dir)
    if not os.path.exists(os.path.join(dedup_dir, SUMMARY_JSON)):
        raise ConfigError(f"{dedup_dir}: not a dedup output (no {SUMMARY_JSON})")

    def read(name, columns):
        path = os.path.join(dedup_dir, name)
        return pq.read_table(path, columns=columns) if os.path.exists(path) else None

    return _score_tables(read(GROUPS_OUT, ["speaker_id", "group"]), read(CLIPS_OUT, ["speaker_id", "cluster"]), truth)


# -- the work, on arrays --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DedupTables:
    clips: pa.Table
    suspicious: pa.Table
    speaker_pairs: pa.Table
    speaker_groups: pa.Table
    stats: dict


def _top_other(src: np.ndarray, dst_code: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per src row (sorted result): the most frequent dst_code and its count."""
    if src.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    key, cnt = np.unique(src * n_codes + dst_code, return_counts=True)
    s, c = key // n_codes, key % n_codes
    order = np.lexsort((c, -cnt, s))
    s, c, cnt = s[order], c[order], cnt[order]
    first = np.r_[True, s[1:] != s[:-1]]
    return s[first], c[first], cnt[first]


def _clip_clusters(vectors: np.ndarray, graph: g.RangeGraph, threshold: float) -> tuple[np.ndarray, dict]:
    n = len(vectors)
    labels = g.average_linkage(vectors, np.ones(n), graph.u, graph.v, float(threshold),
                               sq_distance=np.square(graph.distance, dtype=np.float64))
    sizes = np.bincount(labels)
    single = np.bincount(graph.components())
    stats = {
        "clip_clusters": int((sizes > 1).sum()), "clips_in_clusters": int(sizes[sizes > 1].sum()),
        "single_linkage_clusters": int((single > 1).sum()), "largest_cluster": int(sizes.max()) if n else 0,
        "largest_single_linkage_cluster": int(single.max()) if n else 0,
    }
    return labels, stats


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


def _speaker_merges(vectors: np.ndarray, graph: g.RangeGraph, codes: np.ndarray, speakers: pa.Array,
                    merge_rule: MergeRule) -> tuple[np.ndarray, pa.Table, pa.Table, dict]:
    """(group of every speaker code, speaker_pairs table, speaker_groups table, stats)."""
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
    return groups, pairs, table, stats


def _label_checks(graph: g.RangeGraph, codes: np.ndarray, groups: np.ndarray, n_spk: int, min_neighbors: int,
                  label_fraction: float) -> dict[str, np.ndarray]:
    """Per clip: degree, labelled and other-group neighbour counts, suspicious flag; for the suspicious rows,
    the most frequent other speaker code among their neighbours and its count."""
    n = graph.n
    clip_group = np.full(n, -1, dtype=np.int64)
    clip_group[codes >= 0] = groups[codes[codes >= 0]]
    src, dst = np.concatenate([graph.u, graph.v]), np.concatenate([graph.v, graph.u])  # both directions
    lab = (clip_group[src] >= 0) & (clip_group[dst] >= 0)
    other_edge = lab & (clip_group[src] != clip_group[dst])
    labelled = np.bincount(src[lab], minlength=n)
    other = np.bincount(src[other_edge], minlength=n)
    frac = np.divide(other, labelled, out=np.zeros(n), where=labelled > 0)
    suspicious = (labelled >= min_neighbors) & (frac > label_fraction)
    pick = other_edge & suspicious[src]
    # Every suspicious row has other-group edges, so _top_other returns exactly the suspicious rows, in order.
    _, top_code, top_count = _top_other(src[pick], codes[dst[pick]], max(n_spk, 1))
    return {"degree": np.bincount(src, minlength=n), "labelled": labelled, "other": other, "fraction": frac,
            "suspicious": suspicious, "top_code": top_code, "top_count": top_count}


def find_duplicates(vectors: np.ndarray, graph: g.RangeGraph, clips: pa.Table, threshold: float,
                    merge_rule: MergeRule, min_neighbors: int = 3, label_fraction: float = 0.5) -> DedupTables:
    """Clip clusters (at the clip ``threshold``), speaker merges (``merge_rule``: a speaker-level threshold, or
    a function of two groups' clip counts giving theirs) and suspicious labels from the vectors, their
    graph and their metadata (``clips``: row, clip_id, speaker_id, ... in row order)."""
    n = len(vectors)
    if clips.num_rows != n or graph.n != n:
        raise ValueError(f"{n} vectors, {clips.num_rows} metadata rows, graph over {graph.n}")
    labels, clip_stats = _clip_clusters(vectors, graph, threshold)
    codes, speakers = speaker_codes(clips.column("speaker_id"))
    groups, speaker_pairs, speaker_groups, speaker_stats = _speaker_merges(
        vectors, graph, codes, speakers, merge_rule)
    chk = _label_checks(graph, codes, groups, len(speakers), min_neighbors, label_fraction)

    sizes = np.bincount(labels, minlength=1)
    sus = np.flatnonzero(chk["suspicious"])
    clips_out = pa.table({
        "row": np.arange(n, dtype=np.int64), "clip_id": clips.column("clip_id"),
        "speaker_id": clips.column("speaker_id"), "cluster": labels, "cluster_size": sizes[labels],
        "neighbors": chk["degree"], "other_label_neighbors": chk["other"], "suspicious": chk["suspicious"],
    })
    suspicious_out = pa.table({
        "row": sus, "clip_id": clips.column("clip_id").take(pa.array(sus)),
        "speaker_id": clips.column("speaker_id").take(pa.array(sus)),
        "labelled_neighbors": chk["labelled"][sus], "other_label_neighbors": chk["other"][sus],
        "other_fraction": chk["fraction"][sus].astype(np.float32),
        "top_other_speaker": speakers.take(pa.array(chk["top_code"])), "top_other_count": chk["top_count"],
        "cluster": labels[sus],
    })
    stats = {"clips": n, "pairs_under_threshold": graph.edges, **clip_stats, **speaker_stats,
             "suspicious_clips": int(sus.size)}
    return DedupTables(clips_out, suspicious_out, speaker_pairs, speaker_groups, stats)


# -- the I/O shell --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DedupResult:
    output_dir: str
    summary: dict  # what summary.json holds
    scores: dict[str, PairScores]  # empty without a ground truth
    graph: g.RangeGraph  # the pairs under the threshold that were clustered (benchmarks check their recall)


CURVE_THRESHOLDS = tuple(np.round(np.arange(0.25, 8.001, 0.25), 2))  # separations


def dedup(index: str | os.PathLike | SpeakerIndex, output_dir: str | os.PathLike, *, threshold: float | None = None,
          merge_threshold: float | None = None, level: str = "both", truth: Mapping[str, str] | None = None,
          batch_size: int = 8192,
          max_neighbors: int | None = DEFAULT_MAX_NEIGHBORS, min_neighbors: int = 3, label_fraction: float = 0.5,
          nprobe: int | None = None, ef_search: int | None = None) -> DedupResult:
    """Deduplicate the clips of an index directory (or loaded ``SpeakerIndex``) into ``output_dir``.

    ``threshold``: clip level, Euclidean, default the index's (the model's seed operating point).
    ``merge_threshold``: speaker level, a separation (``speechid.separation``), default the model's
    speaker-level merge point for each pair's group sizes; an index without speaker-level operating points
    merges nothing unless it is given, and says so.
    ``level``: which tables to write (clip, speaker or both; the summary always). ``truth``: client_id ->
    true speaker, to report pairwise precision/recall, and precision/recall against the merge threshold.
    ``nprobe`` / ``ef_search`` override the index's search settings for the range search (IVF default:
    the index's ``dedup_nprobe``, half its query nprobe, since every pair can be found from either end).
    """
    t0 = time.perf_counter()
    if level not in LEVELS:
        raise ConfigError(f"level {level!r}: expected one of {', '.join(LEVELS)}")
    # Read into memory, not mapped: dedup scans every list, and FAISS scans mapped IVF lists
    # (OnDiskInvertedLists) ~1.7x slower.
    read = outputs.snapshot([index.path if isinstance(index, SpeakerIndex) else os.fspath(index)])
    idx = index if isinstance(index, SpeakerIndex) else SpeakerIndex.load(index, mmap=False)
    threshold, meaning = idx.resolve_threshold(threshold)
    store.search_radius(idx.metric, threshold)  # validates the threshold
    ops = idx.operating_points
    if merge_threshold is not None:
        if not (np.isfinite(merge_threshold) and merge_threshold > 0):
            raise ConfigError(f"merge threshold {merge_threshold!r}: expected a positive separation "
                              "(about 1 for one voice under two ids; see `speechid dedup --help`)")
        merge_rule: MergeRule = float(merge_threshold)
        merge_meaning = ("given, not calibrated" if ops is None or not ops.speaker
                         else ops.speaker_level(1).describe(float(merge_threshold)) + " (smallest groups)")
    elif ops is not None and ops.speaker:
        merge_rule = ops.merge_thresholds
        pts = [(lp.n, lp.point(ops.merge)) for lp in ops.speaker]
        merge_meaning = "; ".join(f"{n}+ clips: {p.threshold:.2f} (FAR {100 * p.far:.2g}% / FRR {100 * p.frr:.2g}%)"
                                  for n, p in pts)
        merge_meaning += " (speaker-level merge points on dev speakers: FAR 0.1%, capped at FRR 1%)"
    else:
        merge_rule = 0.0
        merge_meaning = ("nothing merged: " + (ops.no_speaker_level() if ops is not None else
                                              "the index carries no model operating points")
                         + "; or give --merge-threshold (a separation)")
    if idx.kind == "ivf" and nprobe is None:
        nprobe = idx.meta["params"].get("dedup_nprobe")
    if idx.kind == "hnsw" and ef_search is None:
        # HNSW's range search only sees what its beam visits: widen it (a voice with more clips than the
        # beam still loses pairs; build flat or ivf for deduplication, see speechid.indexing.build).
        ef_search = max(int(idx.meta["params"].get("ef_search", 0)), HNSW_DEDUP_EF)
    idx.set_search_params(nprobe=nprobe, ef_search=ef_search)

    vectors = idx.vectors()
    blocks = g.row_blocks(vectors, batch_size, idx.locality_order())
    rg = g.range_graph(idx.index, blocks, idx.metric, threshold, n=idx.count, max_neighbors=max_neighbors)
    t_search = time.perf_counter() - t0
    tables = find_duplicates(vectors, rg, idx.clips, threshold, merge_rule, min_neighbors, label_fraction)
    t_cluster = time.perf_counter() - t0 - t_search

    summary = {
        "index": idx.path, "kind": idx.kind, "model_id": idx.model_id, "threshold": threshold,
        "threshold_meaning": meaning or "given, not calibrated", "merge_threshold": merge_threshold,
        "merge_rule": merge_meaning, "distance": "euclidean", "level": level, "max_neighbors": max_neighbors,
        "nprobe": nprobe,
        **tables.stats,
        "seconds": {"range_search": round(t_search, 3), "clustering": round(t_cluster, 3)},
    }
    scores: dict[str, PairScores] = {}
    if truth is not None:
        scores = _score_tables(tables.speaker_groups if level != "clip" else None,
                               tables.clips if level != "speaker" else None, truth)
        summary["scores"] = {k: asdict(v) for k, v in scores.items()}
        if level != "clip":
            codes, speakers = speaker_codes(idx.clips.column("speaker_id"))
            summary["merge_curve"] = merge_curve(vectors, rg, codes, speakers, truth, CURVE_THRESHOLDS)
    # never replaces what it did not write
    with outputs.staged(os.fspath(output_dir), "dedup", [idx.path], read=read) as tmp:
        if level in ("clip", "both"):
            pq.write_table(tables.clips, os.path.join(tmp, CLIPS_OUT))
            pq.write_table(tables.suspicious, os.path.join(tmp, SUSPICIOUS_OUT))
        if level in ("speaker", "both"):
            pq.write_table(tables.speaker_pairs, os.path.join(tmp, PAIRS_OUT))
            pq.write_table(tables.speaker_groups, os.path.join(tmp, GROUPS_OUT))
        summary["seconds"]["total"] = round(time.perf_counter() - t0, 3)
        with open(os.path.join(tmp, SUMMARY_TXT), "w", encoding="utf-8") as f:
            f.write(summary_text(summary, tables, scores))
        store.write_json(os.path.join(tmp, SUMMARY_JSON), summary)
    return DedupResult(os.path.abspath(os.fspath(output_dir)), summary, scores, rg)


def summary_text(summary: dict, tables: DedupTables, scores: Mapping[str, PairScores], top: int = 5) -> str:
    """The short readable report: counts, biggest clusters, top merge proposals, suspicious clips.

    Speaker ids are shortened to their first characters (``embedding_table.short_id``); summary.json and the
    Parquet tables keep them whole."""
    s = summary
    lines = [
        f"speechid dedup: {s['clips']} clips, {s['speakers']} speaker ids, index {s['kind']} (model {s['model_id']})",
        f"clip threshold: Euclidean distance < {s['threshold']:.3f} ({s['threshold_meaning']}); "
        f"{s['pairs_under_threshold']} clip pairs under it "
        f"(range search {s['seconds']['range_search']:.1f} s, clustering {s['seconds']['clustering']:.1f} s)",
        "",
        f"clip clusters (average linkage): {s['clip_clusters']} with 2+ clips, holding {s['clips_in_clusters']} "
        f"clips; largest {s['largest_cluster']} (single linkage would give {s['single_linkage_clusters']}, "
        f"largest {s['largest_single_linkage_cluster']})",
    ]
    clips = tables.clips
    if clips.num_rows:
        sizes = clips.column("cluster_size").to_numpy()
        cl = clips.column("cluster").to_numpy()
        firsts = np.unique(cl, return_index=True)[1]
        biggest = firsts[np.argsort(-sizes[firsts], kind="stable")][:top]
        for row in biggest:
            if sizes[row] < 2:
                break
            members = clips.filter(pc.equal(clips.column("cluster"), int(cl[row])))
            spk = members.column("speaker_id").value_counts().to_pylist()
            spk.sort(key=lambda d: -d["counts"])
            who = ", ".join(f"{short_id(d['values'])} ({d['counts']})" for d in spk[:3])
            who += " ..." if len(spk) > 3 else ""
            lines.append(f"  cluster {cl[row]}: {sizes[row]} clips; speaker ids {who}")
    merge_t = s.get("merge_threshold")
    lines += ["", f"speaker merges: {s['speaker_pairs_proposed']} proposed pairs; {s['merged_groups']} merged groups "
                  f"covering {s['speakers_in_merged_groups']} speaker ids",
              "  rule: " + ("separation (distance between the ids' mean voices in standard errors; about 1 for one "
                            "voice) < " + (f"{merge_t:.2f} ({s['merge_rule']})" if merge_t is not None
                                           else s["merge_rule"])
                            if not s["merge_rule"].startswith("nothing merged") else s["merge_rule"])]
    pairs = tables.speaker_pairs.slice(0, top).to_pylist()
    for p in pairs:
        lines.append(
            f"  {short_id(p['speaker_a'])} + {short_id(p['speaker_b'])}: "
            f"centroid distance {p['centroid_distance']:.3f}, "
            f"{p['cross_pairs']} cross pairs (mean {p['mean_cross_distance']:.3f}), "
            f"separation {p['separation']:.2f} vs {p['merge_threshold']:.2f}, "
            f"{'merged' if p['merged'] else 'not merged'}"
        )
    lines += ["", f"suspicious labels: {s['suspicious_clips']} clips whose neighbours mostly carry other speaker ids"]
    for p in tables.suspicious.slice(0, top).to_pylist():
        lines.append(f"  {p['clip_id']}: labelled {short_id(p['speaker_id'])}, {p['other_label_neighbors']}/"
                     f"{p['labelled_neighbors']} neighbours carry other ids "
                     f"(mostly {short_id(p['top_other_speaker'])})")
    if scores:
        lines += ["", "against the ground truth (pairwise):"]
        lines += [f"  {k}: {v}" for k, v in scores.items()]
    curve = s.get("merge_curve")
    if curve:
        def pct(x):
            return "  n/a" if x is None else f"{100 * x:5.0f}"

        pick = curve[1::4]
        lines += ["", "client_id merges against the ground truth at one speaker-level threshold for every pair "
                      "(where to set --merge-threshold; summary.json has every 0.25):",
                  "  threshold  " + " ".join(f"{c['threshold']:5.2f}" for c in pick),
                  "  precision% " + " ".join(pct(c["precision"]) for c in pick),
                  "  recall%    " + " ".join(pct(c["recall"]) for c in pick)]
    return "\n".join(lines) + "\n"
