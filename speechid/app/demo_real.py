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
most ``max_clips_per_speaker`` per speaker, a seeded sample): scored, never prepped or trained on
(``speechid.app.real_trials``). The stages shared with the synthetic demo are in ``speechid.app.demo_stages``.
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
    index_stage,
    mislabel_rows,
    pick_query_clip,
    prep_stage,
    query_stage,
    record_model,
    train_stage,
)
from speechid.app.htmlpage import pct
from speechid.app.real_trials import Truth, evaluate_lists
from speechid.app.run_record import REAL_MODE, RunRecord, real_workdir_paths
from speechid.config import THRESHOLD
from speechid.corpora import fotaq, recipes, synth
from speechid.corpora.release import ReleaseResult, write_release
from speechid.corpora.synth import SynthResult
from speechid.errors import ConfigError
from speechid.schema import record_pattern
from speechid.truth import read_clip_truth, read_truth

PACKAGES = ("flight-of-the-amazon-queen",)
INSTALL = "apt-get install " + " ".join(PACKAGES)
# Real corpora trained on beside FOTAQ, and corpora only ever scored (each used when its package is
# installed; "+uncredited": the recipe's --uncredited voices too). README "Quality on real voices" measures
# why these: more real speakers helped the held-out corpora, and the held-out ones share nothing with them.
TRAIN_RECIPES = ("bass", "ktuberling")
HELD_OUT_RECIPES = ("drascula", "asterisk", "klettres")


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


def _write_recipe(folder: str, recipe: str, sources: RealSources, seed: int):
    """Write one installed recipe's release into ``folder`` (the ``speechid corpus`` defaults)."""
    base, _, option = recipe.partition("+")
    src = recipes.source(base, sources.root(recipe), **({"uncredited": True} if option == "uncredited" else {}))
    return write_release(folder, src.release, src.clips, seed=seed, sources=src.paths, caveat=src.caveat)


def run_real_demo(workdir: str, config: RealDemoConfig = RealDemoConfig(), sources: RealSources | None = None,
                  log: Log = print) -> DemoResult:
    """Run every stage into ``workdir``; returns the run's record (its figures also in report.html).

    ``sources`` defaults to ``find_sources()``: a missing FOTAQ package is a ``ConfigError`` before any work."""
    sources = sources or find_sources()
    from speechid import Encoder

    os.makedirs(workdir, exist_ok=True)
    workdir = os.path.abspath(workdir)
    paths = real_workdir_paths(workdir)
    for recipe in (*sources.training, *sources.held_out):
        paths[f"corpus_{recipe}"] = os.path.join(workdir, "corpus-" + recipe.replace("+", "-"))
    real = {"aliases": config.aliases, "lists": [], "trained_on": ["fotaq", *sources.training, "synth"],
            "held_out": list(sources.held_out)}
    record = RunRecord(mode=REAL_MODE, config=asdict(config), sources=asdict(sources), real=real)
    clock = StageClock(log, record.seconds, total=9 + bool(sources.training) + bool(sources.held_out))
    pipeline_args = beam_args(config.workers)
    missing = [r for r in (*TRAIN_RECIPES, *HELD_OUT_RECIPES) if r not in (*sources.training, *sources.held_out)]
    if missing:
        log(f"    not installed, left out: {', '.join(missing)} (README \"Real voices, offline\" names the packages)")

    corpora = _corpus_stages(clock, paths, config, sources, real, log)
    train_archives = [*corpora.fotaq.archives, *(a for r in sources.training for a in corpora.releases[r].archives),
                      corpora.synth.tarball]
    with clock.stage(f"prep: {' + '.join(real['trained_on'])}, Beam DirectRunner + tf.Transform"):
        prep_stage(train_archives, paths, pipeline_args, record, log)
    with clock.stage(f"train: the recommended recipe ({config.loss}, augment {config.augment}), "
                     f"{config.train_minutes:g} min budget"):
        ops, model_config = _train_stage(paths, config, record, log)
    truth = corpora.truth()
    with clock.stage("evaluate: voices recorded elsewhere first, then held-out speakers of the training corpora"):
        encoder = Encoder.load(paths["model"])
        evaluate_lists(encoder, paths, {r: corpora.releases[r] for r in sources.held_out}, truth, config.trials,
                       config.seed, config.max_clips_per_speaker, record, log)
    with clock.stage("embed: Beam RunInference over every held-out clip"):
        embed_stage(paths, [record_pattern(paths["data"], split) for split in ("dev", "test")], pipeline_args,
                    record, log)
    with clock.stage("index: FAISS"):
        index_stage(paths, ops, model_config, record, log)
    with clock.stage("dedup: client_id merges and mislabelled clips vs what was planted among FOTAQ characters"):
        dedup_stage(paths, {**truth.synth, **truth.fotaq}, record, log, clip_truth=truth.fotaq_clips)
    with clock.stage("query: who does this FOTAQ clip most resemble?"):
        clip, client_id, true_speaker = pick_query_clip(corpora.fotaq.archives[0], corpora.fotaq.aliases_tsv, workdir)
        query_stage(clip, client_id, true_speaker, truth.fotaq, encoder, paths, record, log)
    return finish(DemoResult(workdir, record), paths)


@dataclass
class _Corpora:
    """The releases a real run writes: FOTAQ's, each other installed recipe's, the synthetic one."""

    fotaq: ReleaseResult
    releases: dict[str, ReleaseResult]
    synth: SynthResult

    def truth(self) -> Truth:
        return Truth(read_truth(self.fotaq.aliases_tsv), read_truth(self.synth.aliases_tsv),
                      read_clip_truth(self.fotaq.aliases_tsv))


def _corpus_stages(clock: StageClock, paths: dict, config: RealDemoConfig, sources: RealSources, real: dict,
                   log: Log) -> _Corpora:
    """FOTAQ's release (aliases and mislabels planted), one release per other installed recipe, and the
    synthetic speakers trained on beside the real ones."""
    with clock.stage("corpus: FOTAQ voice acting, aliases planted among held-out characters"):
        fotaq_release = write_release(paths["corpus"], fotaq.RELEASE, fotaq.clips(sources.fotaq), seed=config.seed,
                                      dev_speakers=config.dev_speakers, test_speakers=config.test_speakers,
                                      min_clips=config.min_clips, aliases=config.aliases, sources=[sources.fotaq],
                                      caveat=fotaq.CAVEAT, mislabels=config.mislabels)
        real["fotaq"] = {k: fotaq_release.manifest[k] for k in ("written", "failed", "failed_by_reason", "hours",
                                                                 "splits", "aliased_speakers")}
        log("    " + fotaq_release.summary().split("; speaker table")[0])
    releases = {}
    for stage_recipes, what in ((sources.training, "more real voices to train on"),
                                (sources.held_out, "voices recorded elsewhere, never trained on")):
        if not stage_recipes:
            continue
        with clock.stage(f"corpus: {what} ({', '.join(stage_recipes)})"):
            for recipe in stage_recipes:
                releases[recipe] = release = _write_recipe(paths[f"corpus_{recipe}"], recipe, sources, config.seed)
                real.setdefault("corpora", {})[recipe] = {k: release.manifest[k]
                                                          for k in ("written", "failed", "hours")}
                log(f"    {recipe}: " + release.summary().split("; speaker table")[0])
    with clock.stage("synth: synthetic speakers to train on beside the real ones"):
        synthetic = synth.make_corpus(paths["corpus_synth"], speakers=config.synth_speakers,
                                      clips_per_speaker=config.synth_clips_per_speaker, seed=config.seed,
                                      workers=config.workers)
        log("    " + synthetic.summary())
    return _Corpora(fotaq_release, releases, synthetic)


def _train_stage(paths: dict, config: RealDemoConfig, record: RunRecord, log: Log):
    """The recommended recipe under the time budget; returns (operating points, model config)."""
    summary = train_stage(paths, record, log, epochs=config.max_epochs, steps_per_epoch=config.steps_per_epoch,
                          speakers_per_batch=config.speakers_per_batch,
                          clips_per_speaker=config.clips_per_speaker_batch, crop_seconds=config.crop_seconds,
                          learning_rate=config.learning_rate, loss=config.loss, augment=config.augment,
                          time_budget_s=60 * config.train_minutes, max_dev_clips=config.max_dev_clips,
                          seed=config.seed)
    record.optimizer_steps = summary["optimizer_steps"]
    return record_model(paths, record)


def summary_rows(result: DemoResult) -> list[tuple[str, str]]:
    """The CLI's summary table of a real run: every row says which voices it is about."""
    record, real = result.record, result.record.real
    mean = real.get("cross_corpus_mean_eer")
    rows = [("real voices recorded elsewhere (never trained on): mean EER", pct(mean) if mean is not None else
             "none scored: no held-out corpus installed")]
    rows += [(f"clips prepared ({' + '.join(real.get('trained_on', ['fotaq', 'synth']))})",
              ", ".join(f"{k} {v}" for k, v in record.records.items())),
             ("training", f"{record.train_seconds:.0f} s, {record.optimizer_steps} steps "
                          f"({record.trainable_parameters:,} parameters)"),
             ("default threshold (FAR 1.7% on dev speakers: the original project's specificity)",
              f"{record.default_threshold:.3f}")]
    for item in real["lists"]:
        rows.append((f"{item['voices']} voices: {item['name']} EER",
                     f"{pct(item['eer'])} ({item['speakers']} speakers, {item['clips']} clips; {item['relation']})"))
    merges = record.dedup.get("speakers", {})
    seed_merges = record.dedup_seed.get("speakers", {})
    rows += [
        (f"real voices: dedup vs {real['aliases']} aliased FOTAQ characters, at the default",
         f"precision {pct(merges.get('precision'))}, recall {pct(merges.get('recall'))}"),
        (f"real voices: the same with {THRESHOLD:g} as the clip threshold",
         f"precision {pct(seed_merges.get('precision'))}, recall {pct(seed_merges.get('recall'))}"),
        *mislabel_rows(record.dedup.get("mislabels"), record.dedup.get("mislabels_resembling")),
        ("wall time", f"{sum(record.seconds.values()) / 60:.1f} min"),
    ]
    return rows
