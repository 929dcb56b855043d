"""The stages both demos share (``speechid demo`` and ``speechid demo --real``), each filling its part of
the run's ``RunRecord``: prep, train, embed, index, dedup, query, and the finish that writes demo.json and
report.html.

A stage runs inside ``StageClock``'s block, which prints its header and its wall time and keeps the time
in the record. Work the demos do differently (which corpora, which trial lists) stays in each demo.
"""

from __future__ import annotations

import csv
import os
import shutil
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from speechid.app import report
from speechid.app.run_record import RunRecord
from speechid.config import THRESHOLD
from speechid.embedding_table import short_id
from speechid.truth import read_clip_truth, read_truth

Log = Callable[[str], None]


@dataclass
class DemoResult:
    """A finished demo: its folder, its record (demo.json) and the path of its report.html."""

    workdir: str
    record: RunRecord
    report: str = ""


class StageClock:
    """Numbers the run's ``total`` stages as they start, prints each one's header and wall time, and keeps
    the time in ``seconds`` (stage name -> seconds, in pipeline order)."""

    def __init__(self, log: Log, seconds: dict, total: int):
        self.log, self.seconds, self.total, self.number = log, seconds, total, 0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.number += 1
        number = self.number
        self.log(f"[{number}/{self.total}] {name} ...")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 1)
        self.log(f"[{number}/{self.total}] {name} done in {self.seconds[name]:.1f} s")


def beam_args(workers: int) -> list[str]:
    """The DirectRunner flags the demos run prep and embed with: ``workers`` local processes."""
    return ["--direct_running_mode", "multi_processing", "--direct_num_workers", str(workers)]


def indented(log: Log) -> Log:
    """``log`` with every line indented under its stage's header."""
    return lambda text: log("    " + text)


def prep_stage(archives: list[str], paths: dict, pipeline_args: list[str], record: RunRecord, log: Log) -> None:
    """prep (Beam + tf.Transform) of ``archives`` into the run's data folder; its counts into the record."""
    from speechid.pipelines.prep import prepare

    prep = prepare(archives, paths["data"], pipeline_args=pipeline_args)
    manifest = prep.manifest
    record.records = dict(manifest["records"])
    record.failures = dict(manifest["failures"])
    record.prep_balanced = prep.balanced
    log(f"    records {manifest['records']}; failures {manifest['failures'] or 'none'}; reconciles: {prep.balanced}")


def train_stage(paths: dict, record: RunRecord, log: Log, **settings) -> dict:
    """A fresh model (never a resumed one) trained on the run's data with ``settings`` (``trainer.train``'s
    keywords); the training curve and figures into the record. Returns the trainer's summary."""
    from speechid.model import trainer

    if os.path.exists(paths["model"]):
        shutil.rmtree(paths["model"])
    curve = record.training_curve = []
    summary = trainer.train(paths["data"], paths["model"], log=indented(log),
                            on_epoch_end=lambda epoch, s: curve.append({"epoch": epoch, **s}), **settings)
    record.train_seconds = round(summary["wall_s"], 1)
    record.best_dev_eer = summary["best_dev_eer"]
    record.trainable_parameters = summary["trainable_parameters"]
    return summary


def record_model(paths: dict, record: RunRecord):
    """The exported model's config and operating points (its one reader), copied into the record so the
    report needs no TensorFlow. Returns (operating points or None, model config)."""
    from speechid.model.export import operating_points, read_config

    model_config = read_config(paths["model"])
    ops = operating_points(model_config, paths["model"])
    record.operating_points = ops.to_dict() if ops else None
    record.default_threshold = float(model_config["threshold"])
    record.model_id = model_config.get("model_id")
    record.training = model_config.get("training", {})
    return ops, model_config


def embed_stage(paths: dict, inputs: list[str], pipeline_args: list[str], record: RunRecord, log: Log) -> None:
    """Beam RunInference of the run's model over ``inputs`` (prepared TFRecords) into the embeddings folder."""
    from speechid.pipelines.embed import embed_corpus

    embedded = embed_corpus(paths["model"], inputs, paths["embeddings"], pipeline_args=pipeline_args)
    record.embedded = embedded["clips_written"]
    log(f"    {embedded['clips_written']} clips embedded, {embedded['clips_failed']} failed")


def index_stage(paths: dict, ops, model_config: dict, record: RunRecord, log: Log) -> None:
    """FAISS over the run's embeddings, carrying the model's operating points."""
    from speechid.indexing import build_index

    summary = build_index(paths["embeddings"], paths["index"], operating_points=ops,
                          operating_points_model_id=model_config.get("model_id"))
    record.index = str(summary)
    log(f"    {summary}")


def dedup_stage(paths: dict, truth: dict, record: RunRecord, log: Log, clip_truth: dict | None = None) -> None:
    """Dedup against ``truth`` (and ``clip_truth``, the mislabelled clips) at the model's operating points,
    and again with the original project's 0.83 as the clip threshold (client_id merges and mislabel flags stay
    at the speaker level: 0.83 is a distance between two clips)."""
    from speechid.indexing import dedup

    at_model = dedup(paths["index"], paths["dedup"], truth=truth, clip_truth=clip_truth)
    record.dedup = {k: asdict(v) for k, v in at_model.scores.items()}
    record.dedup_curve = at_model.summary.get("merge_curve", [])
    record.dedup_rule = at_model.summary.get("merge_rule")
    with open(os.path.join(paths["dedup"], "summary.txt"), encoding="utf-8") as f:
        record.dedup_summary = f.read()
    for k, v in at_model.scores.items():
        log(f"    at the model's operating points: {k}: {v}")
    at_seed = dedup(paths["index"], paths["dedup_seed"], truth=truth, clip_truth=clip_truth, threshold=THRESHOLD)
    record.dedup_seed = {k: asdict(v) for k, v in at_seed.scores.items()}
    for k, v in at_seed.scores.items():
        log(f"    with {THRESHOLD:g} as the clip threshold: {k}: {v}")


def pick_query_clip(tarball: str, aliases_tsv: str, workdir: str) -> tuple[str, str, str]:
    """A clip of the first aliased speaker (not one filed under another voice's id), copied out of the
    release ``tarball`` for ``speechid query``.

    Returns (path, its client_id, the true speaker)."""
    truth = read_truth(aliases_tsv)
    mislabelled = read_clip_truth(aliases_tsv)
    by_speaker: dict[str, list[str]] = {}
    for cid, spk in truth.items():
        by_speaker.setdefault(spk, []).append(cid)
    aliased = sorted(spk for spk, ids in by_speaker.items() if len(ids) > 1)
    target_ids = set(by_speaker[aliased[0]]) if aliased else set(truth)
    with tarfile.open(tarball, "r:gz") as tar:
        validated = next(m for m in tar.getmembers() if m.name.endswith("/validated.tsv"))
        rows = list(csv.DictReader(tar.extractfile(validated).read().decode().splitlines(), delimiter="\t",
                                   quoting=csv.QUOTE_NONE))
        row = next(r for r in rows if r["client_id"] in target_ids and r["path"] not in mislabelled)
        member = next(m for m in tar.getmembers() if m.name.endswith("/clips/" + row["path"]))
        out = os.path.join(workdir, "query-" + row["path"])
        with open(out, "wb") as f:
            f.write(tar.extractfile(member).read())
    return out, row["client_id"], truth[row["client_id"]]


def query_stage(clip: str, client_id: str, true_speaker: str, truth: dict, encoder, paths: dict,
                record: RunRecord, log: Log) -> None:
    """Who does ``clip`` most resemble? The three nearest speakers, beside the clip's true identity."""
    from speechid.indexing import SpeakerIndex

    by_speaker = SpeakerIndex.load(paths["index"]).query_file(clip, encoder, k=3, by="speaker")[0]
    record.query = {
        "clip": os.path.basename(clip),
        "client_id": client_id,
        "true_speaker": true_speaker,
        "aliases_of_true_speaker": sorted(c for c, s in truth.items() if s == true_speaker),
        "matches": [m.to_dict() for m in by_speaker.matches],
    }
    for m in by_speaker.matches:
        log(f"    {m.rank}. {short_id(m.speaker_id)} {m.explanation}")


def finish(result: DemoResult, paths: dict) -> DemoResult:
    """Write the run's record (demo.json, stage times in pipeline order) and its report."""
    result.record.write(paths["run"])
    result.report = report.rebuild_report(result.workdir)
    return result


def mislabel_rows(flags: dict | None, resembling: dict | None = None) -> list[tuple[str, str]]:
    """The summary row of mislabel flags against the planted mislabels, and of those flags that resemble
    another id (none when not scored)."""
    if not flags:
        return []

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    rate = flags["clean_flagged"] / flags["clean_clips"] if flags["clean_clips"] else None
    subset = (f" (the {resembling['flagged']} that resemble another id: precision {pct(resembling['precision'])}, "
              f"recall {pct(resembling['recall'])})" if resembling else "")
    return [(f"dedup: mislabelled clips flagged vs the {flags['planted']} planted",
             f"precision {pct(flags['precision'])}, recall {pct(flags['recall'])}{subset}; "
             f"{flags['clean_flagged']} of {flags['clean_clips']:,} other clips flagged ({pct(rate)})")]
