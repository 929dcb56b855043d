"""The report's sections on how the run went (``speechid.app.report``): training, the example query, and
the pipeline's stage times, counts and failures with examples."""

from __future__ import annotations

import glob
import html
import json
import os

from speechid.app.htmlpage import Raw, figures, finite, pct, png, pyplot, short_id, table
from speechid.app.run_record import RunRecord

EXAMPLES_PER_REASON = 2


def training_curve_png(history: list[dict]) -> bytes:
    """Loss (left axis) and dev EER (right axis) per epoch; the kept (best dev EER) epoch starred."""
    plt = pyplot()
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
        best = min(eers, key=lambda point: point[1])
        ax2.plot([best[0]], [100 * best[1]], "*", color="black", markersize=14,
                 label=f"kept: epoch {best[0]}, EER {100 * best[1]:.1f}%")
        ax2.set_ylabel("dev EER (%)", color="tab:red")
        lines = ax.get_lines() + ax2.get_lines()
        ax.legend(lines, [ln.get_label() for ln in lines], loc="upper right", fontsize=9)
    ax.set_title("Training: loss and dev EER per epoch")
    ax.grid(True, alpha=0.3)
    return png(fig)


def training_section(record: RunRecord) -> str:
    """HTML: loss and dev EER per epoch (picture and table), and the training settings."""
    history = record.training_curve or []
    settings = record.training or {}
    out = []
    if history:
        out.append(figures([(training_curve_png(history), "Loss and all-pairs dev EER after each epoch; the "
                                                          "export keeps the epoch with the best dev EER.")]))
        out.append(table([(h["epoch"], f"{h['loss']:.4f}", pct(h.get("dev_eer"), 2), bool(h.get("improved")))
                          for h in history], ("epoch", "loss", "dev EER", "best so far")))
    else:
        out.append("<p>No per-epoch record in this run (demo.json has no training_curve).</p>")
    facts = [(k, settings[k]) for k in ("loss", "epochs", "steps_per_epoch", "speakers_per_batch",
                                        "clips_per_speaker", "crop_seconds", "learning_rate", "train_speakers",
                                        "best_epoch") if k in settings]
    if record.train_seconds is not None:
        facts.append(("wall time", f"{record.train_seconds:.0f} s"))
    if record.trainable_parameters is not None:
        facts.append(("trainable parameters", int(record.trainable_parameters)))
    if facts:
        out.append(table(facts, ("setting", "value")))
    return "\n".join(out)


def query_section(query: dict | None) -> str:
    """HTML: the example query's clip, its true voice's ids, and its nearest speakers."""
    if not query:
        return "<p>No query in this run.</p>"
    aliases = query["aliases_of_true_speaker"]
    others = ", ".join(short_id(c) for c in aliases if c != query["client_id"]) or "no other id"
    head = (f"<p>Clip <code>{html.escape(query['clip'])}</code>, recorded under client_id "
            f"{short_id(query['client_id'])}; its true voice also records under {others}.</p>")
    # The verdict's own statistic: by speaker, the clip's separation from the speaker's clips (not the
    # Euclidean distance to the centroid, shown for reference); the explanation names the threshold.
    rows = [(m["rank"], Raw(short_id(m["speaker_id"])), f"{m['euclidean_distance']:.3f}",
             f"{m['separation']:.3f}" if m.get("separation") is not None else "—",
             m.get("explanation") or m["verdict"], m["speaker_id"] in aliases)
            for m in query["matches"]]
    return head + table(rows, ("rank", "client_id", "distance to centroid", "separation (decides)",
                               "verdict, and what decided it", "same true voice"))


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


def pipeline_section(seconds: dict, prep: dict | None, embed: dict | None, prep_examples: dict,
                     embed_examples: dict) -> str:
    """HTML: stage times in pipeline order, prep's counts, and every failure reason with examples (``prep``,
    ``embed``: the two jobs' manifests)."""
    out = []
    seconds = seconds or {}
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
