"""The tf.Transform analysis (AnalyzeTrain + make_preprocessing_fn) and load_stats on in-memory records."""

import os

import apache_beam as beam
import numpy as np
import pytest

from speechid import schema
from speechid.audio import from_pcm16, to_pcm16
from speechid.errors import ConfigError
from speechid.model.features import FeatureConfig
from speechid.model.stats import TransformStats, load_stats
from speechid.pipelines.prep_stages import AnalyzeTrain
from tests.conftest import tone
from tests.pipelines.prep_helpers import local_pipeline

CONFIG = FeatureConfig(n_mels=16)


def _example(client: str, seconds: float, freq: float) -> bytes:
    wave = tone(seconds, 16_000, freq)
    return schema.to_example(
        schema.ClipRecord(
            clip_id=f"{client}-{freq}",
            client_id=client,
            audio=wave,
            sample_rate=16_000,
            split="train",
            source="mem",
            path="mem",
        )
    )


def _analyze(examples: list[bytes], out: str) -> None:
    import tensorflow_transform.beam as tft_beam

    with local_pipeline() as p:
        transform_fn = p | beam.Create(examples) | AnalyzeTrain(CONFIG, os.path.join(out, "tmp"))
        _ = transform_fn | tft_beam.WriteTransformFn(out)


def test_frame_weighted_per_bin_stats_and_vocabulary(tmp_path):
    import tensorflow as tf

    from speechid.model.features import log_mel

    clips = [("spk-b", 0.5, 150.0), ("spk-a", 2.0, 300.0), ("spk-b", 1.0, 700.0), ("spk-c", 0.01, 400.0)]
    out = str(tmp_path / "data")
    _analyze([_example(*c) for c in clips], out)
    stats = load_stats(out)

    feats = []
    for _, seconds, freq in clips:
        wave = from_pcm16(to_pcm16(tone(seconds, 16_000, freq)))  # what the record holds
        wave = np.pad(wave, (0, max(0, CONFIG.frame_length - len(wave))))  # a clip under one window: one frame
        feats.append(log_mel(tf.constant(wave), CONFIG).numpy().astype(np.float64))
    allf = np.concatenate(feats)  # frame-weighted: a long clip counts for more than a short one
    assert stats.frames == len(allf)
    np.testing.assert_allclose(stats.mel_mean, allf.mean(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats.mel_var, allf.var(axis=0), rtol=1e-3, atol=1e-3)
    assert stats.mel_mean.shape == (16,) and stats.mel_mean.dtype == np.float32
    assert sorted(stats.speakers) == ["spk-a", "spk-b", "spk-c"]
    assert stats.speakers[0] == "spk-b"  # most clips first (tf.Transform's frequency order)
    assert len(stats.fingerprint) == 16
    changed = TransformStats(stats.mel_mean, stats.mel_var + 1, stats.speakers, stats.frames)
    assert changed.fingerprint != stats.fingerprint


def test_empty_train_split_and_missing_analysis_are_errors(tmp_path):
    out = str(tmp_path / "empty")
    _analyze([], out)
    with pytest.raises(ConfigError, match="no train audio"):
        load_stats(out)
    with pytest.raises(ConfigError, match="transform_fn"):
        load_stats(str(tmp_path / "nothing-here"))
