"""report.html of a demo run: the answer first, then the evidence, on one self-contained page.

``build(paths, output)`` reads only what the run wrote (the run record ``demo.json``, eval/metrics.json
and its pictures, both dedup summaries and the merge proposals, prep's and embed's manifests and failures,
the corpus's aliases.tsv), so ``rebuild_report(workdir)`` runs again on any finished workdir
(``speechid demo --report-only --workdir W``). Pictures are inlined as PNG data, so the page is one file
to share. Ids are shown by their first 16 characters; the full id is in the hover text.

The parts: ``verification_section`` and ``dedup_section`` (the answer's cards and their sections),
``mislabels_section``, ``run_sections`` (training, query, pipeline), all built of ``htmlpage``'s pieces.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from speechid.app.dedup_section import dedup_card, dedup_section, merged_pairs_by_voices
from speechid.app.htmlpage import Raw, short_id, table, write_html
from speechid.app.mislabels_section import mislabels_section
from speechid.app.run_record import REPORT, RUN_RECORD, RunRecord, real_workdir_paths, workdir_paths
from speechid.app.run_sections import failure_examples, pipeline_section, query_section, training_section
from speechid.app.verification_section import cross_corpus_card, verification_card, verification_section
from speechid.errors import ConfigError
from speechid.operating_points import OperatingPoints
from speechid.schema import MANIFEST
from speechid.truth import read_clip_truth, read_truth


def rebuild_report(workdir: str) -> str:
    """Write ``<workdir>/report.html`` from a finished run's outputs (synthetic or ``--real``); returns its path."""
    paths = workdir_paths(workdir)
    if not os.path.exists(paths["run"]):
        raise ConfigError(f"{workdir}: no {RUN_RECORD}, not a finished demo run (run `speechid demo` first)")
    record = RunRecord.read(paths["run"])
    if record.is_real:
        paths = real_workdir_paths(workdir)
    return build(paths, os.path.join(os.path.abspath(workdir), REPORT), record=record)


def _json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _parquet_head(path: str, rows: int) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).slice(0, rows).to_pylist() if os.path.exists(path) else []


@dataclass
class _Dedup:
    """What the dedup runs wrote: both summaries, the closest merge proposals, the strongest mislabel flags,
    the truth they are scored against (client_id -> voice; clip -> voice) and, for a --real run, whose
    voices each id holds and the merged pairs by the voices they join."""

    summary: dict
    seed_summary: dict | None
    pairs: list[dict]
    flags: list[dict]
    truth: dict[str, str]
    clip_truth: dict[str, str]
    voices: dict[str, str] = field(default_factory=dict)
    by_voices: dict[str, dict[str, int]] | None = None


def _read_dedup(paths: Mapping[str, str], real: bool, top_pairs: int) -> _Dedup:
    from speechid.indexing.dedup import PAIRS_OUT, SUSPICIOUS_OUT

    aliases = os.path.join(paths["corpus"], "aliases.tsv")
    dedup = _Dedup(
        summary=_json(os.path.join(paths["dedup"], "summary.json")) or {},
        seed_summary=_json(os.path.join(paths["dedup_seed"], "summary.json")),
        pairs=_parquet_head(os.path.join(paths["dedup"], PAIRS_OUT), top_pairs),
        flags=_parquet_head(os.path.join(paths["dedup"], SUSPICIOUS_OUT), top_pairs),
        truth=read_truth(aliases) if os.path.exists(aliases) else {},
        clip_truth=read_clip_truth(aliases) if os.path.exists(aliases) else {},
    )
    if real:
        _add_voices(dedup, paths)
    return dedup


def _add_voices(dedup: _Dedup, paths: Mapping[str, str]) -> None:
    """A --real run's index holds FOTAQ's ids (real voices) and the synthetic release's: both truths in one,
    each id's kind of voice, and the merged pairs by the voices they join."""
    import pyarrow.parquet as pq

    from speechid.indexing.dedup import GROUPS_OUT

    synth_aliases = os.path.join(paths.get("corpus_synth", ""), "aliases.tsv")
    synth_truth = read_truth(synth_aliases) if os.path.exists(synth_aliases) else {}
    dedup.voices = {**{c: "synthetic" for c in synth_truth}, **{c: "real" for c in dedup.truth}}
    dedup.truth = {**synth_truth, **dedup.truth}
    groups_path = os.path.join(paths["dedup"], GROUPS_OUT)
    if os.path.exists(groups_path):
        groups = pq.read_table(groups_path, columns=["speaker_id", "group"]).to_pydict()
        dedup.by_voices = merged_pairs_by_voices(dict(zip(groups["speaker_id"], groups["group"], strict=True)),
                                                 dedup.truth, dedup.voices)


def _answer(record: RunRecord, metrics: dict, ops: OperatingPoints | None, dedup: _Dedup) -> str:
    side = cross_corpus_card(record.real) if record.real else ""
    verification = verification_card(metrics, ops, record.real)
    merges = dedup_card(dedup.summary, dedup.seed_summary, ops, record.real, dedup.by_voices)
    return f'<div class="answer">{side}{verification}{merges}</div>'


def build(paths: Mapping[str, str], output: str, record: RunRecord | None = None, top_pairs: int = 10) -> str:
    """Write the report of the run whose outputs are at ``paths`` (keys: corpus, data, eval, embeddings,
    dedup, dedup_seed, and run: the run record demo.json, read unless ``record`` is given) to ``output``.

    Returns the page's path."""
    if record is None:
        record = RunRecord.from_dict(_json(paths["run"]) or {})
    # The run record holds what the demo read from the model's config.json (with its one reader), so the
    # page needs no TensorFlow import.
    block = record.operating_points
    ops = OperatingPoints.from_dict(block, paths["run"]) if block else None
    metrics = _json(os.path.join(paths["eval"], "metrics.json"))
    dedup = _read_dedup(paths, bool(record.real), top_pairs)
    sections = []
    if metrics:
        sections.append(("The answer", _answer(record, metrics, ops, dedup)))
        who = "held-out FOTAQ characters (real voices)" if record.real else "test speakers"
        sections.append((f"Same person? Verification on {who}", verification_section(metrics, ops, paths["eval"], who)))
    sections += [
        ("Dedup: client_id merges against the planted aliases",
         dedup_section(dedup.summary, dedup.seed_summary, ops, dedup.pairs, dedup.truth, dedup.voices)),
        ("Dedup: clips filed under another voice's client_id",
         mislabels_section(dedup.summary, dedup.flags, dedup.clip_truth)),
        ("Training", training_section(record)),
        ("Example query: who does this clip most resemble?", query_section(record.query)),
        ("Pipeline: times, data and failures",
         pipeline_section(record.seconds, _json(os.path.join(paths["data"], MANIFEST)),
                          _json(os.path.join(paths["embeddings"], MANIFEST)), failure_examples(paths["data"]),
                          failure_examples(paths["embeddings"]))),
        ("Where things are", table([(k, Raw(f"<code>{html.escape(v)}</code>")) for k, v in paths.items()],
                                   ("output", "path"))),
    ]
    if record.real:
        return write_html(output, "speechid demo --real: same person, on real voices?", sections,
                          subtitle=_real_subtitle(record))
    config = record.config
    subtitle = (f"A synthetic Common Voice release of {config.get('speakers', '?')} voices "
                f"({config.get('aliases', '?')} of them recorded under two client_ids), run through "
                f"prep &rarr; train &rarr; evaluate &rarr; embed &rarr; index &rarr; dedup &rarr; query. "
                f"Model {_model(record)}.")
    return write_html(output, "speechid demo: same person?", sections, subtitle=subtitle)


def _model(record: RunRecord) -> str:
    return short_id(record.model_id if record.model_id is not None else "?")


def _real_subtitle(record: RunRecord) -> str:
    config, real = record.config, record.real
    held = [item["name"] for item in real.get("lists", []) if item["relation"].startswith("cross")]
    cross = f", scored cross-corpus on {html.escape(', '.join(held))}" if held else ""
    trained = html.escape(" + ".join(real.get("trained_on", ["fotaq", "synth"])))
    return (f"Real voice acting (trained on {trained}; {config.get('aliases', '?')} held-out Flight of the Amazon "
            f"Queen characters recorded under two client_ids) beside {config.get('synth_speakers', '?')} synthetic "
            f"voices, trained with the recommended recipe ({html.escape(str(config.get('loss', '?')))}, augmentation "
            f"{html.escape(str(config.get('augment', '?')))}, a {config.get('train_minutes', 0):g}-minute training "
            f"budget){cross}; "
            f"prep &rarr; train &rarr; evaluate &rarr; embed &rarr; index &rarr; dedup &rarr; query. "
            f"Model {_model(record)}.")
