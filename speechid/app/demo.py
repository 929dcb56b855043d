"""The whole mission on a generated corpus, with the real components, in one call.

synth (planted aliases, mislabelled clips and bad clips) -> prep (Beam DirectRunner + tf.Transform)
-> train (Keras, CPU) -> evaluate -> embed (Beam RunInference) -> index (FAISS) -> dedup -> query, then a
summary table and ``<workdir>/report.html``. Every stage writes where a user would find it::

    <workdir>/corpus/      the synthetic release, aliases.tsv (ground truth: aliases, mislabelled clips),
                           faults.tsv
    <workdir>/data/        prep output (TFRecords, transform_fn, manifest.json, failures/)
    <workdir>/model/       the exported model (saved_model/, config.json, metrics.json)
    <workdir>/eval/        metrics.json and the pictures
    <workdir>/embeddings/  Parquet
    <workdir>/index/       the FAISS index
    <workdir>/dedup/       clusters, merge proposals, mislabelled clips, summary.txt (at the model's operating points)
    <workdir>/dedup-0.83/  the same with the original project's 0.83 as the clip threshold, for comparison
    <workdir>/demo.json    the run record: stage times, per-epoch training curve, the model's operating points
    <workdir>/report.html  the answer first, then everything above, on one page (``speechid.app.report``)

Running it again into the same workdir replaces each stage's output (each stage writes atomically);
``speechid.app.report.rebuild_report(workdir)`` (``speechid demo --report-only``) writes report.html again
from a finished run. The stages both demos share are in ``speechid.app.demo_stages``.
``speechid.app.demo_real`` runs the same chain on real voice acting beside synthetic voices (``speechid demo --real``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from speechid.app.demo_stages import (
    DemoResult,
    Log,
    StageClock,
    beam_args,
    dedup_stage,
    embed_stage,
    finish,
    indented,
    index_stage,
    mislabel_rows,
    pick_query_clip,
    prep_stage,
    query_stage,
    record_model,
    train_stage,
)
from speechid.app.run_record import RunRecord, workdir_paths
from speechid.config import THRESHOLD
from speechid.corpora import synth
from speechid.embedding_table import short_id
from speechid.model.calibration import summary as evaluation_summary
from speechid.truth import read_clip_truth, read_truth


@dataclass(frozen=True)
class DemoConfig:
    """Size knobs; the defaults finish in about 5 minutes on 2 quiet CPU cores (10 on busy ones)."""

    speakers: int = 100
    # a client_id merge is decided on an id's clips together, and this model needs about a dozen of them
    # an id (README, "demo levers")
    clips_per_speaker: int = 24
    heldout_clips: int = 24  # per dev/test voice: calibration measures groups of up to 12 clips
    aliases: int = 8  # test voices under two client_ids of 12 clips each
    # test voices' clips filed under another test voice's client_id (1% of the clips): the flags' precision
    # and recall against them, and the share of the other clips flagged, are the demo's mislabel figures
    mislabels: int = 24
    seed: int = 0
    # 8 x 40 steps: with fewer, the closest pairs of voices stay within the merge point (README, "demo levers")
    epochs: int = 8
    steps_per_epoch: int = 40
    speakers_per_batch: int = 16
    clips_per_speaker_batch: int = 4
    crop_seconds: float = 1.0
    learning_rate: float = 1e-3
    # the seed's triplet loss plus additive angular margin softmax, as in the real-voice recipe: it keeps
    # client_id merges precise where triplet alone merges close voices (README, "demo levers")
    loss: str = "triplet+aam"
    max_dev_clips: int = 400  # every dev clip (10 voices x 24): the operating points are measured on them
    trials: int = 4000
    workers: int = 2


def run_demo(workdir: str, config: DemoConfig = DemoConfig(), log: Log = print) -> DemoResult:
    """Run every stage into ``workdir``; returns the run's record (the figures the summary shows, also in
    report.html)."""
    from speechid import Encoder

    os.makedirs(workdir, exist_ok=True)
    workdir = os.path.abspath(workdir)
    paths = workdir_paths(workdir)
    record = RunRecord(config=asdict(config))
    clock = StageClock(log, record.seconds, total=8)
    pipeline_args = beam_args(config.workers)

    with clock.stage("synth: generate a Common Voice release"):
        corpus = _synth_stage(paths, config, log)
    with clock.stage("prep: Beam DirectRunner + tf.Transform"):
        prep_stage([corpus.tarball], paths, pipeline_args, record, log)
    loss_name = "triplet semi-hard" if config.loss == "triplet" else config.loss
    with clock.stage(f"train: LSTM + {loss_name} loss on CPU"):
        train_stage(paths, record, log, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch,
                    speakers_per_batch=config.speakers_per_batch, clips_per_speaker=config.clips_per_speaker_batch,
                    crop_seconds=config.crop_seconds, learning_rate=config.learning_rate,
                    max_dev_clips=config.max_dev_clips, loss=config.loss, seed=config.seed)
    with clock.stage("evaluate: test speakers never seen in training"):
        # trials by true voice: aliases and mislabelled clips are test speakers'
        truth, clip_truth = read_truth(corpus.aliases_tsv), read_clip_truth(corpus.aliases_tsv)
        ops, model_config = _evaluate_stage(paths, config, truth, clip_truth, record, log)
    with clock.stage("embed: Beam RunInference over every prepared clip"):
        embed_stage(paths, [paths["data"]], pipeline_args, record, log)
    with clock.stage("index: FAISS"):
        index_stage(paths, ops, model_config, record, log)
    with clock.stage("dedup: client_id merges, mislabelled clips, clip clusters"):
        dedup_stage(paths, truth, record, log, clip_truth)
    with clock.stage("query: who does this clip most resemble?"):
        clip, client_id, true_speaker = pick_query_clip(corpus.tarball, corpus.aliases_tsv, workdir)
        query_stage(clip, client_id, true_speaker, truth, Encoder.load(paths["model"]), paths, record, log)
    return finish(DemoResult(workdir, record), paths)


def _synth_stage(paths: dict, config: DemoConfig, log: Log):
    corpus = synth.make_corpus(paths["corpus"], speakers=config.speakers, clips_per_speaker=config.clips_per_speaker,
                               heldout_clips=config.heldout_clips, seed=config.seed, aliases=config.aliases,
                               mislabels=config.mislabels, plant_faults=True, workers=config.workers)
    log("    " + corpus.summary())
    return corpus


def _evaluate_stage(paths: dict, config: DemoConfig, truth: dict, clip_truth: dict, record: RunRecord, log: Log):
    """The test split's trials (``evaluation.evaluate``: metrics.json and the pictures), then the model's
    operating points into the record. Returns (operating points, model config)."""
    from speechid.model import evaluation

    record.eval = evaluation.evaluate(paths["model"], paths["data"], split="test", trials=config.trials,
                                      seed=config.seed, output_dir=paths["eval"], truth=truth, clip_truth=clip_truth,
                                      log=indented(log))
    ops, model_config = record_model(paths, record)
    if ops:
        log("    " + evaluation_summary(ops).replace("\n", "\n    "))
    return ops, model_config


def summary_rows(result: DemoResult) -> list[tuple[str, str]]:
    """The CLI's summary table of a synthetic run."""
    record = result.record
    metrics = record.eval
    failed = ", ".join(f"{k} {v}" for k, v in sorted(record.failures.items())) or "none"

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    merges = record.dedup.get("speakers", {})
    clusters = record.dedup.get("clips", {})
    seed_merges = record.dedup_seed.get("speakers", {})
    seed_clusters = record.dedup_seed.get("clips", {})
    threshold = record.default_threshold
    return [
        ("clips prepared", ", ".join(f"{k} {v}" for k, v in record.records.items())),
        ("clips failed (by reason)", failed),
        ("prep counts reconcile", str(record.prep_balanced)),
        ("training time", f"{record.train_seconds:.0f} s ({record.trainable_parameters:,} parameters)"),
        ("test EER", pct(metrics["eer"])),
        ("default threshold (FAR 1.7% on dev speakers: the original project's specificity)",
         f"{threshold:.3f} (the original project used {THRESHOLD:g})"),
        (f"sensitivity / specificity at {threshold:.3f} (test speakers)",
         f"{pct(metrics.get('sensitivity'))} / {pct(metrics.get('specificity'))}"),
        ("minDCF (p_target 0.01 / 0.05)", f"{metrics['min_dcf']['0.01']:.3f} / {metrics['min_dcf']['0.05']:.3f}"),
        (f"FRR at FAR {metrics['target_far']:g}", pct(metrics["frr_at_target_far"])),
        ("dedup at the default: client_id merges vs planted aliases",
         f"precision {pct(merges.get('precision'))}, recall {pct(merges.get('recall'))}"),
        ("dedup at the default: clip clusters vs true speakers",
         f"precision {pct(clusters.get('precision'))}, recall {pct(clusters.get('recall'))}"),
        *mislabel_rows(record.dedup.get("mislabels"), record.dedup.get("mislabels_resembling")),
        (f"dedup with {THRESHOLD:g} as the clip threshold: client_id merges / clip clusters",
         f"precision {pct(seed_merges.get('precision'))}, recall {pct(seed_merges.get('recall'))} / "
         f"precision {pct(seed_clusters.get('precision'))}, recall {pct(seed_clusters.get('recall'))}"),
        ("example query", _query_row(record.query)),
    ]


def _query_row(query: dict) -> str:
    best = query["matches"][0] if query["matches"] else None
    if best is None:
        return "no match"
    alias_hit = best["speaker_id"] in query["aliases_of_true_speaker"]
    return (f"{query['clip']} -> {short_id(best['speaker_id'])} at {best['euclidean_distance']:.3f} "
            f"({best['verdict']}); {'an alias of the same voice' if alias_hit else 'not one of its aliases'}")
