"""The report's dedup part (``speechid.app.report``): the answer's card on client_id merges (precision and
recall against the planted aliases, with 95% intervals and advice), and the section with the merge curve,
both dedup runs' scores and the closest merge proposals."""

from __future__ import annotations

import html
from collections.abc import Mapping

from speechid.app.htmlpage import Raw, figures, pct, png, pyplot, short_id, table
from speechid.config import THRESHOLD
from speechid.operating_points import OperatingPoints, point_words

TARGET = 0.9  # the precision/recall the advice aims for


def dedup_card(summary: dict, seed_summary: dict | None, ops: OperatingPoints | None, real: dict | None = None,
               by_voices: dict[str, dict[str, int]] | None = None) -> str:
    """The answer's card on client_id merges: precision and recall against the planted aliases (green only
    when the 95% interval's low end clears ``TARGET``), the merge rule, and what to do about it."""
    score = summary.get("scores", {}).get("speakers")
    seed_score = (seed_summary or {}).get("scores", {}).get("speakers")
    p, r = (score or {}).get("precision"), (score or {}).get("recall")
    # Green only when the interval's low end clears the target: 8 of 8 pairs is not 100% measured.
    p_ci = wilson(score["correct_pairs"], score["predicted_pairs"]) if score else None
    r_ci = wilson(score["correct_pairs"], score["true_pairs"]) if score else None
    ok = p_ci is not None and r_ci is not None and p_ci[0] >= TARGET and r_ci[0] >= TARGET
    css = "ok" if ok else "warn" if (p or 0) >= 0.5 and (r or 0) >= 0.5 else "bad"
    seed_text = (f" With {THRESHOLD:g} as the clip threshold: precision {pct(seed_score.get('precision'))}, recall "
                 f"{pct(seed_score.get('recall'))}." if seed_score else "")
    points = merge_points(ops)
    rule = (", ".join(f"{t:.2f} for {n}+ clips" for n, t in points)
            if points else html.escape(str(summary.get("merge_rule", ""))))
    dev_speakers = ops.measured_on.get("speakers") if ops else None
    advice = "".join(f"<li>{tip}</li>" for tip in dedup_advice(score, summary.get("merge_curve", []),
                                                                dev_speakers=dev_speakers))
    return (
        f'<div class="card {css}"><h3>Dedup: one voice under several client_ids</h3>'
        f'<div class="big">precision {pct(p)} &middot; recall {pct(r)}</div>'
        f"<p>of client_id merges against the planted aliases: {_pair_counts(score, real, by_voices)}. Two ids "
        f"merge when their separation "
        f"(the distance between their mean voices in standard errors of that difference, from each id's own "
        f"spread: about 1 for one voice under two ids, growing with the clips between two voices) is under the "
        f"speaker-level {html.escape(point_words(ops.merge) if ops else 'merge point')} for their clip counts "
        f"({rule}).{seed_text}</p>{_sample_size_note(score, p_ci, r_ci)}<ul>{advice}</ul></div>"
    )


def _sample_size_note(score: dict | None, p_ci, r_ci) -> str:
    """On fewer than 30 pairs: how few, and the 95% intervals of precision and recall."""
    if not score or min(score["true_pairs"], score["predicted_pairs"] or 1) >= 30:
        return ""

    def interval(ci):
        return f"{pct(ci[0], 0)}&ndash;{pct(ci[1], 0)}" if ci else "n/a"

    return (f"<p><b>Measured on {score['true_pairs']} planted pair{'s' * (score['true_pairs'] != 1)} and "
            f"{score['predicted_pairs']} proposed</b>: 95% intervals, precision {interval(p_ci)}, recall "
            f"{interval(r_ci)}. Few pairs measure little; a release of thousands of client_ids needs its own "
            "check (plant aliases with <code>speechid corpus --aliases</code>).</p>")


def _pair_counts(score: dict | None, real: dict | None, by_voices: dict[str, dict[str, int]] | None) -> str:
    counts = (f"{score['correct_pairs']} of {score['predicted_pairs']} proposed client_id pairs are true aliases; "
              f"{score['true_pairs']} true pairs planted" if score else "no ground truth")
    if real and score:
        counts += (f" (among {real.get('aliases', '?')} held-out FOTAQ characters, <b>real voices</b>; the index "
                   "also holds the held-out synthetic voices, which carry no alias, so a merge joining one to "
                   "anything else counts against precision)")
    if by_voices:
        counts += ". Merged pairs by the voices they join: " + "; ".join(
            f"{kind}: {v['pairs']} ({v['true']} true)" for kind, v in by_voices.items())
    return counts


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson 95% interval of a proportion ``successes`` / ``n`` (None when n is 0)."""
    if not n:
        return None
    phat = successes / n
    centre = phat + z * z / (2 * n)
    margin = z * ((phat * (1 - phat) + z * z / (4 * n)) / n) ** 0.5
    return max(0.0, (centre - margin) / (1 + z * z / n)), min(1.0, (centre + margin) / (1 + z * z / n))


def merge_points(ops: OperatingPoints | None) -> list[tuple[int, float]]:
    """(group size n, the speaker-level threshold dedup merges n-clip groups under by default)."""
    return [] if ops is None else [(lp.n, lp.point(ops.merge).threshold) for lp in ops.speaker]


def best_on_curve(curve: list[dict], target: float = TARGET) -> dict | None:
    """The curve point with the highest recall whose precision is at least ``target`` (None if none is)."""
    ok = [c for c in curve if c["precision"] is not None and c["precision"] >= target and c["recall"] is not None]
    return max(ok, key=lambda c: (c["recall"], c["precision"]), default=None)


def dedup_advice(score: Mapping | None, curve: list[dict], target: float = TARGET,
                 dev_speakers: int | None = None) -> list[str]:
    """What to do about the merges' precision/recall at the default, as HTML list items.

    ``dev_speakers``: how many speakers the operating points were measured on (named when the advice
    is to re-measure them)."""
    if not score or score.get("precision") is None and score.get("recall") is None:
        return ["No merge was proposed and the truth has no aliases: nothing to score."]
    p, r = score.get("precision"), score.get("recall")
    good_p, good_r = p is not None and p >= target, r is not None and r >= target
    if good_p and good_r:
        few = min(score.get("true_pairs") or 0, score.get("predicted_pairs") or 0)
        if 0 < few < 30:
            return [f"Precision and recall are both at least {pct(target, 0)} on these few pairs: the default "
                    "is not shown wrong here, and not yet shown right either. Plant more aliases (or label a "
                    "sample of your own merges) before relying on it."]
        return [f"Precision and recall are both at least {pct(target, 0)}: keep the default."]
    tips = []
    if not good_p:
        tips.append("Precision is low: merges join different people. Lower the merge threshold "
                    "(<code>speechid dedup --merge-threshold T</code>) or review the proposals below by hand.")
    if not good_r:
        tips.append("Recall is low: aliases go unfound. A higher merge threshold finds more of them at some "
                    "cost in precision.")
    best = best_on_curve(curve, target)
    caveat = ("It is read off this corpus's planted aliases; on your own data, choose it from a labelled "
              "sample.")
    if best is not None and best["recall"] >= target:
        tips.append(f"Set <code>--merge-threshold {best['threshold']:.2f}</code>: precision {pct(best['precision'])}, "
                    f"recall {pct(best['recall'])} on this corpus. {caveat}")
        return tips
    if best is not None:
        tips.append(f"No single merge threshold gives both here: the highest recall at precision &ge; "
                    f"{pct(target, 0)} is {pct(best['recall'])}, at <code>--merge-threshold "
                    f"{best['threshold']:.2f}</code>. {caveat}")
    else:
        tips.append(f"No single merge threshold reaches precision {pct(target, 0)} here.")
    measured = f" (these were measured on {dev_speakers} dev speakers)" if dev_speakers else ""
    tips.append("The model does not separate these voices well enough for corpus-scale merging: train longer or "
                "on more speakers (<code>speechid train --epochs</code>), and re-measure the operating points on "
                f"more labelled speakers of your own domain (<code>speechid calibrate</code>){measured}.")
    return tips


def merged_pairs_by_voices(groups: Mapping[str, int], truth: Mapping[str, str],
                           voices: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """Client_id pairs merged into one group, by the voices they join ("real + synthetic", ...):
    {kind: {"pairs": n, "true": n}}. Ids without a ``voices`` entry are left out."""
    members: dict[int, list[str]] = {}
    for cid, g in groups.items():
        if cid in voices:
            members.setdefault(g, []).append(cid)
    out: dict[str, dict[str, int]] = {}
    for ids in members.values():
        ids.sort()
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                kind = " + ".join(sorted((voices[a], voices[b])))
                got = out.setdefault(kind, {"pairs": 0, "true": 0})
                got["pairs"] += 1
                got["true"] += int(a in truth and b in truth and truth[a] == truth[b])
    return dict(sorted(out.items()))


def merge_curve_png(curve: list[dict], marks: list[tuple[float, str, str]]) -> bytes:
    """Client_id merge precision/recall against one uniform merge threshold, with ``marks``
    ((threshold, label, colour)) drawn as vertical lines."""
    plt = pyplot()
    t = [c["threshold"] for c in curve]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for key, colour in (("precision", "tab:green"), ("recall", "tab:purple")):
        ys = [float("nan") if c[key] is None else 100 * c[key] for c in curve]
        ax.plot(t, ys, "-", color=colour, label=key)
    for x, label, colour in marks:
        ax.axvline(x, color=colour, linestyle="--", linewidth=1, label=label)
    ax.axhline(100 * TARGET, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("merge threshold (separation: the distance between two ids'\nmean voices, in standard errors)")
    ax.set_ylabel("%")
    ax.set_ylim(-3, 103)
    ax.set_title("Dedup: client_id merges vs planted aliases")
    ax.legend(fontsize=9, loc="center right")
    ax.grid(True, alpha=0.3)
    return png(fig)


def dedup_section(summary: dict, seed_summary: dict | None, ops: OperatingPoints | None, pairs: list[dict],
                  truth: Mapping[str, str], voices: Mapping[str, str] | None = None) -> str:
    """HTML: the merge curve beside the scores of both dedup runs and the facts of the one at the model's
    operating points, then the closest merge proposals (``pairs``) with whether each is truly one voice."""
    out, side = [], []  # side: beside the curve
    curve = summary.get("merge_curve") or []
    if curve:
        shades = ("#ff7f0e", "#8c564b", "#1f77b4", "#000000")  # distinct, one per group size
        marks = [(threshold, f"default for {n}+ clips", shades[min(i, len(shades) - 1)])
                 for i, (n, threshold) in enumerate(merge_points(ops)[-len(shades):])]
        side.append(figures([(merge_curve_png(curve, marks),
                             "Precision/recall of client_id merges when one threshold decides every pair "
                             "(dotted: the 90% line). The default uses the speaker-level point for each "
                             "pair's group size instead.")]))
    rows = []
    for name, run in (("model's default", summary), (f"clip threshold {THRESHOLD:g}", seed_summary)):
        if not run:
            continue
        scores = run.get("scores", {})
        for level, what in (("speakers", "client_id merges"), ("clips", "clip clusters")):
            v = scores.get(level)
            if v:
                rows.append((name, what, pct(v["precision"]), pct(v["recall"]),
                             f"{v['correct_pairs']:,} / {v['predicted_pairs']:,} / {v['true_pairs']:,}"))
    facts = []
    if rows:
        facts.append(table(rows, ("thresholds", "decision", "precision", "recall", "pairs: correct / proposed / true")))
    facts.append(_facts(summary))
    side.append('<div style="flex:1 1 min(420px,100%);min-width:0">' + "\n".join(facts) + "</div>")
    out.append('<div class="figs">' + "\n".join(side) + "</div>")
    if pairs:
        out.append("<h3>Merge proposals (closest first)</h3>")
        out.append(_proposals(pairs, truth, voices))
    return "\n".join(out)


def _proposals(pairs: list[dict], truth: Mapping[str, str], voices: Mapping[str, str] | None) -> str:
    rows = []
    for p in pairs:
        a, b = p["speaker_a"], p["speaker_b"]
        same = a in truth and b in truth and truth[a] == truth[b]
        row = [Raw(short_id(a)), Raw(short_id(b)), f"{p['clips_a']} + {p['clips_b']}",
               f"{p['separation']:.2f}", f"{p['merge_threshold']:.2f}", bool(p["merged"]),
               "yes" if same else "no" if truth else "?"]
        if voices:
            row.append(f"{voices.get(a, '?')} + {voices.get(b, '?')}")
        rows.append(row)
    return table(rows, ("client_id a", "client_id b", "clips", "separation", "merge threshold", "merged",
                        "truly one voice", *(("voices",) if voices else ())))


def _facts(summary: dict) -> str:
    """One paragraph of the dedup run's counts and its clip threshold."""
    get = summary.get
    return (f"<p>{get('clips', 0):,} clips under {get('speakers', 0):,} client_ids; clip threshold "
            f"{get('threshold', 0):.3f} ({html.escape(str(get('threshold_meaning', '')))}); "
            f"{get('clip_clusters', 0):,} clip clusters of 2+ clips; {get('merged_groups', 0)} merged "
            f"groups covering {get('speakers_in_merged_groups', 0)} client_ids; "
            f"{get('suspicious_clips', 0)} clips flagged as not their client_id's voice (below).</p>")
