"""``speechid demo --real``: the whole chain on real voice acting, beside synthetic voices, in one call.

It needs the voice acting of Debian packages (installed by the user; nothing is downloaded). FOTAQ is the
one it cannot do without::

    apt-get install flight-of-the-amazon-queen                      # required: the aliases are planted here
    apt-get install beneath-a-steel-sky ktuberling-data             # more real voices to train on
    apt-get install drascula drascula-spanish drascula-italian \
        asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav klettres-data   # scored, never trained on

and runs the recommended recipe of README "Quality on real voices" (every installed training corpus of
``TRAIN_RECIPES`` + FOTAQ's train characters + synthetic speakers, ``--augment standard --loss
triplet+aam``, 16 speakers x 4 clips x 1.5 s) under a CPU time budget. The headline lists are the corpora
of ``HELD_OUT_RECIPES`` (other games, telephone prompts, other languages): the model never trained on
them, so they say how it does on voices recorded elsewhere. Every stage writes where a user would find it::

    <workdir>/corpus/           the FOTAQ release; ``aliases`` held-out characters under two client_ids
                                each (aliases.tsv: the dedup ground truth)
    <workdir>/corpus-<recipe>/  one release per other installed corpus (bass, ktuberling: trained on;
                                drascula, asterisk, klettres: never trained on)
    <workdir>/corpus-synth/     a synthetic release (no aliases), trained on beside the real voices
    <workdir>/data/             prep of every training corpus together (one speaker vocabulary)
    <workdir>/model/            the exported model
    <workdir>/eval-cross/       the held-out corpora, one metrics-<list>.json per list (the headline)
    <workdir>/eval/             FOTAQ held-out characters: metrics.json and the pictures (in-domain)
    <workdir>/eval-synth/       synthetic test speakers: metrics.json
    <workdir>/embeddings/       every held-out (dev + test) clip of the training corpora, Parquet
    <workdir>/index/, dedup/, dedup-0.83/, demo.json, report.html   as in the synthetic demo

Trial lists score speakers by their true label (aliases.tsv), so a planted alias never turns a
same-voice pair into a "different" trial. Held-out corpora are decoded straight from their archives (at
most ``max_clips_per_speaker`` per speaker, a seeded sample): scored, never prepped or trained on.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from speechid.config import THRESHOLD
from speechid.errors import ConfigError
from speechid.truth import read_clip_truth, read_truth

PACKAGES = ("flight-of-the-amazon-queen",)
INSTALL = "apt-get install " + " ".join(PACKAGES)
MODE = "real"
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "it": "Italian"}
# Real corpora trained on beside FOTAQ, and corpora only ever scored (each used when its package is
# installed; "+uncredited": the recipe's --uncredited voices too). README "Quality on real voices" measures
# why these: more real speakers helped the held-out corpora, and the held-out ones share nothing with them.
TRAIN_RECIPES = ("bass", "ktuberling")
HELD_OUT_RECIPES = ("drascula", "asterisk", "klettres")
CORPUS_NAMES = {"drascula": "Drascula", "asterisk": "Asterisk prompts", "klettres": "KLettres",
                "bass": "Beneath a Steel Sky", "ktuberling": "KTuberling", "fotaq": "FOTAQ"}


@dataclass(frozen=True)
class RealDemoConfig:
    """Size knobs; the defaults are the recommended recipe of README "Quality on real voices" with a 14-minute
    training budget (2 CPU cores)."""

    aliases: int = 4  # planted among FOTAQ's 6 held-out test characters
    mislabels: int = 8  # clips of FOTAQ test characters filed under another test character's client_id
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
    seed: int = 0
    workers: int = 2


@dataclass(frozen=True)
class RealSources:
    """Where the packages' files are: FOTAQ's ``queen.1c``; the other recipes installed, trained on
    (``training``) and only scored (``held_out``), by name (see ``speechid.corpora.recipes``); ``roots``:
    a recipe's folder when not the package's (tests)."""

    fotaq: str
    training: tuple[str, ...] = ()
    held_out: tuple[str, ...] = ()
    roots: tuple[tuple[str, str], ...] = ()

    def root(self, recipe: str) -> str | None:
        return dict(self.roots).get(recipe.partition("+")[0])


def _installed(recipe: str, root: str | None) -> bool:
    from speechid.corpora import recipes

    base, _, option = recipe.partition("+")
    try:
        recipes.source(base, root, **({"uncredited": True} if option == "uncredited" else {}))
    except ConfigError:
        return False
    return True


def find_sources(fotaq_source: str | None = None, roots: dict[str, str] | None = None,
                 training: tuple[str, ...] = TRAIN_RECIPES, held_out: tuple[str, ...] = HELD_OUT_RECIPES
                 ) -> RealSources:
    """The installed packages' files, or ``ConfigError`` (one line naming the package to install) when
    FOTAQ's is missing. The other recipes are optional: each one not installed is left out."""
    from speechid.corpora import fotaq

    try:
        queen = fotaq.resolve_source(fotaq_source)
    except ConfigError:
        path = fotaq_source or fotaq.DEFAULT_SOURCE
        raise ConfigError(f"--real needs the voice acting of Debian packages ({path} not found): "
                          f"{INSTALL}") from None
    roots = dict(roots or {})
    return RealSources(queen, tuple(r for r in training if _installed(r, roots.get(r.partition("+")[0]))),
                       tuple(r for r in held_out if _installed(r, roots.get(r.partition("+")[0]))),
                       tuple(sorted(roots.items())))


def workdir_paths(workdir: str) -> dict[str, str]:
    """Where each stage of a real demo run in ``workdir`` writes (the synthetic demo's keys, and more)."""
    from speechid.app.demo import workdir_paths as synthetic_paths

    workdir = os.path.abspath(workdir)
    paths = synthetic_paths(workdir)
    for key in ("corpus_synth", "eval_synth", "eval_cross"):
        paths[key] = os.path.join(workdir, key.replace("_", "-"))
    return paths


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


def _write_recipe(folder: str, recipe: str, sources: RealSources, seed: int):
    """Write one installed recipe's release into ``folder`` (the ``speechid corpus`` defaults)."""
    from speechid.corpora import recipes
    from speechid.corpora.release import write_release

    base, _, option = recipe.partition("+")
    src = recipes.source(base, sources.root(recipe), **({"uncredited": True} if option == "uncredited" else {}))
    return write_release(folder, src.release, src.clips, seed=seed, sources=src.paths, caveat=src.caveat)


def _trial_lists(recipe: str, archives: list[str]) -> list[tuple[str, str, list[str]]]:
    """(key, name, archives) of each trial list of held-out ``recipe``: one list per language cast for
    Drascula (each cast is its own set of actors), one list over every archive for the others."""
    base = recipe.partition("+")[0]
    corpus = CORPUS_NAMES.get(base, base)
    if base != "drascula":
        return [(base, corpus, archives)]
    out = []
    for archive in archives:
        lang = archive.rsplit("-", 1)[-1].split(".")[0]  # drascula-<locale>.tar.gz
        out.append((f"{base}_{lang}", f"{corpus}, {LANGUAGE_NAMES.get(lang, lang)} cast", [archive]))
    return out


def run_real_demo(workdir: str, config: RealDemoConfig = RealDemoConfig(), sources: RealSources | None = None,
                  log: Callable[[str], None] = print):
    """Run every stage into ``workdir``; returns a ``speechid.app.demo.DemoResult`` (figures also in report.html).

    ``sources`` defaults to ``find_sources()``: a missing FOTAQ package is a ``ConfigError`` before any work."""
    sources = sources or find_sources()
    from speechid import Encoder, outputs
    from speechid.app.demo import DemoResult, _pick_query_clip, _stage, dedup_stage, finish, index_stage, query_stage
    from speechid.corpora import fotaq, synth
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
    for recipe in (*sources.training, *sources.held_out):
        paths[f"corpus_{recipe}"] = os.path.join(workdir, "corpus-" + recipe.replace("+", "-"))
    res = DemoResult(workdir)
    sec, figs = res.seconds, res.figures
    total = 9 + bool(sources.training) + bool(sources.held_out)
    n = iter(range(1, total + 1))
    figs["mode"] = MODE
    figs["config"] = asdict(config)
    figs["sources"] = asdict(sources)
    beam_args = ["--direct_running_mode", "multi_processing", "--direct_num_workers", str(config.workers)]
    real: dict = {"aliases": config.aliases, "lists": [], "trained_on": ["fotaq", *sources.training, "synth"],
                  "held_out": list(sources.held_out)}
    figs["real"] = real
    missing = [r for r in (*TRAIN_RECIPES, *HELD_OUT_RECIPES) if r not in (*sources.training, *sources.held_out)]
    if missing:
        log(f"    not installed, left out: {', '.join(missing)} (README \"Real voices, offline\" names the packages)")

    with _stage(log, sec, next(n), total, "corpus: FOTAQ voice acting, aliases planted among held-out characters"):
        fq = write_release(paths["corpus"], fotaq.RELEASE, fotaq.clips(sources.fotaq), seed=config.seed,
                           dev_speakers=config.dev_speakers, test_speakers=config.test_speakers,
                           min_clips=config.min_clips, aliases=config.aliases, sources=[sources.fotaq],
                           caveat=fotaq.CAVEAT, mislabels=config.mislabels)
        real["fotaq"] = {k: fq.manifest[k] for k in ("written", "failed", "failed_by_reason", "hours", "splits",
                                                       "aliased_speakers")}
        log("    " + fq.summary().split("; speaker table")[0])

    releases = {}
    for stage_recipes, what in ((sources.training, "more real voices to train on"),
                                (sources.held_out, "voices recorded elsewhere, never trained on")):
        if not stage_recipes:
            continue
        with _stage(log, sec, next(n), total, f"corpus: {what} ({', '.join(stage_recipes)})"):
            for recipe in stage_recipes:
                releases[recipe] = rel = _write_recipe(paths[f"corpus_{recipe}"], recipe, sources, config.seed)
                real.setdefault("corpora", {})[recipe] = {k: rel.manifest[k] for k in ("written", "failed", "hours")}
                log(f"    {recipe}: " + rel.summary().split("; speaker table")[0])

    with _stage(log, sec, next(n), total, "synth: synthetic speakers to train on beside the real ones"):
        sy = synth.make_corpus(paths["corpus_synth"], speakers=config.synth_speakers,
                               clips_per_speaker=config.synth_clips_per_speaker, seed=config.seed,
                               workers=config.workers)
        log("    " + sy.summary())

    train_archives = [*fq.archives, *(a for r in sources.training for a in releases[r].archives), sy.tarball]
    with _stage(log, sec, next(n), total, f"prep: {' + '.join(real['trained_on'])}, Beam DirectRunner + tf.Transform"):
        prep = prepare(train_archives, paths["data"], pipeline_args=beam_args)
        m = prep.manifest
        figs["records"] = dict(m["records"])
        figs["failures"] = dict(m["failures"])
        figs["prep_balanced"] = prep.balanced
        log(f"    records {m['records']}; failures {m['failures'] or 'none'}; reconciles: {prep.balanced}")

    with _stage(log, sec, next(n), total, f"train: the recommended recipe ({config.loss}, augment {config.augment}), "
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

    fotaq_truth, synth_truth = read_truth(fq.aliases_tsv), read_truth(sy.aliases_tsv)
    fotaq_clip_truth = read_clip_truth(fq.aliases_tsv)  # mislabelled clips: scored by their true voice
    with _stage(log, sec, next(n), total, "evaluate: voices recorded elsewhere first, then held-out speakers of "
                                          "the training corpora"):
        enc = Encoder.load(paths["model"])
        threshold = enc.threshold
        lists = []  # (key, voices, name, relation, embeddings, true labels): cross-corpus first
        for recipe in sources.held_out:
            for key, name, archives in _trial_lists(recipe, releases[recipe].archives):
                waves, labels = [], []
                for archive in archives:
                    w, lab, _ = sample_clips(archive, ["train.tsv", "dev.tsv", "test.tsv"], enc.sample_rate,
                                             config.max_clips_per_speaker, config.seed)
                    waves += w
                    labels += lab
                lists.append((key, "real", name, "cross-corpus: recorded elsewhere, never trained on",
                              enc.embed_waveforms(waves), labels))
        waves, cids, clip_ids = load_clips(paths["data"], "test")
        emb = enc.embed_waveforms(waves)
        for key, voices, name, relation, truth in (
            ("fotaq_heldout", "real", "FOTAQ held-out characters", "in-domain: the game trained on, characters "
                                                                   "never trained on", fotaq_truth),
            ("synth_test", "synthetic", "synthetic test speakers", "in-domain: the synthesiser trained on, voices "
                                                                   "never trained on", synth_truth),
        ):
            idx = [i for i, c in enumerate(cids) if c in truth]
            labels = [fotaq_clip_truth.get(clip_ids[i], truth[cids[i]]) for i in idx]
            lists.append((key, voices, name, relation, emb[idx], labels))
        cross_metrics = {}
        for key, voices, name, relation, e, labels in lists:
            metrics, (same, diff) = score_list(e, labels, threshold, config.trials, config.seed)
            metrics.update(list=key, voices=voices, name=name)
            real["lists"].append({"key": key, "voices": voices, "name": name, "relation": relation,
                                  **{k: metrics[k] for k in ("eer", "min_dcf", "sensitivity", "specificity",
                                                             "threshold", "speakers", "clips", "trials")}})
            log(f"    {voices} voices, {name}: EER {100 * metrics['eer']:.1f}% ({metrics['speakers']} speakers, "
                f"{metrics['clips']} clips, {metrics['trials']} trials; {relation.split(':')[0]})")
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
                cross_metrics[f"metrics-{key}.json"] = metrics
        cross = [item["eer"] for item in real["lists"] if item["relation"].startswith("cross-corpus")]
        real["cross_corpus_mean_eer"] = float(np.mean(cross)) if cross else None
        if cross_metrics:
            held = [paths[f"corpus_{r}"] for r in sources.held_out]
            with outputs.staged(paths["eval_cross"], "evaluate", [paths["model"], *held]) as f:
                for name, metrics in cross_metrics.items():
                    outputs.write_json(os.path.join(f, name), metrics)

    with _stage(log, sec, next(n), total, "embed: Beam RunInference over every held-out clip"):
        inputs = [record_pattern(paths["data"], split) for split in ("dev", "test")]
        em = embed_corpus(paths["model"], inputs, paths["embeddings"], pipeline_args=beam_args)
        figs["embedded"] = em["clips_written"]
        log(f"    {em['clips_written']} clips embedded, {em['clips_failed']} failed")

    with _stage(log, sec, next(n), total, "index: FAISS"):
        index_stage(paths, ops, model_config, figs, log)

    with _stage(log, sec, next(n), total, "dedup: client_id merges and mislabelled clips vs what was planted among "
                                          "FOTAQ characters"):
        dedup_stage(paths, {**synth_truth, **fotaq_truth}, figs, log, clip_truth=fotaq_clip_truth)

    with _stage(log, sec, next(n), total, "query: who does this FOTAQ clip most resemble?"):
        clip, client_id, true_speaker = _pick_query_clip(fq.archives[0], fq.aliases_tsv, workdir)
        query_stage(clip, client_id, true_speaker, fotaq_truth, enc, paths, figs, log)

    return finish(res, figs, sec, paths, workdir)


def summary_rows(res) -> list[tuple[str, str]]:
    """The CLI's summary table of a real run: every row says which voices it is about."""
    from speechid.app.demo import _mislabel_rows
    from speechid.app.htmlpage import pct

    f = res.figures
    mean = f["real"].get("cross_corpus_mean_eer")
    rows = [("real voices recorded elsewhere (never trained on): mean EER", pct(mean) if mean is not None else
             "none scored: no held-out corpus installed")]
    rows += [(f"clips prepared ({' + '.join(f['real'].get('trained_on', ['fotaq', 'synth']))})",
              ", ".join(f"{k} {v}" for k, v in f["records"].items())),
            ("training", f"{f['train_seconds']:.0f} s, {f['optimizer_steps']} steps "
                         f"({f['trainable_parameters']:,} parameters)"),
            ("default threshold (FAR 1.7% on dev speakers: the original project's specificity)",
             f"{f['default_threshold']:.3f}")]
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
        *_mislabel_rows(f["dedup"].get("mislabels"), f["dedup"].get("mislabels_resembling")),
        ("wall time", f"{sum(f['seconds'].values()) / 60:.1f} min"),
    ]
    return rows


def is_real_run(run: dict) -> bool:
    return run.get("mode") == MODE
