"""report.html of a demo run: the answer first, then the evidence, on one self-contained page.

``build(paths, output)`` reads only what the run wrote (the run record ``demo.json``, eval/metrics.json
and its pictures, both dedup summaries and the merge proposals, prep's and embed's manifests and failures,
the corpus's aliases.tsv), so it runs again on any finished workdir
(``speechid demo --report-only --workdir W``). Pictures are inlined as PNG data, so the page is one file
to share. Ids are shown by their first 16 characters; the full id is in the hover text.
"""

from __future__ import annotations

import glob
import html
import json
import os
from collections.abc import Mapping

from speechid.app.htmlpage import Raw, figures, finite, pct, png, short_id, table, write_html
from speechid.app.mislabels_section import mislabels_section
from speechid.config import THRESHOLD
from speechid.operating_points import OperatingPoints, point_words
from speechid.truth import read_clip_truth, read_truth

TARGET = 0.9  # the precision/recall the advice aims for
EXAMPLES_PER_REASON = 2


# -- pictures drawn from the run's numbers -------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curve_png(history: list[dict]) -> bytes:
    """Loss (left axis) and dev EER (right axis) per epoch; the kept (best dev EER) epoch starred."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(epochs, [h["loss"] for h in history], "o-", color="tab:blue", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="tab:blue")
    ax.set_xticks(epochs)
    eers = [(h["epoch"], h["dev_eer"]) for h in history if finite(h.get("dev_eer"))]
    if eers:
        ax2 = ax.twinx()
        ax2.plot([e for e, _ in eers], [100 * v for _, v in eers], "s-", color="tab:red", label="dev EER")
        best = min(eers, key=lambda ev: ev[1])
        ax2.plot([best[0]], [100 * best[1]], "*", color="black", markersize=14,
                 label=f"kept: epoch {best[0]}, EER {100 * best[1]:.1f}%")
        ax2.set_ylabel("dev EER (%)", color="tab:red")
        lines = ax.get_lines() + ax2.get_lines()
        ax.legend(lines, [ln.get_label() for ln in lines], loc="upper right", fontsize=9)
    ax.set_title("Training: loss and dev EER per epoch")
    ax.grid(True, alpha=0.3)
    return png(fig)


def merge_curve_png(curve: list[dict], marks: list[tuple[float, str, str]]) -> bytes:
    """Client_id merge precision/recall against one uniform merge threshold, with ``marks``
    ((threshold, label, colour)) drawn as vertical lines."""
    plt = _pyplot()
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


# -- reading the run -----------------------------------------------------------------------------------

def _json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def failure_examples(folder: str, per_reason: int = EXAMPLES_PER_REASON) -> dict[str, list[dict]]:
    """reason -> the first ``per_reason`` failure records of ``folder``/failures/*.jsonl."""
    out: dict[str, list[dict]] = {}
    for path in sorted(glob.glob(os.path.join(folder, "failures", "*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    got = out.setdefault(rec.get("reason", "?"), [])
                    if len(got) < per_reason:
                        got.append(rec)
    return out


def _merge_points(ops: OperatingPoints | None) -> list[tuple[int, float]]:
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


# -- the page ------------------------------------------------------------------------------------------

def _side_by_side(real: dict) -> str:
    """The real run's trial lists, cross-corpus first, each labelled real or synthetic voices and how it
    relates to training."""
    lists = real.get("lists", [])
    rows = [(Raw(f"<b>{html.escape(item['voices'])} voices</b>"), item["name"], item["relation"],
             f"{item['speakers']} / {item['clips']:,} / {item['trials']:,}", Raw(f"<b>{pct(item['eer'])}</b>"),
             f"{item['min_dcf']['0.01']:.3f}", f"{pct(item['sensitivity'])} / {pct(item['specificity'])}")
            for item in lists]
    t = next((item["threshold"] for item in lists), None)
    head = ("voices", "trial list", "relation to training", "speakers / clips / trials", "EER", "minDCF(0.01)",
            f"sensitivity / specificity at {t:.3f}" if t is not None else "sensitivity / specificity")
    trained = " + ".join(real.get("trained_on", ["fotaq", "synth"]))
    mean = real.get("cross_corpus_mean_eer")
    big = (f'<div class="big">EER {pct(mean)}</div><p>mean over the corpora the model never trained on: the '
           "figure to expect on voices recorded elsewhere.</p>" if mean is not None else
           "<p><b>No corpus recorded elsewhere was installed</b>: every row below shares a training corpus's "
           "studio and is optimistic (README &ldquo;Real voices, offline&rdquo; names the packages).</p>")
    return (
        '<div class="card" style="flex-basis:100%"><h3>Voices recorded elsewhere first, then held-out speakers '
        "of the training corpora</h3>" + big +
        f"<p>One model, trained on {html.escape(trained)} (real voice acting and synthetic speakers), scored on "
        "seeded balanced trials of voices it never trained on. Cross-corpus rows come from other recordings "
        "(other games, telephone prompts, other languages); in-domain rows share a training corpus's "
        "microphones and mixing, and read better than your voices will. Real and synthetic figures are "
        "separate rows; never average them. Speakers are scored by their true label, so a planted alias is "
        "never a &ldquo;different speaker&rdquo; trial.</p>"
        + table(rows, head) + "</div>"
    )


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson 95% interval of a proportion ``successes`` / ``n`` (None when n is 0)."""
    if not n:
        return None
    phat = successes / n
    centre = phat + z * z / (2 * n)
    margin = z * ((phat * (1 - phat) + z * z / (4 * n)) / n) ** 0.5
    return max(0.0, (centre - margin) / (1 + z * z / n)), min(1.0, (centre + margin) / (1 + z * z / n))


def _answer(run: dict, metrics: dict, ops: OperatingPoints | None, dd: dict, dd_seed: dict | None,
            by_voices: dict[str, dict[str, int]] | None = None) -> str:
    real = run.get("real")
    t = float(metrics["threshold"])
    e = metrics["eer"]
    far_t, frr_t = 1 - metrics["specificity"], 1 - metrics["sensitivity"]
    meaning = ops.clip.describe(t, prefer=ops.default) if ops else "given, not calibrated"
    ref = ""
    at_ref = metrics.get("at_reference")
    if at_ref:  # the same test trials as the default's rates: one data set per card
        ref = (f"At the original project's {THRESHOLD:g}: FAR {pct(at_ref['far'])} / FRR {pct(at_ref['frr'])} on "
               "the same test trials.")
    elif ops is not None:  # a run evaluated before metrics.json carried it: say where the rates come from
        rfar, rfrr = ops.clip.rates(THRESHOLD)
        ref = (f"At the original project's {THRESHOLD:g}: FAR {pct(rfar)} / FRR {pct(rfrr)} on dev speakers "
               "(not the test trials above).")
    cls = "ok" if e <= 0.05 else "warn" if e <= 0.15 else "bad"
    tip = ("" if e <= 0.1 else "<li>EER above 10%: train longer or on more speakers (<code>speechid train "
                               "--epochs</code>); compare groups of clips rather than single clips.</li>")
    who = (f"{metrics['speakers']} held-out FOTAQ characters (<b>real voice acting</b>, in-domain: the game "
           "trained on; the cross-corpus figure above is the one to expect elsewhere)" if real
           else f"{metrics['speakers']} test speakers")
    verification = (
        f'<div class="card {cls}"><h3>Same person? One clip against one clip</h3>'
        f'<div class="big">EER {pct(e)}</div>'
        f"<p>on {who} the model never trained on ({metrics['trials']:,} balanced trials).</p><ul>"
        f"<li>At the default threshold <b>{t:.3f}</b> ({html.escape(meaning)}): <b>FAR {pct(far_t)}</b> "
        f"(different people accepted) and <b>FRR {pct(frr_t)}</b> (same person rejected) on the test trials.</li>"
        + (f"<li>{ref.strip()}</li>" if ref else "")
        + f"<li>FRR at FAR {pct(metrics['target_far'], 0)}: {pct(metrics['frr_at_target_far'])}; "
        f"minDCF(0.01) {metrics['min_dcf']['0.01']:.3f}.</li>{tip}</ul></div>"
    )
    score = dd.get("scores", {}).get("speakers")
    seed_score = (dd_seed or {}).get("scores", {}).get("speakers")
    p, r = (score or {}).get("precision"), (score or {}).get("recall")
    # Green only when the interval's low end clears the target: 8 of 8 pairs is not 100% measured.
    p_ci = wilson(score["correct_pairs"], score["predicted_pairs"]) if score else None
    r_ci = wilson(score["correct_pairs"], score["true_pairs"]) if score else None
    ok = p_ci is not None and r_ci is not None and p_ci[0] >= TARGET and r_ci[0] >= TARGET
    cls = "ok" if ok else "warn" if (p or 0) >= 0.5 and (r or 0) >= 0.5 else "bad"

    def interval(ci):
        return f"{pct(ci[0], 0)}&ndash;{pct(ci[1], 0)}" if ci else "n/a"

    small = (f"<p><b>Measured on {score['true_pairs']} planted pair{'s' * (score['true_pairs'] != 1)} and "
             f"{score['predicted_pairs']} proposed</b>: 95% intervals, precision {interval(p_ci)}, recall "
             f"{interval(r_ci)}. Few pairs measure little; a release of thousands of client_ids needs its own "
             "check (plant aliases with <code>speechid corpus --aliases</code>).</p>"
             if score and min(score["true_pairs"], score["predicted_pairs"] or 1) < 30 else "")
    counts = (f"{score['correct_pairs']} of {score['predicted_pairs']} proposed client_id pairs are true aliases; "
              f"{score['true_pairs']} true pairs planted" if score else "no ground truth")
    if real and score:
        counts += (f" (among {real.get('aliases', '?')} held-out FOTAQ characters, <b>real voices</b>; the index "
                   "also holds the held-out synthetic voices, which carry no alias, so a merge joining one to "
                   "anything else counts against precision)")
    if by_voices:
        counts += ". Merged pairs by the voices they join: " + "; ".join(
            f"{kind}: {v['pairs']} ({v['true']} true)" for kind, v in by_voices.items())
    seed_txt = (f" With {THRESHOLD:g} as the clip threshold: precision {pct(seed_score.get('precision'))}, recall "
                f"{pct(seed_score.get('recall'))}." if seed_score else "")
    merge_ts = _merge_points(ops)
    rule = (", ".join(f"{tt:.2f} for {n}+ clips" for n, tt in merge_ts)
            if merge_ts else html.escape(str(dd.get("merge_rule", ""))))
    dev_speakers = ops.measured_on.get("speakers") if ops else None
    advice = "".join(f"<li>{tip}</li>" for tip in dedup_advice(score, dd.get("merge_curve", []),
                                                                dev_speakers=dev_speakers))
    dedup_card = (
        f'<div class="card {cls}"><h3>Dedup: one voice under several client_ids</h3>'
        f'<div class="big">precision {pct(p)} &middot; recall {pct(r)}</div>'
        f"<p>of client_id merges against the planted aliases: {counts}. Two ids merge when their separation "
        f"(the distance between their mean voices in standard errors of that difference, from each id's own "
        f"spread: about 1 for one voice under two ids, growing with the clips between two voices) is under the "
        f"speaker-level {html.escape(point_words(ops.merge) if ops else 'merge point')} for their clip counts "
        f"({rule}).{seed_txt}</p>{small}<ul>{advice}</ul></div>"
    )
    side = _side_by_side(real) if real else ""
    return f'<div class="answer">{side}{verification}{dedup_card}</div>'


def _verification(metrics: dict, ops: OperatingPoints | None, eval_dir: str,
                  who: str = "test speakers") -> str:
    pics = figures([
        (os.path.join(eval_dir, "det.png"), f"DET curve on {who}: the EER point, the default threshold and "
                                            f"the original project's {THRESHOLD:g} marked with their FAR/FRR."),
        (os.path.join(eval_dir, "histograms.png"), "Same- and different-speaker distances with both thresholds."),
        (os.path.join(eval_dir, "boxplot.png"),
         "Same vs different distances as a boxplot (the original project's picture)."),
    ], css="figs three")
    rows = [
        ("equal error rate", f"{pct(metrics['eer'], 2)} at {metrics['eer_threshold']:.3f}"),
        ("minDCF (p_target 0.01 / 0.05)", " / ".join(f"{v:.3f}" for v in metrics["min_dcf"].values())),
        (f"FRR at FAR {pct(metrics['target_far'], 0)}",
         f"{pct(metrics['frr_at_target_far'])} at {metrics['threshold_at_target_far']:.3f}"),
        (f"sensitivity / specificity at {metrics['threshold']:.3f}",
         f"{pct(metrics['sensitivity'])} / {pct(metrics['specificity'])}"),
        ("mean distance same / different",
         f"{metrics['same_distance_mean']:.3f} / {metrics['different_distance_mean']:.3f}"),
        ("trials (same + different), clips, speakers",
         f"{metrics['same_trials']:,} + {metrics['different_trials']:,}, {metrics['clips']:,} clips, "
         f"{metrics['speakers']} speakers"),
    ]
    out = [pics, f"<h3>Test split: {html.escape(who)}, never trained on</h3>", table(rows, ("measure", "value"))]
    if ops is not None:
        where = ops.measured_on
        out.append(f"<h3>Operating points measured on dev speakers ({where.get('speakers', '?')} speakers, "
                   f"{where.get('clips', '?')} clips), stored in the model's config.json</h3>")
        names = list(dict.fromkeys(n for lp in (ops.clip, *ops.speaker) for n in lp.points))
        first = ("seed", "far_1%", "far_0.1%", "eer", "frr_1%", "merge")  # then the reference (at_0.83), others
        names.sort(key=lambda n: (first.index(n) if n in first else len(first), n))
        prow = []
        for lp in (ops.clip, *ops.speaker):
            used = ops.default if lp.level == "clip" else ops.merge
            groups = f"{lp.n} clip{'s' * (lp.n > 1)} vs {lp.m} clip{'s' * (lp.m > 1)}, separation"
            row = ["one clip vs one clip, Euclidean" if lp.level == "clip" else groups]
            for name in names:
                pt = lp.points.get(name)
                cell = "&mdash;" if pt is None else (
                    f"{pt.threshold:.3f}<br><small>FAR {pct(pt.far, 2)} &middot; FRR {pct(pt.frr, 2)}</small>")
                row.append(Raw(f"<b>{cell}<br><small>default</small></b>" if name == used else cell))
            prow.append(row)
        out.append(table(prow, ("level", *(point_words(n) for n in names))))
        out.append(f"<p>Bold: the defaults (the {html.escape(point_words(ops.default))} for one clip against one "
                   f"clip; the {html.escape(point_words(ops.merge))} of the group size for dedup merges).</p>")
    return "\n".join(out)


def _dedup(dd: dict, dd_seed: dict | None, ops: OperatingPoints | None, pairs: list[dict],
           truth: Mapping[str, str], voices: Mapping[str, str] | None = None) -> str:
    out, side = [], []  # side: beside the curve
    curve = dd.get("merge_curve") or []
    if curve:
        marks = []
        shades = ("#ff7f0e", "#8c564b", "#1f77b4", "#000000")  # distinct, one per group size
        points = _merge_points(ops)
        marks += [(tt, f"default for {n}+ clips", shades[min(i, len(shades) - 1)])
                  for i, (n, tt) in enumerate(points[-len(shades):])]
        side.append(figures([(merge_curve_png(curve, marks),
                             "Precision/recall of client_id merges when one threshold decides every pair "
                             "(dotted: the 90% line). The default uses the speaker-level point for each "
                             "pair's group size instead.")]))
    rows = []
    for name, s in (("model's default", dd), (f"clip threshold {THRESHOLD:g}", dd_seed)):
        if not s:
            continue
        sc = s.get("scores", {})
        for level, what in (("speakers", "client_id merges"), ("clips", "clip clusters")):
            v = sc.get(level)
            if v:
                rows.append((name, what, pct(v["precision"]), pct(v["recall"]),
                             f"{v['correct_pairs']:,} / {v['predicted_pairs']:,} / {v['true_pairs']:,}"))
    facts = []
    if rows:
        facts.append(table(rows, ("thresholds", "decision", "precision", "recall", "pairs: correct / proposed / true")))
    facts.append(f"<p>{dd.get('clips', 0):,} clips under {dd.get('speakers', 0):,} client_ids; clip threshold "
               f"{dd.get('threshold', 0):.3f} ({html.escape(str(dd.get('threshold_meaning', '')))}); "
               f"{dd.get('clip_clusters', 0):,} clip clusters of 2+ clips; {dd.get('merged_groups', 0)} merged "
               f"groups covering {dd.get('speakers_in_merged_groups', 0)} client_ids; "
               f"{dd.get('suspicious_clips', 0)} clips flagged as not their client_id's voice (below).</p>")
    side.append('<div style="flex:1 1 min(420px,100%);min-width:0">' + "\n".join(facts) + "</div>")
    out.append('<div class="figs">' + "\n".join(side) + "</div>")
    if pairs:
        out.append("<h3>Merge proposals (closest first)</h3>")
        prow = []
        for p in pairs:
            a, b = p["speaker_a"], p["speaker_b"]
            same = a in truth and b in truth and truth[a] == truth[b]
            row = [Raw(short_id(a)), Raw(short_id(b)), f"{p['clips_a']} + {p['clips_b']}",
                   f"{p['separation']:.2f}", f"{p['merge_threshold']:.2f}", bool(p["merged"]),
                   "yes" if same else "no" if truth else "?"]
            if voices:
                row.append(f"{voices.get(a, '?')} + {voices.get(b, '?')}")
            prow.append(row)
        out.append(table(prow, ("client_id a", "client_id b", "clips", "separation", "merge threshold", "merged",
                                "truly one voice", *(("voices",) if voices else ()))))
    return "\n".join(out)


def _training(run: dict) -> str:
    history = run.get("training_curve") or []
    tr = run.get("training", {})
    out = []
    if history:
        out.append(figures([(training_curve_png(history), "Loss and all-pairs dev EER after each epoch; the "
                                                          "export keeps the epoch with the best dev EER.")]))
        out.append(table([(h["epoch"], f"{h['loss']:.4f}", pct(h.get("dev_eer"), 2), bool(h.get("improved")))
                          for h in history], ("epoch", "loss", "dev EER", "best so far")))
    else:
        out.append("<p>No per-epoch record in this run (demo.json has no training_curve).</p>")
    facts = [(k, tr[k]) for k in ("loss", "epochs", "steps_per_epoch", "speakers_per_batch", "clips_per_speaker",
                                  "crop_seconds", "learning_rate", "train_speakers", "best_epoch") if k in tr]
    if "train_seconds" in run:
        facts.append(("wall time", f"{run['train_seconds']:.0f} s"))
    if "trainable_parameters" in run:
        facts.append(("trainable parameters", int(run["trainable_parameters"])))
    if facts:
        out.append(table(facts, ("setting", "value")))
    return "\n".join(out)


def _query(q: dict | None) -> str:
    if not q:
        return "<p>No query in this run.</p>"
    others = ", ".join(short_id(c) for c in q["aliases_of_true_speaker"] if c != q["client_id"]) or "no other id"
    head = (f"<p>Clip <code>{html.escape(q['clip'])}</code>, recorded under client_id {short_id(q['client_id'])}; "
            f"its true voice also records under {others}.</p>")
    # The verdict's own statistic: by speaker, the clip's separation from the speaker's clips (not the
    # Euclidean distance to the centroid, shown for reference); the explanation names the threshold.
    rows = [(m["rank"], Raw(short_id(m["speaker_id"])), f"{m['euclidean_distance']:.3f}",
             f"{m['separation']:.3f}" if m.get("separation") is not None else "—",
             m.get("explanation") or m["verdict"], m["speaker_id"] in q["aliases_of_true_speaker"])
            for m in q["matches"]]
    return head + table(rows, ("rank", "client_id", "distance to centroid", "separation (decides)",
                               "verdict, and what decided it", "same true voice"))


def _failure_example(e: dict) -> str:
    """One failure record as "clip (TSV line): detail", the clip's full path on hover."""
    where = str(e.get("path") or e.get("member") or e.get("clip_id") or e.get("archive") or "?")
    name = os.path.basename(where.rstrip("/")) or where
    out = f'<span class="id" title="{html.escape(where)}">{html.escape(name)}</span>'
    if e.get("tsv"):
        out += f" ({html.escape(os.path.basename(str(e['tsv'])))} line {int(e.get('line', 0))})"
    if e.get("detail"):
        out += ": " + html.escape(str(e["detail"])[:160])
    return out


def _pipeline(run: dict, prep: dict | None, embed: dict | None, prep_examples: dict, embed_examples: dict) -> str:
    out = []
    seconds = run.get("seconds", {})
    if seconds:
        top = max(seconds.values()) or 1.0
        total = sum(seconds.values())
        rows = [(name, f"{s:.1f}", Raw(f'<span class="bar" style="width:{int(240 * s / top)}px"></span>'))
                for name, s in seconds.items()]
        rows.append(("total", f"{total:.1f}", Raw("")))
        out.append("<h3>Stage times, in pipeline order (seconds)</h3>" + table(rows, ("stage", "seconds", "")))
    if prep:
        rows = [(s, prep["records"].get(s, 0), f"{prep['hours'].get(s, 0.0):.2f}", prep.get("speakers", {}).get(s, 0))
                for s in prep.get("records", {})]
        out.append("<h3>Prepared data</h3>"
                   + table(rows, ("split", "clips", "hours", "client_ids (an aliased voice counts twice)")))
        rec = prep.get("reconciliation", {})
        out.append(f"<p>{html.escape(rec.get('rows', ''))}; {html.escape(rec.get('clips', ''))}: "
                   f"{'the counts reconcile' if rec.get('balanced') else '<b>the counts do NOT reconcile</b>'}.</p>")
    rows = []
    for stage, manifest, examples in (("prep", prep, prep_examples), ("embed", embed, embed_examples)):
        for reason, n in ((manifest or {}).get("failures") or {}).items():
            ex = examples.get(reason, [])
            shown = "<br>".join(_failure_example(e) for e in ex)
            rows.append((stage, reason, int(n), Raw(shown or "&mdash;")))
    out.append("<h3>Failures by reason (every clip and row that was not written, with examples)</h3>")
    out.append(table(rows, ("stage", "reason", "count", "examples (file: detail)")) if rows
               else "<p>No failures.</p>")
    return "\n".join(out)


def build(paths: Mapping[str, str], output: str, run: dict | None = None, top_pairs: int = 10) -> str:
    """Write the report of the run whose outputs are at ``paths`` (keys: corpus, data, eval, embeddings,
    dedup, dedup_seed, and run: the run record demo.json, read unless ``run`` is given) to ``output``.

    The run record holds what only the run knows: stage times in order, the per-epoch training curve, the
    model's operating points, training settings and model_id, the query. Returns the page's path."""
    import pyarrow.parquet as pq

    from speechid.indexing.dedup import GROUPS_OUT, PAIRS_OUT, SUSPICIOUS_OUT
    from speechid.schema import MANIFEST

    run = run if run is not None else (_json(paths["run"]) or {})
    # The run record holds what the demo read from the model's config.json (with its one reader), so the
    # page needs no TensorFlow import.
    block = run.get("operating_points")
    ops = OperatingPoints.from_dict(block, paths["run"]) if block else None
    metrics = _json(os.path.join(paths["eval"], "metrics.json"))
    dd = _json(os.path.join(paths["dedup"], "summary.json")) or {}
    dd_seed = _json(os.path.join(paths["dedup_seed"], "summary.json"))
    pairs_path = os.path.join(paths["dedup"], PAIRS_OUT)
    pairs = pq.read_table(pairs_path).slice(0, top_pairs).to_pylist() if os.path.exists(pairs_path) else []
    flags_path = os.path.join(paths["dedup"], SUSPICIOUS_OUT)
    flags = pq.read_table(flags_path).slice(0, top_pairs).to_pylist() if os.path.exists(flags_path) else []
    aliases = os.path.join(paths["corpus"], "aliases.tsv")
    truth = read_truth(aliases) if os.path.exists(aliases) else {}
    clip_truth = read_clip_truth(aliases) if os.path.exists(aliases) else {}
    voices: dict[str, str] = {}
    by_voices = None
    if run.get("real"):  # a --real run: FOTAQ's ids (real voices) and the synthetic release's, in one index
        synth_aliases = os.path.join(paths.get("corpus_synth", ""), "aliases.tsv")
        synth_truth = read_truth(synth_aliases) if os.path.exists(synth_aliases) else {}
        voices = {**{c: "synthetic" for c in synth_truth}, **{c: "real" for c in truth}}
        truth = {**synth_truth, **truth}
        groups_path = os.path.join(paths["dedup"], GROUPS_OUT)
        if os.path.exists(groups_path):
            g = pq.read_table(groups_path, columns=["speaker_id", "group"]).to_pydict()
            by_voices = merged_pairs_by_voices(dict(zip(g["speaker_id"], g["group"], strict=True)), truth, voices)
    prep = _json(os.path.join(paths["data"], MANIFEST))
    embed = _json(os.path.join(paths["embeddings"], MANIFEST))

    sections = []
    if metrics:
        sections.append(("The answer", _answer(run, metrics, ops, dd, dd_seed, by_voices)))
        who = "held-out FOTAQ characters (real voices)" if run.get("real") else "test speakers"
        sections.append((f"Same person? Verification on {who}", _verification(metrics, ops, paths["eval"], who)))
    sections += [
        ("Dedup: client_id merges against the planted aliases", _dedup(dd, dd_seed, ops, pairs, truth, voices)),
        ("Dedup: clips filed under another voice's client_id", mislabels_section(dd, flags, clip_truth)),
        ("Training", _training(run)),
        ("Example query: who does this clip most resemble?", _query(run.get("query"))),
        ("Pipeline: times, data and failures",
         _pipeline(run, prep, embed, failure_examples(paths["data"]), failure_examples(paths["embeddings"]))),
        ("Where things are", table([(k, Raw(f"<code>{html.escape(v)}</code>")) for k, v in paths.items()],
                                   ("output", "path"))),
    ]
    cfg = run.get("config", {})
    if run.get("real"):
        held = [item["name"] for item in run["real"].get("lists", []) if item["relation"].startswith("cross")]
        cross = f", scored cross-corpus on {html.escape(', '.join(held))}" if held else ""
        trained = html.escape(" + ".join(run["real"].get("trained_on", ["fotaq", "synth"])))
        sub = (f"Real voice acting (trained on {trained}; {cfg.get('aliases', '?')} held-out Flight of the Amazon "
               f"Queen characters recorded under two client_ids) beside {cfg.get('synth_speakers', '?')} synthetic "
               f"voices, trained with the recommended recipe ({html.escape(str(cfg.get('loss', '?')))}, augmentation "
               f"{html.escape(str(cfg.get('augment', '?')))}, a {cfg.get('train_minutes', 0):g}-minute training "
               f"budget){cross}; "
               f"prep &rarr; train &rarr; evaluate &rarr; embed &rarr; index &rarr; dedup &rarr; query. "
               f"Model {short_id(run.get('model_id', '?'))}.")
        return write_html(output, "speechid demo --real: same person, on real voices?", sections, subtitle=sub)
    sub = (f"A synthetic Common Voice release of {cfg.get('speakers', '?')} voices "
           f"({cfg.get('aliases', '?')} of them recorded under two client_ids), run through "
           f"prep &rarr; train &rarr; evaluate &rarr; embed &rarr; index &rarr; dedup &rarr; query. "
           f"Model {short_id(run.get('model_id', '?'))}.")
    return write_html(output, "speechid demo: same person?", sections, subtitle=sub)
