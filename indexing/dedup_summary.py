"""The readable summary of a ``speechid dedup`` run (summary.txt), from its summary.json dict and tables.

Speaker ids are shortened to their first characters (``embedding_table.short_id``); summary.json and the
Parquet tables keep them whole.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from speechid.embedding_table import short_id
from speechid.operating_points import pct

SCORE_NAMES = {"speakers": "client_id merges, pairwise", "clips": "clip clusters, pairwise",
               "clips_linkage": "label-free average linkage of the clips, to compare",
               "mislabels": "the flagged clips against the planted mislabels",
               "mislabels_resembling": "the flagged clips that resemble another id"}


def summary_text(summary: dict, clips: pa.Table, speaker_pairs: pa.Table, flags: pa.Table, scores: Mapping,
                 top: int = 5) -> str:
    """summary.txt: counts, biggest clusters, top merge proposals, mislabelled clips (``flags``, strongest
    evidence first), scores against the ground truth.

    Speaker ids are shortened to their first characters (``embedding_table.short_id``); summary.json and the
    Parquet tables keep them whole."""
    s = summary
    placed = ", ".join(f"{v} by {k}" for k, v in s["clips_placed_by"].items())
    lines = [
        f"speechid dedup: {s['clips']} clips, {s['speakers']} speaker ids, index {s['kind']} (model {s['model_id']})",
        f"clip threshold: Euclidean distance < {s['threshold']:.3f} ({s['threshold_meaning']}); "
        f"{s['pairs_under_threshold']} clip pairs under it "
        f"(range search {s['seconds']['range_search']:.1f} s, clustering {s['seconds']['clustering']:.1f} s)",
        "",
        f"clip clusters: {s['clip_clusters']} with 2+ clips, holding {s['clips_in_clusters']} clips; largest "
        f"{s['largest_cluster']}; clips placed {placed}",
        "  (id: with their client_id's merged group; resembles: with the id they resemble; linkage: average "
        f"linkage among the rest; label-free average linkage of every clip would give {s['linkage_clusters']}, "
        f"largest {s['largest_linkage_cluster']}; single linkage {s['single_linkage_clusters']}, largest "
        f"{s['largest_single_linkage_cluster']})",
    ]
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
    pairs = speaker_pairs.slice(0, top).to_pylist()
    for p in pairs:
        lines.append(
            f"  {short_id(p['speaker_a'])} + {short_id(p['speaker_b'])}: "
            f"centroid distance {p['centroid_distance']:.3f}, "
            f"{p['cross_pairs']} cross pairs (mean {p['mean_cross_distance']:.3f}), "
            f"separation {p['separation']:.2f} vs {p['merge_threshold']:.2f}, "
            f"{'merged' if p['merged'] else 'not merged'}"
        )
    lines += ["", *_flag_lines(s, flags, top)]
    if scores:
        lines += ["", "against the ground truth (" + "; ".join(f"{k}: {SCORE_NAMES[k]}" for k in scores
                                                         if k in SCORE_NAMES) + "):"]
        lines += [f"  {k}: {v}" for k, v in scores.items()]
    curve = s.get("merge_curve")
    if curve:
        def cell(x):
            return f"{pct(x, '.0f', unit=''):>5}"

        pick = curve[1::4]
        lines += ["", "client_id merges against the ground truth at one speaker-level threshold for every pair "
                      "(where to set --merge-threshold; summary.json has every 0.25):",
                  "  threshold  " + " ".join(f"{c['threshold']:5.2f}" for c in pick),
                  "  precision% " + " ".join(cell(c["precision"]) for c in pick),
                  "  recall%    " + " ".join(cell(c["recall"]) for c in pick)]
    return "\n".join(lines) + "\n"


def _flag_lines(s: dict, flags: pa.Table, top: int) -> list[str]:
    """The mislabelled clips' paragraph of summary.txt: the rule, then the strongest flags."""
    lines = [f"mislabelled clips: {s['suspicious_clips']} of {s['clips_tested']} clips tested are far from the rest "
             f"of their client_id's clips ({s['flags_resembling_an_id']} of them resemble another id)",
             "  rule: " + ("separation from the rest of the id (about 1 for its own voice) >= "
                           f"{s['mislabel_threshold']:.2f} ({s['mislabel_rule']})"
                           if s["mislabel_threshold"] is not None else s["mislabel_rule"])]
    if flags.num_rows:
        lines.append("  strongest evidence first (separation from its own id, less from the nearest other id):")
    for p in flags.slice(0, 2 * top).to_pylist():
        near = (f"resembles {short_id(p['resembles'])}" if p["resembles"] is not None
                else f"nearest other id {short_id(p['nearest_other_speaker'])}" if p["nearest_other_speaker"]
                else "no other id")
        at = "" if p["nearest_other_speaker"] is None else f" at {p['nearest_other_separation']:.2f}"
        lines.append(f"  {p['clip_id']}: filed under {short_id(p['speaker_id'])} at {p['separation']:.2f}; "
                     f"{near}{at}; evidence {p['evidence']:+.2f}")
    if flags.num_rows > 2 * top:
        lines.append(f"  ... {flags.num_rows - 2 * top} more in suspicious.parquet")
    if flags.num_rows > s["flags_resembling_an_id"]:
        lines.append("  a flag that resembles no id is unlike every voice here (a noisy recording, or a voice "
                     "under no other id): it ranks last")
    return lines
