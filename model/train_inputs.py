"""What a training run trains on: the prep output's statistics, features, record files and dev split, each
checked before anything is built or written (``speechid.model.trainer.train`` resolves its inputs here)."""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from speechid import schema
from speechid.errors import ConfigError
from speechid.model.augment import AugmentConfig
from speechid.model.augment import preset as augment_preset
from speechid.model.data import load_clips, record_files
from speechid.model.features import FeatureConfig
from speechid.model.stats import TransformStats, load_stats

LOSSES = ("triplet", "aam", "triplet+aam")


def _feature_config(data_dir: str, n_mels: int, given: FeatureConfig | None) -> FeatureConfig:
    """The features the data was prepared with: given, else the manifest's, else the default with n_mels."""
    if given is None:
        manifest = os.path.join(data_dir, schema.MANIFEST)
        found = None
        if os.path.exists(manifest):
            try:
                with open(manifest, encoding="utf-8") as f:
                    found = json.load(f).get("features")
            except (OSError, ValueError):
                found = None
        if isinstance(found, dict):
            fields = set(FeatureConfig.__dataclass_fields__)
            given = FeatureConfig(**{k: v for k, v in found.items() if k in fields})
        else:
            given = FeatureConfig(n_mels=n_mels)
    if given.n_mels != n_mels:
        raise ConfigError(
            f"{data_dir}: the statistics have {n_mels} mel bins but the feature config has {given.n_mels}"
        )
    return given


def verification_split_problem(speaker_ids: list[str]) -> str | None:
    """What keeps a split from giving same/different speaker trials, or None: it needs two speakers and
    one speaker with two clips."""
    counts = collections.Counter(speaker_ids)
    if len(counts) < 2:
        return f"has {len(counts)} speaker{'' if len(counts) == 1 else 's'} (no different-speaker pairs)"
    if max(counts.values()) < 2:
        return "has no speaker with two clips (no same-speaker pairs)"
    return None


def _manifest_split_problem(data_dir: str, split: str) -> str | None:
    """``verification_split_problem`` for ``split`` from prep's manifest (records, speakers), if it has one."""
    try:
        with open(os.path.join(data_dir, schema.MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
        records, speakers = int(manifest["records"][split]), int(manifest["speakers"][split])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if speakers < 2:
        return f"has {speakers} speaker{'' if speakers == 1 else 's'} (no different-speaker pairs)"
    if records <= speakers:
        return "has no speaker with two clips (no same-speaker pairs)"
    return None


@dataclass(frozen=True)
class TrainInputs:
    """What a run trains on, read and checked before anything is built."""

    stats: TransformStats
    features: FeatureConfig
    crop: int  # samples of a training crop (= the inference window)
    hop_seconds: float  # the inference hop
    augment: AugmentConfig | None
    train_files: list[str]
    speakers: list[str]  # label i is speakers[i]
    speeds: tuple[float, ...]  # 1.0 first, then the speed_perturb copies
    dev: tuple | None  # load_clips' (waveforms, speaker labels, clip ids) of the dev split; None without one


def _check_options(epochs: int, steps_per_epoch: int, crop_seconds: float, loss: str, augment: str
                   ) -> AugmentConfig | None:
    """Refuse impossible numbers and unknown names; the augmentation preset ``augment`` names."""
    if epochs < 0 or steps_per_epoch < 1:
        raise ConfigError(f"epochs={epochs} must be >= 0 and steps_per_epoch={steps_per_epoch} >= 1")
    if crop_seconds <= 0:
        raise ConfigError(f"crop_seconds={crop_seconds} must be positive")
    if loss not in LOSSES:
        raise ConfigError(f"loss={loss!r}: choose one of {', '.join(LOSSES)}")
    try:
        return augment_preset(augment)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _speeds(speed_perturb: tuple[float, ...]) -> tuple[float, ...]:
    speeds = (1.0, *sorted(float(f) for f in speed_perturb if float(f) != 1.0))
    if min(speeds) <= 0.5 or max(speeds) >= 2.0:
        raise ConfigError(f"speed_perturb={speed_perturb}: speeds must lie between 0.5 and 2")
    return speeds


def resolve_inputs(data_dir: str, stats: TransformStats | None, features: FeatureConfig | None, *,
                   epochs: int, steps_per_epoch: int, crop_seconds: float, hop_seconds: float | None, loss: str,
                   augment: str, speed_perturb: tuple[float, ...], max_dev_clips: int, seed: int,
                   log: Callable[[str], None]) -> TrainInputs:
    """The run's data and options, each checked, the dev split loaded: a ConfigError before anything is built
    or written (a dev split that cannot give an EER among them)."""
    if stats is None:
        stats = load_stats(data_dir)
    augment_config = _check_options(epochs, steps_per_epoch, crop_seconds, loss, augment)
    features = _feature_config(data_dir, len(stats.mel_mean), features)
    crop = int(round(crop_seconds * features.sample_rate))
    if crop < features.frame_length:
        raise ConfigError(f"crop_seconds={crop_seconds} is shorter than one analysis frame")
    train_files = record_files(data_dir, "train")
    dev_files = record_files(data_dir, "dev", required=False)
    speeds = _speeds(speed_perturb)
    dev = load_clips(data_dir, "dev", max_clips=max_dev_clips, seed=seed) if dev_files else None
    if dev is not None:
        problem = verification_split_problem(dev[1])
        if problem:
            raise ConfigError(f"{data_dir}: the dev split {problem}; the dev EER needs both (re-split the corpus)")
    test_problem = _manifest_split_problem(data_dir, "test")
    if test_problem:
        log(f"warning: {data_dir}: the test split {test_problem}; `speechid evaluate` will refuse it")
    return TrainInputs(stats, features, crop, crop_seconds / 2.0 if hop_seconds is None else float(hop_seconds),
                       augment_config, train_files, list(stats.speakers), speeds, dev)
