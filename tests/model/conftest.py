"""Tiny prep-like data directories for the model tests, built in seconds from generated voices.

``tiny_data`` is what `speechid prep` writes, in miniature: train/dev/test TFRecords through
``speechid.schema.to_example`` and a real tf.Transform ``transform_fn/`` from
``speechid.pipelines.transform.make_preprocessing_fn`` (so the trainer reads its statistics with the
real ``load_stats``). ``tiny_model`` is a model directory trained for a few steps on it.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

RATE = 16_000
# Unidirectional: a Bidirectional layer triples the SavedModel save/load time, and tests pay it per export.
TINY_NET = {"lstm_units": (16, 16), "bidirectional": False, "embedding_dim": 8}


def voice(speaker: int, seconds: float, seed: int, rate: int = RATE) -> np.ndarray:
    """A speaker-specific buzzy vowel: own pitch and formant-like harmonic weights, varying per clip."""
    rng = np.random.default_rng([speaker, seed])
    spk = np.random.default_rng([speaker, 12345])
    f0 = spk.uniform(90, 260) * rng.uniform(0.97, 1.03)
    weights = spk.uniform(0.1, 1.0, size=12)
    t = np.arange(int(seconds * rate)) / rate
    x = sum(w / (k + 1) * np.sin(2 * np.pi * f0 * (k + 1) * t + rng.uniform(0, 6.28)) for k, w in enumerate(weights))
    x = x * (1.0 + 0.3 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))  # syllable-like envelope
    x = x / np.max(np.abs(x)) * rng.uniform(0.2, 0.6)
    return (x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def client_id(speaker: int) -> str:
    return f"client{speaker:03d}"


def write_split(data_dir: str, split: str, speakers: range, clips: int, shards: int = 2, seed: int = 0) -> list:
    """Write ``split`` records for ``speakers`` (``clips`` each, 0.8-2.4 s) and return the ClipRecords."""
    import tensorflow as tf

    from speechid import schema

    rng = np.random.default_rng([seed, len(split)])
    records = []
    for s in speakers:
        for c in range(clips):
            audio = voice(s, float(rng.uniform(0.8, 2.4)), seed=1000 * c + seed)
            records.append(
                schema.ClipRecord(
                    clip_id=f"{split}_{s:03d}_{c:02d}.mp3",
                    client_id=client_id(s),
                    audio=audio,
                    sample_rate=RATE,
                    split=split,
                    source="tiny.tar.gz",
                    path=f"clips/{split}_{s:03d}_{c:02d}.mp3",
                )
            )
    os.makedirs(data_dir, exist_ok=True)
    writers = [
        tf.io.TFRecordWriter(f"{schema.record_prefix(data_dir, split)}-{i:05d}-of-{shards:05d}.tfrecord.gz", "GZIP")
        for i in range(shards)
    ]
    for i, rec in enumerate(records):
        writers[i % shards].write(schema.to_example(rec))
    for w in writers:
        w.close()
    return records


def analyze(data_dir: str, records: list) -> None:
    """Run the real tf.Transform analysis over ``records`` and write transform_fn/ into ``data_dir``."""
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    from speechid.audio import to_pcm16
    from speechid.pipelines.transform import make_preprocessing_fn, raw_feature_spec

    rows = [{"audio": to_pcm16(r.audio), "client_id": r.client_id.encode()} for r in records]
    meta = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(raw_feature_spec()))
    with beam.Pipeline() as p, tft_beam.Context(temp_dir=os.path.join(data_dir, "tmp")):
        fn = (p | beam.Create(rows), meta) | tft_beam.AnalyzeDataset(make_preprocessing_fn())
        _ = fn | tft_beam.WriteTransformFn(data_dir)
    shutil.rmtree(os.path.join(data_dir, "tmp"), ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """train: 8 speakers x 6 clips, dev: 3 x 4, test: 4 x 4 (speaker-disjoint), with a real transform_fn."""
    data_dir = str(tmp_path_factory.mktemp("tiny_data"))
    train = write_split(data_dir, "train", range(0, 8), clips=6)
    write_split(data_dir, "dev", range(100, 103), clips=4, shards=1)
    write_split(data_dir, "test", range(200, 204), clips=4, shards=1)
    analyze(data_dir, train)
    return data_dir


# The tiny training run every model test shares (and test_trainer repeats with a kill in the middle).
TRAIN_KW = dict(
    epochs=2,
    steps_per_epoch=3,
    speakers_per_batch=4,
    clips_per_speaker=3,
    crop_seconds=1.0,
    shuffle_buffer=64,
    seed=3,
)


def tiny_train(data_dir: str, model_dir: str, **overrides) -> dict:
    from speechid.model.network import NetworkConfig
    from speechid.model.trainer import train

    kw = {**TRAIN_KW, "network": NetworkConfig(**TINY_NET), "log": lambda msg: None, **overrides}
    return train(data_dir, model_dir, **kw)


@pytest.fixture(scope="session")
def tiny_model(tiny_data, tmp_path_factory) -> tuple[str, dict]:
    """(model_dir, train() result): the tiny network trained 2 epochs x 3 steps on a copy of tiny_data.

    Census-example style, the copy (records and transform_fn/) is deleted as soon as training returns:
    every test that uses this model proves that the model directory alone is enough.
    """
    base = tmp_path_factory.mktemp("tiny_model")
    data_copy = str(base / "data")
    shutil.copytree(tiny_data, data_copy)
    model_dir = str(base / "model")
    result = tiny_train(data_copy, model_dir)
    shutil.rmtree(data_copy)
    return model_dir, result
