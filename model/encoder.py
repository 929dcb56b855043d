"""``speechid.Encoder``: embed recordings with a trained model directory and compare voices.

    >>> enc = speechid.Encoder.load("models/cv-en")
    >>> same, distance = enc.verify("a.mp3", "b.wav")        # distance: Euclidean between unit vectors
    >>> enc.verdict("a.mp3", "b.wav")     # 'same: 0.612 < 0.741 (FAR 1.7% point (...): FAR 1.7% / ...)'
    >>> enc.compare(["a.mp3", "b.wav", "c.ogg"]).pairs          # every pair: distance and verdict
    >>> enc.embed(["a.mp3", "b.mp3"]).shape                    # (2, 128)
    >>> voice = enc.embed_speaker(["enrol1.mp3", "enrol2.mp3"])  # enrolment: mean, re-normalised

Audio of any format, rate and channel count goes through ``speechid.audio.decode`` and
``speechid.audio.trim_silence`` (a clip with too little speech is refused with ``AudioError("no_speech")``,
so it never gets a verdict); a clip is cut into the
model's windows and the window embeddings are averaged (``speechid.model.windows``), exactly as the bulk
embed pipeline does, so both give the same vectors. The threshold of every verdict is the one given, else
the model's (``resolve_threshold``, by ``speechid.operating_points.clip_threshold``), named with what it means.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from speechid import audio as audio_io
from speechid.errors import ConfigError, SpeechIdError
from speechid.model.model_dir import check_serving_model, load_serving_model, operating_points, read_config
from speechid.model.windows import embed_clips, pool_embeddings
from speechid.operating_points import OperatingPoints, clip_threshold, is_same, verdict_text, verdict_word

# Inference accepts long recordings (a whole interview may be one enrolment clip); the byte cap stays.
ENCODER_LIMITS = audio_io.INFERENCE_LIMITS  # the one duration and speech rule of embed and compare

AudioInput = str | os.PathLike | bytes | np.ndarray
UNCALIBRATED = "uncalibrated model: no dev-speaker error rates"


@dataclass(frozen=True)
class PairVerdict:
    """Two inputs, the Euclidean distance between their embeddings and the verdict at ``threshold``."""

    a: str
    b: str
    distance: float
    threshold: float
    meaning: str  # what the threshold means (``Encoder.describe``)

    @property
    def verdict(self) -> str:
        return verdict_word(self.distance, self.threshold)

    @property
    def explanation(self) -> str:
        return verdict_text(self.distance, self.threshold, self.meaning)

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "euclidean_distance": round(self.distance, 6), "verdict": self.verdict,
                "explanation": self.explanation}


@dataclass(frozen=True)
class Comparison:
    """Every pair of the inputs of ``Encoder.compare``, judged at one threshold."""

    threshold: float
    meaning: str
    pairs: tuple[PairVerdict, ...]


class Encoder:
    """A loaded model directory. Build with ``Encoder.load(model_dir)``."""

    def __init__(self, model, config: dict, model_dir: str, limits: audio_io.Limits = ENCODER_LIMITS, batch: int = 64):
        import tensorflow as tf

        self.model = model
        self.config = dict(config)
        self.operating_points: OperatingPoints | None = operating_points(self.config, model_dir)
        self.model_dir = model_dir
        self.limits = limits
        self.batch = int(batch)
        self._window = int(round(self.window_s * self.sample_rate))
        # One traced function for the fixed window length: no retracing per batch size.
        self._predict = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, self._window], tf.float32)],
            reduce_retracing=True,
        )

    @classmethod
    def load(cls, model_dir: str, **kwargs) -> Encoder:
        """Load ``<model_dir>/saved_model`` and ``config.json`` (nothing else is needed); a directory whose two
        halves disagree (another model's weights, an edited config.json) is refused with a ConfigError."""
        model_dir = os.fspath(model_dir)
        config = read_config(model_dir)
        model = load_serving_model(model_dir)
        check_serving_model(model, config, model_dir)
        return cls(model, config, model_dir, **kwargs)

    @property
    def sample_rate(self) -> int:
        return int(self.config["sample_rate"])

    @property
    def window_s(self) -> float:
        return float(self.config["window_s"])

    @property
    def hop_s(self) -> float:
        return float(self.config["hop_s"])

    @property
    def threshold(self) -> float:
        """The default "same person" distance: the seed operating point measured on dev speakers."""
        return self.resolve_threshold()[0]

    def resolve_threshold(self, threshold: float | None = None) -> tuple[float, str]:
        """(clip-level threshold, what it means in words): the one given, else the model's default (its
        operating points', or config.json's for an uncalibrated model)."""
        t, meaning = clip_threshold(self.operating_points, threshold, fallback=self.config["threshold"])
        return t, meaning or UNCALIBRATED

    def describe(self, threshold: float | None = None) -> str:
        """What a clip-level threshold (default: the model's) means, in words."""
        return self.resolve_threshold(threshold)[1]

    @property
    def embedding_dim(self) -> int:
        return int(self.config["embedding_dim"])

    def __repr__(self) -> str:
        return f"Encoder({self.model_dir!r}, model_id={self.config.get('model_id')!r}, dim={self.embedding_dim})"

    # -- audio in ---------------------------------------------------------------------------------------
    def load_audio(self, source: AudioInput, sample_rate: int | None = None, name: str | None = None) -> np.ndarray:
        """One input -> its speech, mono float32 at the model rate, leading and trailing silence trimmed
        (``speechid.audio.trim_silence``, as the embed pipeline does). Arrays are taken at ``sample_rate``
        (default: model's). Raises ``AudioError("no_speech")`` for a clip with too little speech."""
        if isinstance(source, np.ndarray):
            wave = np.asarray(source, np.float32)
            if wave.ndim == 2:  # [frames, channels]
                wave = wave.mean(axis=1)
            if wave.ndim != 1 or wave.size == 0:
                raise ConfigError(f"{name or 'array'}: expected a non-empty mono waveform, got shape {source.shape}")
            wave = audio_io.resample(wave, sample_rate or self.sample_rate, self.sample_rate)
            name = name or "array"
        elif isinstance(source, (bytes, bytearray, memoryview, str, os.PathLike)):
            wave = audio_io.decode(source, self.sample_rate, limits=self.limits, name=name)
            name = name or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<bytes>")
        else:
            raise ConfigError(f"cannot embed a {type(source).__name__}: give a path, bytes or a float waveform")
        return audio_io.trim_silence(wave, self.sample_rate, self.limits, name)

    # -- embeddings -------------------------------------------------------------------------------------
    def embed_waveforms(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Mono float32 waveforms at the model rate -> unit embeddings ``[n, D]``."""
        import tensorflow as tf

        return embed_clips(
            lambda x: self._predict(tf.constant(x)).numpy(),
            waves,
            self.sample_rate,
            self.window_s,
            self.hop_s,
            batch_windows=self.batch,
        )

    def embed(self, source: AudioInput | Sequence[AudioInput], sample_rate: int | None = None) -> np.ndarray:
        """A path, bytes or waveform -> ``[D]``; a list of them -> ``[n, D]``. Unit vectors, float32."""
        if isinstance(source, (list, tuple)):
            if not source:
                raise ConfigError("embed: empty list")
            return self.embed_waveforms([self.load_audio(s, sample_rate) for s in source])
        return self.embed_waveforms([self.load_audio(source, sample_rate)])[0]

    def embed_speaker(self, sources: Sequence[AudioInput], sample_rate: int | None = None) -> np.ndarray:
        """Enrolment: the mean of the clips' embeddings, re-normalised -> ``[D]``."""
        if isinstance(sources, (str, bytes, os.PathLike, np.ndarray)):
            sources = [sources]
        return pool_embeddings(self.embed(list(sources), sample_rate))

    def _as_embedding(self, x, sample_rate: int | None) -> np.ndarray:
        # A 1-D array of exactly D values with unit norm is an embedding already; anything else is audio.
        if isinstance(x, np.ndarray) and x.shape == (self.embedding_dim,) and abs(np.linalg.norm(x) - 1.0) < 1e-3:
            return x.astype(np.float32)
        return self.embed(x, sample_rate)

    def distance(self, a, b, sample_rate: int | None = None) -> float:
        """Euclidean distance between the embeddings of ``a`` and ``b`` (audio inputs or embeddings)."""
        return float(np.linalg.norm(self._as_embedding(a, sample_rate) - self._as_embedding(b, sample_rate)))

    def verify(self, a, b, threshold: float | None = None, sample_rate: int | None = None) -> tuple[bool, float]:
        """(same person?, Euclidean distance): same when the distance is below ``threshold`` (default: the
        model's operating point, ``self.threshold``)."""
        d = self.distance(a, b, sample_rate)
        return is_same(d, self.resolve_threshold(threshold)[0]), d

    def verdict(self, a, b, threshold: float | None = None, sample_rate: int | None = None) -> str:
        """The verdict in words, naming its threshold and what it means:
        ``same: 0.612 < 0.741 (seed operating point: FAR 1.7% / FRR 38.1% on dev speakers)``."""
        return self.verdict_for(self.distance(a, b, sample_rate), threshold)

    def verdict_for(self, distance: float, threshold: float | None = None) -> str:
        return verdict_text(float(distance), *self.resolve_threshold(threshold))

    def compare(self, paths: Sequence[str], threshold: float | None = None,
                failed: dict[str, str] | None = None) -> Comparison:
        """Every pair of the audio files ``paths`` (in order; a file given twice is read once): distance and
        verdict at ``threshold`` (default: the model's). ``failed``: where a file that cannot be used goes,
        path -> one-line reason, left out of the pairs; without it the first such file raises."""
        waves = {}
        for p in dict.fromkeys(paths):
            try:
                waves[p] = self.load_audio(p)
            except (SpeechIdError, OSError) as e:
                if failed is None:
                    raise
                failed[p] = " ".join(str(e).split())
        emb = dict(zip(waves, self.embed_waveforms(list(waves.values())), strict=True)) if waves else {}
        t, meaning = self.resolve_threshold(threshold)
        pairs = tuple(PairVerdict(a, b, float(np.linalg.norm(emb[a] - emb[b])), t, meaning)
                      for a, b in itertools.combinations(paths, 2) if a in emb and b in emb)
        return Comparison(t, meaning, pairs)
