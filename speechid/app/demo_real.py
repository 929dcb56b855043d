"""``speechid demo --real``: the whole chain on real voice acting, beside synthetic voices, in one call.

It needs the voice acting of three Debian packages (installed by the user; nothing is downloaded)::

    apt-get install flight-of-the-amazon-queen drascula drascula-spanish

and runs the recommended recipe of README "Quality on real voices" (FOTAQ train characters + synthetic
speakers, ``--augment standard --loss triplet+aam``, 16 speakers x 4 clips x 1.5 s) under a CPU time
budget. Every stage writes where a user would find it::

    <workdir>/corpus/           the FOTAQ release; ``aliases`` held-out characters under two client_ids
                                each (aliases.tsv: the dedup ground truth)
    <workdir>/corpus-synth/     a synthetic release (no aliases), trained on beside FOTAQ's train characters
    <workdir>/corpus-drascula/  Drascula's English and Spanish casts, never trained on (cross-corpus)
    <workdir>/data/             prep of FOTAQ + synthetic together (one speaker vocabulary)
    <workdir>/model/            the exported model
    <workdir>/eval/             FOTAQ held-out characters: metrics.json and the pictures (the headline)
    <workdir>/eval-synth/       synthetic test speakers: metrics.json
    <workdir>/eval-drascula/    Drascula, per cast: metrics-en.json, metrics-es.json
    <workdir>/embeddings/       every held-out (dev + test) clip of both corpora, Parquet
    <workdir>/index/, dedup/, dedup-0.83/, demo.json, report.html   as in the synthetic demo

Trial lists score speakers by their true label (aliases.tsv), so a planted alias never turns a
same-voice pair into a "different" trial. Drascula clips are decoded straight from its archives (at most
``max_clips_per_speaker`` per character, a seeded sample): it is scored, never prepped or trained on.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from speechid.config import THRESHOLD
from speechid.errors import ConfigError

PACKAGES = ("flight-of-the-amazon-queen", "drascula", "drascula-spanish")
INSTALL = "apt-get install " + " ".join(PACKAGES)
MODE = "real"
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "it": "Italian"}


@dataclass(frozen=True)
class RealDemoConfig:
    """Size knobs; the defaults are recipe E of bench_quality with a 14-minute training budget (2 CPU cores)."""

    aliases: int = 4  # planted among FOTAQ's 6 held-out test characters
    synth_speakers: int = 100
    synth_clips_per_speaker: int = 12
    min_clips: int = 10  # FOTAQ characters with fewer clips train only (the corpus command's default)
    dev_speakers: int | None = None  # None: the corpus command's default shares
    test_speakers: int | None = None
    train_minutes: float = 14.0  # stops after the epoch that crosses it; the best dev-EER epoch is exported
    max_epochs: int = 60
    steps_per_epoch: int = 50
    speakers_per_batch: int = 16
    clips_per_speaker_batch: int = 4
    crop_seconds: float = 1.5
    learning_rate: float = 1e-3
    loss: str = "triplet+aam"
    augment: str = "standard"
    max_dev_clips: int = 400
    trials: int = 20_000
    max_clips_per_speaker: int = 40  # Drascula trial lists
    drascula: bool = True  # score the cross-corpus lists when the Drascula packages are installed
    seed: int = 0
    workers: int = 2


@dataclass(frozen=True)
class RealSources:
    """Where the packages' files are: FOTAQ's ``queen.1c``; Drascula's root folder and installed languages
    (none: the cross-corpus lists are left out)."""

    fotaq: str
    drascula_root: str = ""
    drascula_languages: tuple[str, ...] = ()


def find_sources(fotaq_source: str | None = None, drascula_root: str | None = None) -> RealSources:
    """The installed packages' files, or ``ConfigError`` (one line naming the packages to install) when
    FOTAQ's is missing. Drascula is optional: without it the cross-corpus lists are left out."""
    from speechid.corpora import drascula, fotaq

    try:
        queen = fotaq.resolve_source(fotaq_source)
    except ConfigError:
        path = fotaq_source or fotaq.DEFAULT_SOURCE
        raise ConfigError(f"--real needs the voice acting of Debian packages ({path} not found): "
                          f"{INSTALL}") from None
    root = drascula_root or drascula.DEFAULT_ROOT
    try:
        languages = tuple(sorted(drascula.resolve_languages(root, None)))
    except ConfigError:
        languages = ()
    return RealSources(queen, root, languages)


def workdir_paths(workdir: str) -> dict[str, str]:
    """Where each stage of a real demo run in ``workdir`` writes (the synthetic demo's keys, and more)."""
    from speechid.app.demo import workdir_paths as synthetic_paths

    workdir = os.path.abspath(workdir)
    paths = synthetic_paths(workdir)
    for key in ("corpus_synth", "corpus_drascula", "eval_synth", "eval_drascula"):
        paths[key] = os.path.join(workdir, key.replace("_", "-"))
    return paths


def _truth(aliases_tsv: str) -> dict[str, str]:
    from speechid.corpora.synth import read_truth

    return read_truth(aliases_tsv)


def score_list(emb: np.ndarray, labels: list[str], threshold: float, trials: int, seed: int) -> tuple[dict, tuple]:
    """Seeded balanced trials over ``labels`` (true speakers): (metrics, (same distances, different distances))."""
    from speechid.model.evaluation import make_trials, verification_metrics

    pairs, same = make_trials(labels, trials, seed=seed)
    d = np.linalg.norm(emb[pairs[:, 0]] - emb[pairs[:, 1]], axis=1)
    metrics = verification_metrics(d[same], d[~same], threshold=threshold)
    metrics.update(clips=len(labels), speakers=len(set(labels)), seed=seed)
    return metrics, (d[same], d[~same])


def _write_metrics(folder: str, name: str, metrics: dict, inputs: list[str]) -> None:
    from speechid import outputs

    with outputs.staged(folder, "evaluate", inputs) as staging:
        outputs.write_json(os.path.join(staging, name), metrics)


def run_real_demo(workdir: str, config: RealDemoConfig = RealDemoConfig(), sources: RealSources | None = None,
                  log: Callable[[str], None] = print):
    """Run every stage into ``workdir``; returns a ``speechid.app.demo.DemoResult`` (figures also in report.html).

    ``sources`` defaults to ``find_sources()``: a missing FOTAQ package is a ``ConfigError`` before any work."""
    sources = sources or find_sources()
    from speechid import Encoder, outputs
    from speechid.app.demo import DemoResult, _pick_query_clip, _stage, dedup_stage, finish, index_stage, query_stage
    from speechid.corpora import drascula, fotaq, synth
    from speechid.corpora.release import sample_clips, write_release
    from speechid.model import evaluation, trainer
    from speechid.model.data import load_clips
    from speechid.model.export import operating_points, read_config
    from speechid.pipelines.embed import embed_corpus
    from speechid.pipelines.prep import prepare
    from speechid.schema import record_pattern

    os.makedirs(workdir, exist_ok=True)
    workdir = os.path.abspath(workdir)
    paths = workdir_paths(workdir)
    res = DemoResult(workdir)
    sec, figs = res.seconds, res.figures
    use_drascula = config.drascula and bool(sources.drascula_languages)
    total = 10 if use_drascula else 9
    n = iter(range(1, total + 1))
    figs["mode"] = MODE
    figs["config"] = asdict(config)
    figs["sources"] = asdict(sources)
    beam_args = ["--direct_running_mode", "multi_processing", "--direct_num_workers", str(config.workers)]
    real: dict = {"aliases": config.aliases, "lists": []}
    figs["real"] = real

    with _stage(log, sec, next(n), total, "corpus: FOTAQ voice acting, aliases planted among held-out characters"):
        fq = write_release(paths["corpus"], fotaq.RELEASE, fotaq.clips(sources.fotaq), seed=config.seed,
                           dev_speakers=config.dev_speakers, test_speakers=config.test_speakers,
                           min_clips=config.min_clips, aliases=config.aliases, sources=[sources.fotaq],
                           caveat=fotaq.CAVEAT)
        real["fotaq"] = {k: fq.manifest[k] for k in ("written", "failed", "failed_by_reason", "hours", "splits",
                                                       "aliased_speakers")}
        log("    " + fq.summary().split("; speaker table")[0])

    with _stage(log, sec, next(n), total, "synth: synthetic speakers to train on beside FOTAQ's"):
        sy = synth.make_corpus(paths["corpus_synth"], speakers=config.synth_speakers,
                               clips_per_speaker=config.synth_clips_per_speaker, seed=config.seed,
                               workers=config.workers)
        log("    " + sy.summary())

    if use_drascula:
        with _stage(log, sec, next(n), total, "corpus: Drascula voice acting (never trained on)"):
            languages = list(sources.drascula_languages)
            dr = write_release(paths["corpus_drascula"], drascula.RELEASE,
                               drascula.clips(sources.drascula_root, languages), seed=config.seed,
                               sources=[os.path.join(sources.drascula_root, lang) for lang in languages],
                               caveat=drascula.CAVEAT)
            real["drascula"] = {k: dr.manifest[k] for k in ("written", "failed", "hours", "archives")}
            log("    " + dr.summary().split("; speaker table")[0])
    else:
        log("    Drascula not installed (apt-get install drascula drascula-spanish): no cross-corpus lists")

    with _stage(log, sec, next(n), total, "prep: FOTAQ + synthetic, Beam DirectRunner + tf.Transform"):
        prep = prepare([*fq.archives, sy.tarball], paths["data"], pipeline_args=beam_args)
        m = prep.manifest
        figs["records"] = dict(m["records"])
        figs["failures"] = dict(m["failures"])
        figs["prep_balanced"] = prep.balanced
        log(f"    records {m['records']}; failures {m['failures'] or 'none'}; reconciles: {prep.balanced}")

    with _stage(log, sec, next(n), total, f"train: recipe E ({config.loss}, augment {config.augment}), "
                                          f"{config.train_minutes:g} min budget"):
        if os.path.exists(paths["model"]):
            shutil.rmtree(paths["model"])
        curve = figs["training_curve"] = []
        t = trainer.train(paths["data"], paths["model"], epochs=config.max_epochs,
                          steps_per_epoch=config.steps_per_epoch, speakers_per_batch=config.speakers_per_batch,
                          clips_per_speaker=config.clips_per_speaker_batch, crop_seconds=config.crop_seconds,
                          learning_rate=config.learning_rate, loss=config.loss, augment=config.augment,
                          time_budget_s=60 * config.train_minutes, max_dev_clips=config.max_dev_clips,
                          seed=config.seed, log=lambda s: log("    " + s),
                          on_epoch_end=lambda epoch, s: curve.append({"epoch": epoch, **s}))
        figs["train_seconds"] = round(t["wall_s"], 1)
        figs["best_dev_eer"] = t["best_dev_eer"]
        figs["trainable_parameters"] = t["trainable_parameters"]
        figs["optimizer_steps"] = t["optimizer_steps"]
        model_config = read_config(paths["model"])
        ops = operating_points(model_config, paths["model"])
        figs["operating_points"] = ops.to_dict() if ops else None
        figs["default_threshold"] = float(model_config["threshold"])
        figs["model_id"] = model_config.get("model_id")
        figs["training"] = model_config.get("training", {})

    fotaq_truth, synth_truth = _truth(fq.aliases_tsv), _truth(sy.aliases_tsv)
    with _stage(log, sec, next(n), total, "evaluate: real and synthetic voices the model never trained on"):
        enc = Encoder.load(paths["model"])
        threshold = enc.threshold
        waves, cids, _ = load_clips(paths["data"], "test")
        emb = enc.embed_waveforms(waves)
        lists = []  # (key, voices, name, relation, embeddings, true labels)
        for key, voices, name, relation, truth in (
            ("fotaq_heldout", "real", "FOTAQ held-out characters", "the game trained on, characters never trained on",
             fotaq_truth),
            ("synth_test", "synthetic", "synthetic test speakers", "the synthesiser trained on, voices never "
                                                                   "trained on", synth_truth),
        ):
            idx = [i for i, c in enumerate(cids) if c in truth]
            lists.append((key, voices, name, relation, emb[idx], [truth[cids[i]] for i in idx]))
        for archive in dr.archives if use_drascula else []:
            lang = archive.rsplit("-", 1)[-1].split(".")[0]  # drascula-<locale>.tar.gz
            dw, dl, _ = sample_clips(archive, ["validated.tsv"], enc.sample_rate, config.max_clips_per_speaker,
                                  config.seed)
            lists.append((f"drascula_{lang}", "real", f"Drascula, {LANGUAGE_NAMES.get(lang, lang)} cast",
                          "another game: cross-corpus, never trained on", enc.embed_waveforms(dw), dl))
        drascula_metrics = {}
        for key, voices, name, relation, e, labels in lists:
            metrics, (same, diff) = score_list(e, labels, threshold, config.trials, config.seed)
            metrics.update(list=key, voices=voices, name=name)
            real["lists"].append({"key": key, "voices": voices, "name": name, "relation": relation,
                                  **{k: metrics[k] for k in ("eer", "min_dcf", "sensitivity", "specificity",
                                                             "threshold", "speakers", "clips", "trials")}})
            log(f"    {voices} voices, {name}: EER {100 * metrics['eer']:.1f}% ({metrics['speakers']} speakers, "
                f"{metrics['clips']} clips, {metrics['trials']} trials)")
            if key == "fotaq_heldout":
                metrics.update(split="test", data_dir=paths["data"], model_id=enc.config.get("model_id"))
                with outputs.staged(paths["eval"], "evaluate", [paths["model"], paths["data"]]) as folder:
                    title = f"{name}: EER {100 * metrics['eer']:.2f}%, {metrics['trials']} trials"
                    figures = evaluation.plot_figures(same, diff, threshold, folder, title)
                    metrics["figures"] = [os.path.basename(p) for p in figures]
                    evaluation.write_json(os.path.join(folder, evaluation.METRICS_JSON), metrics)
                figs["eval"] = metrics
            elif key == "synth_test":
                _write_metrics(paths["eval_synth"], evaluation.METRICS_JSON, metrics, [paths["model"], paths["data"]])
            else:
                drascula_metrics[f"metrics-{key.split('_')[1]}.json"] = metrics
        if drascula_metrics:
            with outputs.staged(paths["eval_drascula"], "evaluate", [paths["model"], paths["corpus_drascula"]]) as f:
                for name, metrics in drascula_metrics.items():
                    outputs.write_json(os.path.join(f, name), metrics)

    with _stage(log, sec, next(n), total, "embed: Beam RunInference over every held-out clip"):
        inputs = [record_pattern(paths["data"], split) for split in ("dev", "test")]
        em = embed_corpus(paths["model"], inputs, paths["embeddings"], pipeline_args=beam_args)
        figs["embedded"] = em["clips_written"]
        log(f"    {em['clips_written']} clips embedded, {em['clips_failed']} failed")

    with _stage(log, sec, next(n), total, "index: FAISS"):
        index_stage(paths, ops, model_config, figs, log)

    with _stage(log, sec, next(n), total, "dedup: client_id merges vs the aliases planted among FOTAQ characters"):
        dedup_stage(paths, {**synth_truth, **fotaq_truth}, figs, log)

    with _stage(log, sec, next(n), total, "query: who does this FOTAQ clip most resemble?"):
        clip, client_id, true_speaker = _pick_query_clip(fq.archives[0], fq.aliases_tsv, workdir)
        query_stage(clip, client_id, true_speaker, fotaq_truth, enc, paths, figs, log)

    return finish(res, figs, sec, paths, workdir)


def summary_rows(res) -> list[tuple[str, str]]:
    """The CLI's summary table of a real run: every row says which voices it is about."""
    from speechid.app.htmlpage import pct

    f = res.figures
    rows = [("clips prepared (FOTAQ + synthetic)", ", ".join(f"{k} {v}" for k, v in f["records"].items())),
            ("training", f"{f['train_seconds']:.0f} s, {f['optimizer_steps']} steps "
                         f"({f['trainable_parameters']:,} parameters)"),
            ("default threshold (seed operating point on dev speakers)", f"{f['default_threshold']:.3f}")]
    for item in f["real"]["lists"]:
        rows.append((f"{item['voices']} voices: {item['name']} EER",
                     f"{pct(item['eer'])} ({item['speakers']} speakers, {item['clips']} clips; {item['relation']})"))
    spk = f["dedup"].get("speakers", {})
    seed_spk = f["dedup_seed"].get("speakers", {})
    rows += [
        (f"real voices: dedup vs {f['real']['aliases']} aliased FOTAQ characters, at the default",
         f"precision {pct(spk.get('precision'))}, recall {pct(spk.get('recall'))}"),
        (f"real voices: the same with {THRESHOLD:g} as the clip threshold",
         f"precision {pct(seed_spk.get('precision'))}, recall {pct(seed_spk.get('recall'))}"),
        ("wall time", f"{sum(f['seconds'].values()) / 60:.1f} min"),
    ]
    return rows


def is_real_run(run: dict) -> bool:
    return run.get("mode") == MODE
