"""The one definition of the clip TFRecord format and of the prep output's artifact names.

The prep pipeline writes with ``to_example``, the trainer and the embed pipeline read with
``feature_spec``/``parse_examples``, the tests read back with ``read_records``: all of them import this
module, so the format cannot drift between writer and readers.

Audio is stored as little-endian PCM16 at ``sample_rate`` (mono): half the bytes of float32 and exact
to 1/32767, the precision of the MP3 decoder's output anyway.
"""

from __future__ import annotations

import glob
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from speechid.audio import from_pcm16, to_pcm16

# Artifact names of a prep output directory (data/<name>/).
SPLITS = ("train", "dev", "test")
ALL_SPLITS = ("train", "dev", "test", "validated", "invalidated", "other")
RECORD_SUFFIX = ".tfrecord.gz"
TRANSFORM_FN_DIR = "transform_fn"  # tft.TFTransformOutput(<data dir>) finds it beside the records
MANIFEST = "manifest.json"
FAILURES_DIR = "failures"
SPEAKER_VOCAB = "speaker_vocab"  # tf.Transform vocabulary name for client_ids
MEL_MEAN = "mel_mean"  # tf.Transform analyzer outputs: per-mel-bin statistics of log-mel
MEL_VAR = "mel_var"


def record_pattern(data_dir: str, split: str) -> str:
    return os.path.join(data_dir, f"{split}-*{RECORD_SUFFIX}")


def record_prefix(data_dir: str, split: str) -> str:
    return os.path.join(data_dir, split)


@dataclass(frozen=True)
class ClipRecord:
    """One decoded clip with its Common Voice row. ``audio`` is mono float32 at ``sample_rate``."""

    clip_id: str  # globally unique: the Common Voice clip path (common_voice_<locale>_<n>.mp3)
    client_id: str
    audio: np.ndarray = field(repr=False, compare=False)
    sample_rate: int
    split: str
    source: str  # the archive (or file) the clip came from
    path: str  # the member path inside the archive
    locale: str = ""
    sentence: str = ""
    up_votes: int = 0
    down_votes: int = 0
    age: str = ""
    gender: str = ""
    accent: str = ""
    segment: str = ""

    @property
    def duration(self) -> float:
        return len(self.audio) / float(self.sample_rate)


_BYTES = ("clip_id", "client_id", "split", "source", "path", "locale", "sentence", "age", "gender", "accent", "segment")
_INTS = ("sample_rate", "num_samples", "up_votes", "down_votes")
_FLOATS = ("duration",)


def to_example(rec: ClipRecord) -> bytes:
    """Serialize a ClipRecord as a tf.train.Example."""
    import tensorflow as tf

    feats = {"audio": tf.train.Feature(bytes_list=tf.train.BytesList(value=[to_pcm16(rec.audio)]))}
    values = asdict(rec)
    values["num_samples"] = len(rec.audio)
    values["duration"] = rec.duration
    for k in _BYTES:
        feats[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(values[k]).encode("utf-8")]))
    for k in _INTS:
        feats[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(values[k])]))
    for k in _FLOATS:
        feats[k] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(values[k])]))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def feature_spec() -> dict:
    """tf.io feature spec of the record (scalar features; audio as PCM16 bytes)."""
    import tensorflow as tf

    spec = {"audio": tf.io.FixedLenFeature([], tf.string)}
    spec.update({k: tf.io.FixedLenFeature([], tf.string) for k in _BYTES})
    spec.update({k: tf.io.FixedLenFeature([], tf.int64) for k in _INTS})
    spec.update({k: tf.io.FixedLenFeature([], tf.float32) for k in _FLOATS})
    return spec


def decode_audio(pcm16):
    """PCM16 bytes tensor -> float32 waveform tensor (the TF twin of ``speechid.audio.from_pcm16``)."""
    import tensorflow as tf

    return tf.cast(tf.io.decode_raw(pcm16, tf.int16, little_endian=True), tf.float32) / 32767.0


def parse_examples(serialized):
    """Parse a batch (or one) serialized Example into a dict of tensors; 'audio' stays PCM16 bytes."""
    import tensorflow as tf

    if serialized.shape.rank == 0:
        return tf.io.parse_single_example(serialized, feature_spec())
    return tf.io.parse_example(serialized, feature_spec())


def from_example(serialized: bytes) -> ClipRecord:
    """Parse one serialized Example back into a ClipRecord (NumPy audio) without building a graph."""
    import tensorflow as tf

    ex = tf.train.Example.FromString(serialized)
    f = ex.features.feature

    def b(k):
        return f[k].bytes_list.value[0].decode("utf-8")

    def i(k):
        return int(f[k].int64_list.value[0])

    return ClipRecord(
        clip_id=b("clip_id"),
        client_id=b("client_id"),
        audio=from_pcm16(f["audio"].bytes_list.value[0]),
        sample_rate=i("sample_rate"),
        split=b("split"),
        source=b("source"),
        path=b("path"),
        locale=b("locale"),
        sentence=b("sentence"),
        up_votes=i("up_votes"),
        down_votes=i("down_votes"),
        age=b("age"),
        gender=b("gender"),
        accent=b("accent"),
        segment=b("segment"),
    )


def read_records(pattern: str):
    """Yield ClipRecords from GZIP TFRecord files matching ``pattern`` (local or gs://), in file order."""
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(pattern)) if "://" in pattern else sorted(glob.glob(pattern))
    for path in files:
        for raw in tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator():
            yield from_example(raw)
