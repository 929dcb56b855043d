"""Find voices hiding under several client_ids, and clips whose label is wrong (``speechid dedup``).

Steps (``dedup`` does the I/O, ``find_duplicates`` the work on arrays):

1. Range search of every indexed vector against the index at Euclidean distance < threshold (the clip
   level's: the one given, else the index's, ``SpeakerIndex.resolve_threshold``), in blocks
   (``graph.range_graph``) -> sparse graph of "same person" pairs.
2. Speaker level: every pair of client_ids linked by at least one cross pair of clips is scored by the
   distance between their centroids (mean of their clips, re-normalised), the number of cross pairs under
   the clip threshold, their mean distance, and their SEPARATION (``speechid.separation``: the distance
   between the two ids' mean embeddings in standard errors, from each id's own spread; about 1 for one
   voice under two ids, growing with the clips between two voices). Ids merge by reciprocal-best-partner
   rounds (``graph.separation_linkage``: a merged group compares by its mean and the pooled spread of its
   parts, so A~B~C cannot chain) while the separation is under the SPEAKER-level operating point
   calibrated for groups of that size (``speechid.operating_points``: FAR 0.1% on dev speakers' n-clip
   groups, capped where 99% of one voice's splits pass; a corpus of N ids compares N^2/2 pairs of them, so
   a merge needs a much lower FAR than one verification). Proposed pairs: separation under that threshold,
   or merged. Given a ground truth, the merges are redone at a sweep of uniform separations:
   precision/recall against the threshold (``merge_curve``).
3. Mislabelled clips (``speechid.indexing.mislabels``): a clip far from the rest of its own client_id's
   clips at the speaker level (the model's flag point: FRR 0.1% of one clip against a voice), with the id
   it resembles instead; ranked by evidence.
4. Clip clusters (``speechid.indexing.clusters``): each clip with its id's merged group, a flagged or
   unlabelled clip with the id it resembles, the rest by average linkage among themselves.

Outputs in ``--output`` (written atomically): ``clips.parquet`` (the cluster of every clip, why it is there,
its label-free average-linkage cluster to compare, its separation from its own id), ``suspicious.parquet``
(the flagged clips, strongest evidence first), ``speaker_pairs.parquet``, ``speaker_groups.parquet``
(every speaker and its group), ``summary.txt`` (short, for people) and ``summary.json`` (the counts, for the
demo). Given a ground truth (client_id -> true speaker, and clip -> true speaker for clips filed under
another voice's id: ``speechid.truth``) it reports pairwise precision/recall and the flags' precision/recall.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from speechid import outputs
from speechid.errors import ConfigError
from speechid.indexing import graph as g
from speechid.indexing import mislabels as ml
from speechid.indexing import store
from speechid.indexing.build import speaker_codes
from speechid.indexing.clusters import PLACEMENTS, clip_clusters, cluster_stats, linkage_clusters
from speechid.indexing.dedup_summary import summary_text
from speechid.indexing.merges import MergeRule, merge_curve, speaker_merges
from speechid.indexing.query import SpeakerIndex
from speechid.indexing.scores import PairScores, score_clusters, score_groups, true_voices
from speechid.operating_points import pct, point_words

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


def _score_tables(speaker_groups: pa.Table | None, clips: pa.Table | None, truth: Mapping[str, str],
                  clip_truth: Mapping[str, str] | None = None) -> dict[str, PairScores | ml.FlagScores]:
    scores: dict[str, PairScores | ml.FlagScores] = {}
    if speaker_groups is not None:
        t = speaker_groups.select(["speaker_id", "group"]).to_pydict()
        scores["speakers"] = score_groups(dict(zip(t["speaker_id"], t["group"], strict=True)), truth)
    if clips is not None:
        t = clips.select(["clip_id", "speaker_id", "cluster", "linkage", "suspicious", "resembles"]).to_pydict()
        voices = true_voices(t["clip_id"], t["speaker_id"], truth, clip_truth)
        scores["clips"] = score_clusters(t["cluster"], voices)
        scores["clips_linkage"] = score_clusters(t["linkage"], voices)
        if clip_truth is not None:
            flagged = np.array(t["suspicious"], bool)
            resembling = flagged & np.array([r is not None for r in t["resembles"]], bool)
            for key, rows in (("mislabels", flagged), ("mislabels_resembling", resembling)):
                scores[key] = ml.score_flags(t["clip_id"], t["speaker_id"], rows, t["resembles"], clip_truth, truth)
    return scores


def evaluate_dedup(dedup_dir: str | os.PathLike, truth: Mapping[str, str],
                   clip_truth: Mapping[str, str] | None = None) -> dict[str, PairScores | ml.FlagScores]:
    """Precision/recall of a dedup output against ``truth`` (client_id -> true speaker) and ``clip_truth``
    (clip -> true speaker, for clips filed under another voice's id; ``speechid.truth.read_clip_truth``).

    "speakers": client_ids merged into one group vs same true speaker. "clips": clips in one clip cluster vs
    same true voice; "clips_linkage": the same for the label-free average linkage. "mislabels" (with
    ``clip_truth``): the flagged clips vs the planted ones; "mislabels_resembling": the flagged clips that
    resemble another id, the ones with a fix to propose. Each level is scored if its output exists.
    """
    dedup_dir = os.fspath(dedup_dir)
    if not os.path.exists(os.path.join(dedup_dir, SUMMARY_JSON)):
        raise ConfigError(f"{dedup_dir}: not a dedup output (no {SUMMARY_JSON})")

    def read(name):
        path = os.path.join(dedup_dir, name)
        return pq.read_table(path) if os.path.exists(path) else None

    return _score_tables(read(GROUPS_OUT), read(CLIPS_OUT), truth, clip_truth)


# -- the work, on arrays --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DedupTables:
    clips: pa.Table
    suspicious: pa.Table
    speaker_pairs: pa.Table
    speaker_groups: pa.Table
    stats: dict


def find_duplicates(vectors: np.ndarray, graph: g.RangeGraph, clips: pa.Table, threshold: float,
                    merge_rule: MergeRule, flag_threshold: float | None = None,
                    same_threshold: float | None = None) -> DedupTables:
    """Speaker merges (``merge_rule``: a speaker-level threshold, or a function of two groups' clip counts
    giving theirs), mislabelled clips (flagged at ``flag_threshold``, a separation, None: none; the id each
    resembles under ``same_threshold``) and clip clusters (the leftover clips at the clip ``threshold``) from
    the vectors, their graph and their metadata (``clips``: row, clip_id, speaker_id, ... in row order)."""
    n = len(vectors)
    if clips.num_rows != n or graph.n != n:
        raise ValueError(f"{n} vectors, {clips.num_rows} metadata rows, graph over {graph.n}")
    codes, speakers = speaker_codes(clips.column("speaker_id"))
    groups, speaker_pairs, speaker_groups, speaker_stats, pooled = speaker_merges(
        vectors, graph, codes, speakers, merge_rule)
    found = ml.find_mislabels(vectors, codes, len(speakers), pooled, flag_threshold, same_threshold)
    labels, placed = clip_clusters(vectors, graph, threshold, codes, groups, found.flagged, found.resembles)
    linkage = linkage_clusters(vectors, graph, threshold)
    clip_stats = cluster_stats(labels, linkage, graph.components(), placed)

    sizes = np.bincount(labels, minlength=1)
    degree = np.bincount(np.concatenate([graph.u, graph.v]), minlength=n)
    res = found.resembles
    clips_out = pa.table({
        "row": np.arange(n, dtype=np.int64), "clip_id": clips.column("clip_id"),
        "speaker_id": clips.column("speaker_id"), "cluster": labels, "cluster_size": sizes[labels],
        "placed_by": pa.array(np.array(PLACEMENTS)[placed].tolist() if n else [], pa.string()),
        "linkage": linkage, "neighbors": degree,
        "own_separation": found.separation.astype(np.float32), "suspicious": found.flagged,
        "resembles": pa.array([None] * n if not len(speakers) else
                              [s if c >= 0 else None for s, c in
                               zip(speakers.take(pa.array(np.maximum(res, 0))).to_pylist(), res, strict=True)],
                              pa.string()),
    })
    suspicious_out = ml.flags_table(found, clips, speakers, codes, labels)
    stats = {"clips": n, "pairs_under_threshold": graph.edges, **clip_stats, **speaker_stats,
             "suspicious_clips": int(found.flagged.sum()),
             "mislabel_threshold": found.threshold, "resembles_threshold": found.same_threshold,
             "clips_tested": int((~np.isnan(found.separation)).sum()),
             "flags_resembling_an_id": int((found.flagged & (res >= 0)).sum())}
    return DedupTables(clips_out, suspicious_out, speaker_pairs, speaker_groups, stats)


# -- the I/O shell --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DedupResult:
    output_dir: str
    summary: dict  # what summary.json holds
    scores: dict[str, PairScores | ml.FlagScores]  # empty without a ground truth
    graph: g.RangeGraph  # the pairs under the threshold that were clustered (benchmarks check their recall)


CURVE_THRESHOLDS = tuple(np.round(np.arange(0.25, 8.001, 0.25), 2))  # separations


def _positive(value: float, what: str) -> float:
    if not (np.isfinite(value) and value > 0):
        raise ConfigError(f"{what} {value!r}: expected a positive separation (about 1 for one voice; see "
                          "`speechid dedup --help`)")
    return float(value)


def _merge_rule(ops, merge_threshold: float | None) -> tuple[MergeRule, str]:
    """(the merge rule, what it means) from the index's operating points or the threshold given."""
    if merge_threshold is not None:
        t = _positive(merge_threshold, "merge threshold")
        return t, ("given, not calibrated" if ops is None or not ops.speaker
                   else ops.speaker_level(1).describe(t) + " (smallest groups)")
    if ops is not None and ops.speaker:
        pts = [(lp.n, lp.point(ops.merge)) for lp in ops.speaker]
        meaning = "; ".join(f"{n}+ clips: {p.threshold:.2f} (FAR {pct(p.far, '.2g')} / FRR {pct(p.frr, '.2g')})"
                            for n, p in pts)
        meaning += " (speaker-level merge points on dev speakers: FAR 0.1%, capped at FRR 1%)"
        return ops.merge_thresholds, meaning
    return 0.0, ("nothing merged: " + (ops.no_speaker_level() if ops is not None else
                                       "the index carries no model operating points")
                 + "; or give --merge-threshold (a separation)")


def _flag_rule(ops, mislabel_threshold: float | None) -> tuple[float | None, float | None, str]:
    """(flag threshold, "resembles" threshold, what they mean), both separations of one clip from a voice."""
    calibrated = ops is not None and bool(ops.speaker)
    if mislabel_threshold is not None:
        t = _positive(mislabel_threshold, "mislabel threshold")
        if not calibrated:
            return t, t, "given, not calibrated (it also decides which id a flagged clip resembles)"
        same = ops.clip_to_speaker_point()
        return t, same.threshold, (f"given: {ops.speaker_level(1).describe(t)}; resembles an id under "
                                   f"{same.threshold:.2f}")
    if calibrated:
        flag, same = ops.flag_point(), ops.clip_to_speaker_point()
        return flag.threshold, same.threshold, (
            f"{flag.meaning()}, one clip against a speaker; resembles an id under {same.threshold:.2f}, the "
            f"{point_words(same.name)} that query --by speaker decides by")
    return None, None, ("nothing flagged: " + (ops.no_speaker_level() if ops is not None else
                                               "the index carries no model operating points")
                        + "; or give --mislabel-threshold (a separation)")


def dedup(index: str | os.PathLike | SpeakerIndex, output_dir: str | os.PathLike, *, threshold: float | None = None,
          merge_threshold: float | None = None, mislabel_threshold: float | None = None, level: str = "both",
          truth: Mapping[str, str] | None = None, clip_truth: Mapping[str, str] | None = None,
          batch_size: int = 8192, max_neighbors: int | None = DEFAULT_MAX_NEIGHBORS,
          nprobe: int | None = None, ef_search: int | None = None) -> DedupResult:
    """Deduplicate the clips of an index directory (or loaded ``SpeakerIndex``) into ``output_dir``.

    ``threshold``: clip level, Euclidean, default the index's (the model's seed operating point).
    ``merge_threshold``: speaker level, a separation (``speechid.separation``), default the model's
    speaker-level merge point for each pair's group sizes; an index without speaker-level operating points
    merges nothing unless it is given, and says so. ``mislabel_threshold``: the separation of a clip from the
    rest of its id at which it is flagged (``speechid.indexing.mislabels``), default the model's flag point;
    likewise nothing is flagged without either.
    ``level``: which tables to write (clip, speaker or both; the summary always). ``truth``: client_id ->
    true speaker, to report pairwise precision/recall, and precision/recall against the merge threshold;
    ``clip_truth``: clip -> true speaker of the clips filed under another voice's id, to score the flags.
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
    store.check_threshold(threshold)  # before the search settings and the vectors
    merge_rule, merge_meaning = _merge_rule(idx.operating_points, merge_threshold)
    flag_t, same_t, flag_meaning = _flag_rule(idx.operating_points, mislabel_threshold)
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
    tables = find_duplicates(vectors, rg, idx.clips, threshold, merge_rule, flag_t, same_t)
    t_cluster = time.perf_counter() - t0 - t_search

    summary = {
        "index": idx.path, "kind": idx.kind, "model_id": idx.model_id, "threshold": threshold,
        "threshold_meaning": meaning or "given, not calibrated", "merge_threshold": merge_threshold,
        "merge_rule": merge_meaning, "mislabel_rule": flag_meaning, "distance": "euclidean", "level": level,
        "max_neighbors": max_neighbors, "nprobe": nprobe,
        **tables.stats,
        "seconds": {"range_search": round(t_search, 3), "clustering": round(t_cluster, 3)},
    }
    scores: dict[str, PairScores | ml.FlagScores] = {}
    if truth is not None:
        scores = _score_tables(tables.speaker_groups if level != "clip" else None,
                               tables.clips if level != "speaker" else None, truth, clip_truth)
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
            f.write(summary_text(summary, tables.clips, tables.speaker_pairs, tables.suspicious, scores))
        outputs.write_json(os.path.join(tmp, SUMMARY_JSON), summary)
    return DedupResult(os.path.abspath(os.fspath(output_dir)), summary, scores, rg)
