"""The trial lists of ``speechid demo --real``, scored: voices recorded elsewhere first (the held-out
corpora, decoded straight from their releases), then the held-out speakers of the training corpora (FOTAQ's
characters and the synthetic speakers of the prepared test split).

Speakers are scored by their true label (aliases.tsv), so a planted alias never turns a same-voice pair
into a "different" trial, and a mislabelled clip is scored by its true voice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from speechid import outputs
from speechid.app.demo_stages import Log
from speechid.app.run_record import RunRecord
from speechid.corpora.release import ReleaseResult, sample_clips

LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "it": "Italian"}
CORPUS_NAMES = {"drascula": "Drascula", "asterisk": "Asterisk prompts", "klettres": "KLettres",
                "bass": "Beneath a Steel Sky", "ktuberling": "KTuberling", "fotaq": "FOTAQ"}


@dataclass(frozen=True)
class Truth:
    """Who speaks: FOTAQ's client_id -> character, the synthetic release's client_id -> voice, and FOTAQ's
    mislabelled clips -> their true character (scored by their true voice)."""

    fotaq: dict[str, str]
    synth: dict[str, str]
    fotaq_clips: dict[str, str]


@dataclass(frozen=True)
class TrialList:
    """One list of trials: its key (metrics-<key>.json), whose voices, its name, how it relates to
    training, and its clips' embeddings with their true speakers."""

    key: str
    voices: str
    name: str
    relation: str
    embeddings: np.ndarray
    labels: list[str]


def trial_lists(recipe: str, archives: list[str]) -> list[tuple[str, str, list[str]]]:
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


def cross_corpus_lists(encoder, held_out: dict[str, list[str]], per_speaker: int, seed: int) -> list[TrialList]:
    """The trial lists of the ``held_out`` corpora (recipe -> its release's archives), decoded straight from
    their archives: at most ``per_speaker`` clips a speaker, a seeded sample."""
    lists = []
    for recipe, recipe_archives in held_out.items():
        for key, name, archives in trial_lists(recipe, recipe_archives):
            waves, labels = [], []
            for archive in archives:
                archive_waves, archive_labels, _ = sample_clips(archive, ["train.tsv", "dev.tsv", "test.tsv"],
                                                                encoder.sample_rate, per_speaker, seed)
                waves += archive_waves
                labels += archive_labels
            lists.append(TrialList(key, "real", name, "cross-corpus: recorded elsewhere, never trained on",
                                    encoder.embed_waveforms(waves), labels))
    return lists


def in_domain_lists(encoder, data_dir: str, truth: Truth) -> list[TrialList]:
    """The prepared test split's FOTAQ characters and synthetic speakers, each clip by its true speaker."""
    from speechid.model.data import load_clips

    waves, client_ids, clip_ids = load_clips(data_dir, "test")
    embeddings = encoder.embed_waveforms(waves)
    lists = []
    for key, voices, name, relation, speaker_of in (
        ("fotaq_heldout", "real", "FOTAQ held-out characters", "in-domain: the game trained on, characters "
                                                               "never trained on", truth.fotaq),
        ("synth_test", "synthetic", "synthetic test speakers", "in-domain: the synthesiser trained on, voices "
                                                               "never trained on", truth.synth),
    ):
        rows = [i for i, c in enumerate(client_ids) if c in speaker_of]
        labels = [truth.fotaq_clips.get(clip_ids[i], speaker_of[client_ids[i]]) for i in rows]
        lists.append(TrialList(key, voices, name, relation, embeddings[rows], labels))
    return lists


def evaluate_lists(encoder, paths: dict, held_out: dict[str, ReleaseResult], truth: Truth, trials: int, seed: int,
                   per_speaker: int, record: RunRecord, log: Log) -> None:
    """Score every trial list, cross-corpus first (``held_out``: recipe -> release, never trained on; at
    most ``per_speaker`` clips a speaker), into ``record.real``; write each list's metrics where the report
    reads them: eval/ (FOTAQ's held-out characters), eval-synth/, eval-cross/."""
    from speechid.model import evaluation

    cross_metrics = {}
    archives = {recipe: release.archives for recipe, release in held_out.items()}
    for trial_list in (*cross_corpus_lists(encoder, archives, per_speaker, seed),
                       *in_domain_lists(encoder, paths["data"], truth)):
        metrics, distances = _score(trial_list, encoder.threshold, trials, seed, record.real, log)
        if trial_list.key == "fotaq_heldout":
            record.eval = _write_fotaq_metrics(metrics, distances, trial_list.name, encoder, paths)
        elif trial_list.key == "synth_test":
            _write_metrics(paths["eval_synth"], evaluation.METRICS_JSON, metrics, [paths["model"], paths["data"]])
        else:
            cross_metrics[f"metrics-{trial_list.key}.json"] = metrics
    cross = [item["eer"] for item in record.real["lists"] if item["relation"].startswith("cross-corpus")]
    record.real["cross_corpus_mean_eer"] = float(np.mean(cross)) if cross else None
    if cross_metrics:
        _write_cross_metrics(paths, [release.out_dir for release in held_out.values()], cross_metrics)


def _score(trial_list: TrialList, threshold: float, trials: int, seed: int, real: dict, log: Log
           ) -> tuple[dict, tuple]:
    """Seeded trials of one list: its metrics (also a row of ``real["lists"]``) and its (same, different)
    distances."""
    metrics, distances = score_list(trial_list.embeddings, trial_list.labels, threshold, trials, seed)
    metrics.update(list=trial_list.key, voices=trial_list.voices, name=trial_list.name)
    real["lists"].append({"key": trial_list.key, "voices": trial_list.voices, "name": trial_list.name,
                          "relation": trial_list.relation,
                          **{k: metrics[k] for k in ("eer", "min_dcf", "sensitivity", "specificity", "threshold",
                                                     "speakers", "clips", "trials")}})
    log(f"    {trial_list.voices} voices, {trial_list.name}: EER {100 * metrics['eer']:.1f}% "
        f"({metrics['speakers']} speakers, {metrics['clips']} clips, {metrics['trials']} trials; "
        f"{trial_list.relation.split(':')[0]})")
    return metrics, distances


def score_list(embeddings: np.ndarray, labels: list[str], threshold: float, trials: int, seed: int
               ) -> tuple[dict, tuple]:
    """Seeded balanced trials over ``labels`` (true speakers): (metrics, (same distances, different distances))."""
    from speechid.model.evaluation import make_trials, verification_metrics

    pairs, same = make_trials(labels, trials, seed=seed)
    distances = np.linalg.norm(embeddings[pairs[:, 0]] - embeddings[pairs[:, 1]], axis=1)
    metrics = verification_metrics(distances[same], distances[~same], threshold=threshold)
    metrics.update(clips=len(labels), speakers=len(set(labels)), seed=seed)
    return metrics, (distances[same], distances[~same])


def _write_metrics(folder: str, name: str, metrics: dict, inputs: list[str]) -> None:
    with outputs.staged(folder, "evaluate", inputs) as staging:
        outputs.write_json(os.path.join(staging, name), metrics)


def _write_fotaq_metrics(metrics: dict, distances: tuple, name: str, encoder, paths: dict) -> dict:
    """FOTAQ's held-out characters as the run's eval/ (metrics.json and the pictures); returns the metrics."""
    from speechid.model import evaluation

    same, different = distances
    metrics.update(split="test", data_dir=paths["data"], model_id=encoder.config.get("model_id"))
    with outputs.staged(paths["eval"], "evaluate", [paths["model"], paths["data"]]) as folder:
        title = f"{name}: EER {100 * metrics['eer']:.2f}%, {metrics['trials']} trials"
        figures = evaluation.plot_figures(same, different, encoder.threshold, folder, title)
        metrics["figures"] = [os.path.basename(p) for p in figures]
        evaluation.write_json(os.path.join(folder, evaluation.METRICS_JSON), metrics)
    return metrics


def _write_cross_metrics(paths: dict, held_out_folders: list[str], cross_metrics: dict[str, dict]) -> None:
    with outputs.staged(paths["eval_cross"], "evaluate", [paths["model"], *held_out_folders]) as folder:
        for name, metrics in cross_metrics.items():
            outputs.write_json(os.path.join(folder, name), metrics)
