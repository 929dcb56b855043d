"""The report's verification part (``speechid.app.report``): the answer's cards on one clip against one clip
(and, for a --real run, the trial lists of voices recorded elsewhere), and the section with the test
split's pictures, measures and the model's operating points."""

from __future__ import annotations

import html
import os

from speechid.app.htmlpage import Raw, figures, pct, table
from speechid.config import THRESHOLD
from speechid.operating_points import OperatingPoints, point_words


def verification_card(metrics: dict, ops: OperatingPoints | None, real: dict | None = None) -> str:
    """The answer's card on one clip against one clip: the test EER, and FAR/FRR at the default threshold
    and at the original project's 0.83 (``real``: a --real run, whose test speakers are FOTAQ characters)."""
    threshold = float(metrics["threshold"])
    eer = metrics["eer"]
    far, frr = 1 - metrics["specificity"], 1 - metrics["sensitivity"]
    meaning = ops.clip.describe(threshold, prefer=ops.default) if ops else "given, not calibrated"
    reference = _at_reference(metrics, ops)
    css = "ok" if eer <= 0.05 else "warn" if eer <= 0.15 else "bad"
    tip = ("" if eer <= 0.1 else "<li>EER above 10%: train longer or on more speakers (<code>speechid train "
                                 "--epochs</code>); compare groups of clips rather than single clips.</li>")
    who = (f"{metrics['speakers']} held-out FOTAQ characters (<b>real voice acting</b>, in-domain: the game "
           "trained on; the cross-corpus figure above is the one to expect elsewhere)" if real
           else f"{metrics['speakers']} test speakers")
    return (
        f'<div class="card {css}"><h3>Same person? One clip against one clip</h3>'
        f'<div class="big">EER {pct(eer)}</div>'
        f"<p>on {who} the model never trained on ({metrics['trials']:,} balanced trials).</p><ul>"
        f"<li>At the default threshold <b>{threshold:.3f}</b> ({html.escape(meaning)}): <b>FAR {pct(far)}</b> "
        f"(different people accepted) and <b>FRR {pct(frr)}</b> (same person rejected) on the test trials.</li>"
        + (f"<li>{reference.strip()}</li>" if reference else "")
        + f"<li>FRR at FAR {pct(metrics['target_far'], 0)}: {pct(metrics['frr_at_target_far'])}; "
        f"minDCF(0.01) {metrics['min_dcf']['0.01']:.3f}.</li>{tip}</ul></div>"
    )


def _at_reference(metrics: dict, ops: OperatingPoints | None) -> str:
    """FAR/FRR at the original project's 0.83: on the test trials when metrics.json carries them, else
    on dev speakers from the operating points ("" when neither)."""
    at_reference = metrics.get("at_reference")
    if at_reference:  # the same test trials as the default's rates: one data set per card
        return (f"At the original project's {THRESHOLD:g}: FAR {pct(at_reference['far'])} / FRR "
                f"{pct(at_reference['frr'])} on the same test trials.")
    if ops is not None:  # a run evaluated before metrics.json carried it: say where the rates come from
        far, frr = ops.clip.rates(THRESHOLD)
        return (f"At the original project's {THRESHOLD:g}: FAR {pct(far)} / FRR {pct(frr)} on dev speakers "
                "(not the test trials above).")
    return ""


def cross_corpus_card(real: dict) -> str:
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


def verification_section(metrics: dict, ops: OperatingPoints | None, eval_dir: str, who: str = "test speakers"
                         ) -> str:
    """HTML: the test split's pictures and measures, then the model's operating points (when calibrated)."""
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
        out.append(_operating_points(ops))
    return "\n".join(out)


def _operating_points(ops: OperatingPoints) -> str:
    """The operating points measured on dev speakers, one row per level, the defaults in bold."""
    where = ops.measured_on
    out = [f"<h3>Operating points measured on dev speakers ({where.get('speakers', '?')} speakers, "
           f"{where.get('clips', '?')} clips), stored in the model's config.json</h3>"]
    names = list(dict.fromkeys(n for lp in (ops.clip, *ops.speaker) for n in lp.points))
    first = ("seed", "far_1%", "far_0.1%", "eer", "frr_1%", "merge")  # then the reference (at_0.83), others
    names.sort(key=lambda n: (first.index(n) if n in first else len(first), n))
    rows = []
    for lp in (ops.clip, *ops.speaker):
        used = ops.default if lp.level == "clip" else ops.merge
        groups = f"{lp.n} clip{'s' * (lp.n > 1)} vs {lp.m} clip{'s' * (lp.m > 1)}, separation"
        row = ["one clip vs one clip, Euclidean" if lp.level == "clip" else groups]
        for name in names:
            pt = lp.points.get(name)
            cell = "&mdash;" if pt is None else (
                f"{pt.threshold:.3f}<br><small>FAR {pct(pt.far, 2)} &middot; FRR {pct(pt.frr, 2)}</small>")
            row.append(Raw(f"<b>{cell}<br><small>default</small></b>" if name == used else cell))
        rows.append(row)
    out.append(table(rows, ("level", *(point_words(n) for n in names))))
    out.append(f"<p>Bold: the defaults (the {html.escape(point_words(ops.default))} for one clip against one "
               f"clip; the {html.escape(point_words(ops.merge))} of the group size for dedup merges).</p>")
    return "\n".join(out)
