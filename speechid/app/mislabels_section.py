"""The report's section on mislabelled clips (``speechid.app.report``): the rule, the figures against the
planted ones, and the strongest flags, from a dedup output's summary.json and suspicious.parquet."""

from __future__ import annotations

import html
from collections.abc import Mapping

from speechid.app.htmlpage import Raw, finite, pct, short_id, table


def mislabels_section(dd: Mapping, flags: list[dict], clip_truth: Mapping[str, str]) -> str:
    """HTML: what was flagged and why, the flags' precision/recall when scored, the top ``flags`` (already
    ranked by evidence) with whether each was planted."""
    if "suspicious_clips" not in dd or "clips_tested" not in dd:
        return "<p>No mislabel flags in this dedup output (made before speechid flagged mislabelled clips).</p>"
    t = dd.get("mislabel_threshold")
    rule = (f"a clip is flagged when its separation from the rest of its client_id's clips (about 1 for the id's "
            f"own voice) is {t:.2f} or more: {html.escape(str(dd.get('mislabel_rule', '')))}" if t is not None
            else html.escape(str(dd.get("mislabel_rule", ""))))
    out = [f"<p>{dd['suspicious_clips']:,} of {dd['clips_tested']:,} clips tested are flagged; "
           f"{dd.get('flags_resembling_an_id', 0):,} of them resemble another client_id. Rule: {rule}.</p>"]
    scores = dd.get("scores") or {}
    rows = []
    for key, which in (("mislabels", "every flag"), ("mislabels_resembling", "flags that resemble another id")):
        score = scores.get(key)
        if score:
            rate = score["clean_flagged"] / score["clean_clips"] if score["clean_clips"] else None
            rows.append((which, pct(score["precision"]), pct(score["recall"]),
                         f"{score['found']} / {score['flagged']} / {score['planted']}",
                         f"{score['clean_flagged']} of {score['clean_clips']:,} ({pct(rate, 2)})",
                         f"{score['resembles_right']} of {score['found']}"))
    if rows:
        out.append(table(rows, ("flags", "precision", "recall", "planted among them / flags / planted in all",
                                "other clips flagged", "found ones naming an id of their true voice")))
    if flags:
        rows = []
        for f in flags:
            near = f["resembles"] or f["nearest_other_speaker"]
            rows.append((f["clip_id"], Raw(short_id(f["speaker_id"])), f"{f['separation']:.2f}",
                         Raw(short_id(near)) if near else "-",
                         f"{f['nearest_other_separation']:.2f}" if finite(f["nearest_other_separation"]) else "-",
                         "yes" if f["resembles"] else "no", f"{f['evidence']:+.2f}",
                         ("yes" if f["clip_id"] in clip_truth else "no") if clip_truth else "?"))
        out.append("<h3>Flagged clips, strongest evidence first</h3>")
        out.append(table(rows, ("clip", "filed under", "separation from its id", "nearest other id",
                                "separation from it", "resembles it", "evidence", "planted")))
    return "\n".join(out)
