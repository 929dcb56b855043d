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
``rebuild_report(workdir)`` (``speechid demo --report-only``) writes report.html again from a finished run.
``speechid.app.demo_real`` runs the same chain on real voice acting beside synthetic voices (``speechid demo --real``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from speechid.app import report
from speechid.config import THRESHOLD
from speechid.embedding_table import short_id
from speechid.errors import ConfigError
from speechid.model.calibration import summary as evaluation_summary
from speechid.truth import read_clip_truth, read_truth


@dataclass(frozen=True)
class DemoConfig:
    """Size knobs; the defaults finish in about 5 minutes on 2 quiet CPU cores (10 on busy ones)."""

    speakers: int = 100
    # 24 clips a voice: client_id merges need about a dozen clips an id to be decided with this model
    # (the README's demo levers: 12 clips and 4 epochs gave merge precision 44%, 24 clips and 8 epochs 100%).
    clips_per_speaker: int = 24
    heldout_clips: int = 24  # per dev/test voice: calibration measures groups of up to 12 clips
    aliases: int = 8  # test voices under two client_ids of 12 clips each
    # test voices' clips filed under another test voice's client_id (1% of the clips): the flags' precision
    # and recall against them, and the share of the other clips flagged, are the demo's mislabel figures
    mislabels: int = 24
    seed: int = 0
    # 320 steps: at 160 (test EER ~5%) the closest pairs of training voices still sat within the merge
    # point; see the README's demo levers.
    epochs: int = 8
    steps_per_epoch: int = 40
    speakers_per_batch: int = 16
    clips_per_speaker_batch: int = 4
    crop_seconds: float = 1.0
    learning_rate: float = 1e-3
    # The seed's triplet loss plus additive angular margin softmax (the real-voice recipe's loss): client_id
    # merges 100%/100% on seeds 0 and 1, where triplet alone gave 100% and 67% precision (README, demo levers).
    loss: str = "triplet+aam"
    max_dev_clips: int = 400  # every dev clip (10 voices x 24): the operating points are measured on them
    trials: int = 4000
    workers: int = 2


RUN_RECORD = "demo.json"
REPORT = "report.html"


def workdir_paths(workdir: str) -> dict[str, str]:
    """Where each stage of a demo run in ``workdir`` writes (and where the report reads)."""
    workdir = os.path.abspath(workdir)
    paths = {k: os.path.join(workdir, k) for k in ("corpus", "data", "model", "eval", "embeddings", "index", "dedup")}
    paths["dedup_seed"] = os.path.join(workdir, f"dedup-{THRESHOLD:g}")  # 0.83 as the clip threshold
    paths["run"] = os.path.join(workdir, RUN_RECORD)
    return paths


@dataclass
class DemoResult:
    workdir: str
    figures: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    report: str = ""


def _stage(log: Callable[[str], None], seconds: dict, number: int, total: int, name: str):
    """Context manager printing a stage header and its wall time."""

    class _Timer:
        def __enter__(self):
            log(f"[{number}/{total}] {name} ...")
            self.t0 = time.perf_counter()
            return self

        def __exit__(self, exc_type, exc, tb):
            seconds[name] = round(time.perf_counter() - self.t0, 1)
            if exc_type is None:
                log(f"[{number}/{total}] {name} done in {seconds[name]:.1f} s")
            return False

    return _Timer()


def _pick_query_clip(tarball: str, aliases_tsv: str, workdir: str) -> tuple[str, str, str]:
    """A clip of the first aliased speaker (not one filed under another voice's id), copied out of the
    release ``tarball`` for ``speechid query``.

    Returns (path, its client_id, the true speaker)."""
    import csv
    import tarfile

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


def run_demo(workdir: str, config: DemoConfig = DemoConfig(), log: Callable[[str], None] = print) -> DemoResult:
    """Run every stage into ``workdir``; returns the figures the summary shows (also in report.html)."""
    from speechid import Encoder
    from speechid.corpora import synth
    from speechid.model import evaluation, trainer
    from speechid.pipelines.embed import embed_corpus
    from speechid.pipelines.prep import prepare

    os.makedirs(workdir, exist_ok=True)
    workdir = os.path.abspath(workdir)
    paths = workdir_paths(workdir)
    res = DemoResult(workdir)
    sec, figs, total = res.seconds, res.figures, 8
    figs["config"] = asdict(config)
    beam_args = ["--direct_running_mode", "multi_processing", "--direct_num_workers", str(config.workers)]

    with _stage(log, sec, 1, total, "synth: generate a Common Voice release"):
        corpus = synth.make_corpus(paths["corpus"], speakers=config.speakers,
                                   clips_per_speaker=config.clips_per_speaker,
                                   heldout_clips=config.heldout_clips, seed=config.seed, aliases=config.aliases,
                                   mislabels=config.mislabels, plant_faults=True, workers=config.workers)
        log("    " + corpus.summary())

    with _stage(log, sec, 2, total, "prep: Beam DirectRunner + tf.Transform"):
        prep = prepare([corpus.tarball], paths["data"], pipeline_args=beam_args)
        m = prep.manifest
        figs["records"] = dict(m["records"])
        figs["failures"] = dict(m["failures"])
        figs["prep_balanced"] = prep.balanced
        log(f"    records {m['records']}; failures {m['failures'] or 'none'}; reconciles: {prep.balanced}")

    loss_name = "triplet semi-hard" if config.loss == "triplet" else config.loss
    with _stage(log, sec, 3, total, f"train: LSTM + {loss_name} loss on CPU"):
        if os.path.exists(paths["model"]):
            shutil.rmtree(paths["model"])  # a fresh model each run, not a resumed one
        curve = figs["training_curve"] = []
        t = trainer.train(paths["data"], paths["model"], epochs=config.epochs,
                          steps_per_epoch=config.steps_per_epoch, speakers_per_batch=config.speakers_per_batch,
                          clips_per_speaker=config.clips_per_speaker_batch, crop_seconds=config.crop_seconds,
                          learning_rate=config.learning_rate, max_dev_clips=config.max_dev_clips, loss=config.loss,
                          seed=config.seed, log=lambda s: log("    " + s),
                          on_epoch_end=lambda epoch, s: curve.append({"epoch": epoch, **s}))
        figs["train_seconds"] = round(t["wall_s"], 1)
        figs["best_dev_eer"] = t["best_dev_eer"]
        figs["trainable_parameters"] = t["trainable_parameters"]

    with _stage(log, sec, 4, total, "evaluate: test speakers never seen in training"):
        # trials by true voice: aliases and mislabelled clips are test speakers'
        truth, clip_truth = read_truth(corpus.aliases_tsv), read_clip_truth(corpus.aliases_tsv)
        ev = evaluation.evaluate(paths["model"], paths["data"], split="test", trials=config.trials,
                                 seed=config.seed, output_dir=paths["eval"], truth=truth, clip_truth=clip_truth,
                                 log=lambda s: log("    " + s))
        figs["eval"] = ev
        from speechid.model.export import operating_points, read_config

        model_config = read_config(paths["model"])
        ops = operating_points(model_config, paths["model"])
        figs["operating_points"] = ops.to_dict() if ops else None
        figs["default_threshold"] = float(model_config["threshold"])
        figs["model_id"] = model_config.get("model_id")
        figs["training"] = model_config.get("training", {})
        if ops:
            log("    " + evaluation_summary(ops).replace("\n", "\n    "))

    with _stage(log, sec, 5, total, "embed: Beam RunInference over every prepared clip"):
        em = embed_corpus(paths["model"], [paths["data"]], paths["embeddings"], pipeline_args=beam_args)
        figs["embedded"] = em["clips_written"]
        log(f"    {em['clips_written']} clips embedded, {em['clips_failed']} failed")

    with _stage(log, sec, 6, total, "index: FAISS"):
        index_stage(paths, ops, model_config, figs, log)

    with _stage(log, sec, 7, total, "dedup: client_id merges, mislabelled clips, clip clusters"):
        dedup_stage(paths, truth, figs, log, clip_truth)

    with _stage(log, sec, 8, total, "query: who does this clip most resemble?"):
        clip, client_id, true_speaker = _pick_query_clip(corpus.tarball, corpus.aliases_tsv, workdir)
        query_stage(clip, client_id, true_speaker, truth, Encoder.load(paths["model"]), paths, figs, log)

    return finish(res, figs, sec, paths, workdir)


def index_stage(paths: dict, ops, model_config: dict, figs: dict, log) -> None:
    """FAISS over the run's embeddings, carrying the model's operating points."""
    from speechid.indexing import build_index

    summary = build_index(paths["embeddings"], paths["index"], operating_points=ops,
                          operating_points_model_id=model_config.get("model_id"))
    figs["index"] = str(summary)
    log(f"    {summary}")


def dedup_stage(paths: dict, truth: dict, figs: dict, log, clip_truth: dict | None = None) -> None:
    """Dedup against ``truth`` (and ``clip_truth``, the mislabelled clips) at the model's operating points,
    and again with the original project's 0.83 as the clip threshold (client_id merges and mislabel flags stay
    at the speaker level: 0.83 is a distance between two clips)."""
    from speechid.indexing import dedup

    dd = dedup(paths["index"], paths["dedup"], truth=truth, clip_truth=clip_truth)
    figs["dedup"] = {k: asdict(v) for k, v in dd.scores.items()}
    figs["dedup_curve"] = dd.summary.get("merge_curve", [])
    figs["dedup_rule"] = dd.summary.get("merge_rule")
    with open(os.path.join(paths["dedup"], "summary.txt"), encoding="utf-8") as f:
        figs["dedup_summary"] = f.read()
    for k, v in dd.scores.items():
        log(f"    at the model's operating points: {k}: {v}")
    seed = dedup(paths["index"], paths["dedup_seed"], truth=truth, clip_truth=clip_truth, threshold=THRESHOLD)
    figs["dedup_seed"] = {k: asdict(v) for k, v in seed.scores.items()}
    for k, v in seed.scores.items():
        log(f"    with {THRESHOLD:g} as the clip threshold: {k}: {v}")


def query_stage(clip: str, client_id: str, true_speaker: str, truth: dict, enc, paths: dict, figs: dict, log) -> None:
    """Who does ``clip`` most resemble? The three nearest speakers, beside the clip's true identity."""
    from speechid.indexing import SpeakerIndex

    by_speaker = SpeakerIndex.load(paths["index"]).query_file(clip, enc, k=3, by="speaker")[0]
    figs["query"] = {
        "clip": os.path.basename(clip),
        "client_id": client_id,
        "true_speaker": true_speaker,
        "aliases_of_true_speaker": sorted(c for c, s in truth.items() if s == true_speaker),
        "matches": [m.to_dict() for m in by_speaker.matches],
    }
    for m in by_speaker.matches:
        log(f"    {m.rank}. {short_id(m.speaker_id)} {m.explanation}")


def finish(res, figs: dict, sec: dict, paths: dict, workdir: str):
    """Record the run's figures (stage times in pipeline order) and write its report."""
    figs["seconds"] = dict(sec)
    tmp = paths["run"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(figs, f, indent=2, default=str)
    os.replace(tmp, paths["run"])
    res.report = rebuild_report(workdir)
    return res


def rebuild_report(workdir: str) -> str:
    """Write ``<workdir>/report.html`` from a finished run's outputs (synthetic or ``--real``); returns its path."""
    from speechid.app import demo_real

    paths = workdir_paths(workdir)
    if not os.path.exists(paths["run"]):
        raise ConfigError(f"{workdir}: no {RUN_RECORD}, not a finished demo run (run `speechid demo` first)")
    with open(paths["run"], encoding="utf-8") as f:
        run = json.load(f)
    if demo_real.is_real_run(run):
        paths = demo_real.workdir_paths(workdir)
    return report.build(paths, os.path.join(os.path.abspath(workdir), REPORT), run=run)


def summary_rows(res: DemoResult) -> list[tuple[str, str]]:
    f = res.figures
    ev = f["eval"]
    fails = ", ".join(f"{k} {v}" for k, v in sorted(f["failures"].items())) or "none"

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    spk = f["dedup"].get("speakers", {})
    clips = f["dedup"].get("clips", {})
    seed_spk = f["dedup_seed"].get("speakers", {})
    seed_clips = f["dedup_seed"].get("clips", {})
    t = f["default_threshold"]
    q = f["query"]
    best = q["matches"][0] if q["matches"] else None
    alias_hit = best is not None and best["speaker_id"] in q["aliases_of_true_speaker"]
    return [
        ("clips prepared", ", ".join(f"{k} {v}" for k, v in f["records"].items())),
        ("clips failed (by reason)", fails),
        ("prep counts reconcile", str(f["prep_balanced"])),
        ("training time", f"{f['train_seconds']:.0f} s ({f['trainable_parameters']:,} parameters)"),
        ("test EER", pct(ev["eer"])),
        ("default threshold (FAR 1.7% on dev speakers: the original project's specificity)",
         f"{t:.3f} (the original project used {THRESHOLD:g})"),
        (f"sensitivity / specificity at {t:.3f} (test speakers)",
         f"{pct(ev.get('sensitivity'))} / {pct(ev.get('specificity'))}"),
        ("minDCF (p_target 0.01 / 0.05)", f"{ev['min_dcf']['0.01']:.3f} / {ev['min_dcf']['0.05']:.3f}"),
        (f"FRR at FAR {ev['target_far']:g}", pct(ev["frr_at_target_far"])),
        ("dedup at the default: client_id merges vs planted aliases",
         f"precision {pct(spk.get('precision'))}, recall {pct(spk.get('recall'))}"),
        ("dedup at the default: clip clusters vs true speakers",
         f"precision {pct(clips.get('precision'))}, recall {pct(clips.get('recall'))}"),
        *_mislabel_rows(f["dedup"].get("mislabels"), f["dedup"].get("mislabels_resembling")),
        (f"dedup with {THRESHOLD:g} as the clip threshold: client_id merges / clip clusters",
         f"precision {pct(seed_spk.get('precision'))}, recall {pct(seed_spk.get('recall'))} / "
         f"precision {pct(seed_clips.get('precision'))}, recall {pct(seed_clips.get('recall'))}"),
        ("example query",
         f"{q['clip']} -> {short_id(best['speaker_id'])} at {best['euclidean_distance']:.3f} ({best['verdict']}); "
         f"{'an alias of the same voice' if alias_hit else 'not one of its aliases'}" if best else "no match"),
    ]


def _mislabel_rows(flags: dict | None, resembling: dict | None = None) -> list[tuple[str, str]]:
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
