"""The embed job's stages after reading, each a composite that never touches files.

Each clip is decoded with ``speechid.audio`` (the Encoder's duration and speech rules), cut into fixed
windows (``speechid.model.windows.window_waveform``, the same cut the Encoder uses, so batches are
dense), run through ``RunInference(KeyedModelHandler(TFModelHandlerNumpy))`` keyed by clip (the model is
loaded once per worker process and shared across its threads by RunInference), then each clip's windows
are averaged and L2-normalised by a combiner (lifted, so most clips are finished before any shuffle):
``EmbedClips``. ``EmbedConfig`` holds what they need. ``speechid.pipelines.embed.EmbedCorpus`` wires them
to the manifest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference

from speechid import audio as audio_lib
from speechid.errors import AudioError, ConfigError
from speechid.model.windows import window_waveform
from speechid.pipelines.embed_inputs import ClipSource
from speechid.pipelines.failures import FAILURES, Failure
from speechid.pipelines.metrics import EMBED, Progress

TABLE_ROWS = "rows"  # EmbedClips's output of Parquet row dicts (``speechid.embedding_table``)


@dataclass(frozen=True)
class EmbedConfig:
    """What the windowing needs; read from the model directory's config.json."""

    sample_rate: int
    window_s: float
    hop_s: float
    min_duration: float | None = audio_lib.INFERENCE_LIMITS.min_duration
    max_duration: float | None = audio_lib.INFERENCE_LIMITS.max_duration
    min_speech: float | None = audio_lib.INFERENCE_LIMITS.min_speech

    def __post_init__(self):
        if self.hop_s <= 0 or self.window_s <= 0:
            raise ConfigError(f"--window {self.window_s} / --hop {self.hop_s}: seconds, both must be positive")
        low, high = self.min_duration or 0.0, self.max_duration
        if low < 0 or (high is not None and not low < high):
            raise ConfigError(f"--min-duration {self.min_duration} / --max-duration {self.max_duration}: "
                              "need 0 <= min < max")


class DecodeAndWindow(beam.DoFn):
    """ClipSource -> (clip key, window) for every window; undecodable clips to the ``failures`` output.

    The key is a tuple of primitives (clip_id, source, speaker_id, split, duration_s, n_windows) so it
    has a deterministic coder and carries the clip's metadata through RunInference and the combine.
    """

    def __init__(self, config: EmbedConfig):
        self._config = config
        self._limits = audio_lib.Limits(
            min_duration=config.min_duration, max_duration=config.max_duration, min_speech=config.min_speech
        )
        self._decoded = Metrics.counter(EMBED, "clips_decoded")
        self._failed = Metrics.counter(EMBED, "clips_failed")
        self._windows = Metrics.counter(EMBED, "windows")
        self._progress = None

    def setup(self):
        self._progress = Progress("speechid embed (decode, window)", 30.0)

    def process(self, clip: ClipSource):
        cfg = self._config
        try:
            if clip.data is not None:
                wave = audio_lib.decode(clip.data, cfg.sample_rate, self._limits, name=clip.clip_id)
            elif clip.audio is not None:
                wave = audio_lib.resample(clip.audio, clip.sample_rate, cfg.sample_rate)
                if len(wave) == 0:
                    raise AudioError("empty", clip.clip_id, "no samples")
                # Already decoded (TFRecords): the same duration rule decode() applies to encoded clips.
                audio_lib.check_duration(len(wave) / cfg.sample_rate, self._limits, clip.clip_id)
            else:
                raise AudioError("empty", clip.clip_id, "no audio")
            # The Encoder's rule too (parity): only the speech is embedded, a clip without enough is refused.
            wave = audio_lib.trim_silence(wave, cfg.sample_rate, self._limits, clip.clip_id)
        except AudioError as e:
            self._failed.inc()
            self._progress.tick("clips_failed")
            yield beam.pvalue.TaggedOutput(FAILURES, Failure(clip.source, clip.clip_id, e.reason, e.detail, clips=1))
            return
        windows = window_waveform(wave, cfg.sample_rate, cfg.window_s, cfg.hop_s)
        key = (clip.clip_id, clip.source, clip.speaker_id, clip.split, len(wave) / cfg.sample_rate, len(windows))
        self._decoded.inc()
        self._windows.inc(len(windows))
        self._progress.tick("clips_decoded")
        for w in windows:
            yield key, w


class MeanUnitVector(beam.CombineFn):
    """Sum of window embeddings -> their mean direction, L2-normalised (``speechid.model.windows.pool_embeddings``)."""

    def create_accumulator(self):
        return None

    def add_input(self, acc, vec):
        vec = np.asarray(vec, dtype=np.float64)
        return vec.copy() if acc is None else acc + vec

    def merge_accumulators(self, accs):
        accs = [a for a in accs if a is not None]
        return np.sum(accs, axis=0) if accs else None

    def extract_output(self, acc):
        norm = np.linalg.norm(acc)
        return (acc / norm if norm > 0 else acc).astype(np.float32)


def _to_row(item, model_id: str) -> dict:
    (clip_id, source, speaker_id, split, duration_s, n_windows), emb = item
    return {
        "clip_id": clip_id,
        "source": source,
        "speaker_id": speaker_id,
        "split": split,
        "duration_s": float(duration_s),
        "n_windows": int(n_windows),
        "embedding": emb.tolist(),
        "model_id": model_id,
    }


def _prediction_vector(result) -> np.ndarray:
    return np.asarray(result.inference, dtype=np.float32)


class EmbedClips(beam.PTransform):
    """PCollection[ClipSource] -> {rows: Parquet row dicts, failures: Failure per clip that fails}.

    ``model_handler`` is a keyed Beam ModelHandler mapping (key, window) -> (key, PredictionResult);
    ``make_model_handler`` builds the production one, tests pass a fake (as Beam's own tests do).
    """

    def __init__(self, config: EmbedConfig, model_handler, model_id: str, accelerator: str | None = None):
        super().__init__()
        self._config = config
        self._handler = model_handler
        self._model_id = model_id
        self._accelerator = accelerator

    def expand(self, clips):
        windows = clips | "DecodeAndWindow" >> beam.ParDo(DecodeAndWindow(self._config)).with_outputs(
            FAILURES, main="windows"
        )
        inference = RunInference(self._handler)
        if self._accelerator:
            # Only this step needs the GPU: Dataflow puts it on accelerator workers (resource hints).
            inference = inference.with_resource_hints(accelerator=self._accelerator)
        rows = (
            windows.windows
            | "Embed" >> inference
            | "ToVector" >> beam.MapTuple(lambda key, result: (key, _prediction_vector(result)))
            | "PoolWindows" >> beam.CombinePerKey(MeanUnitVector())
            | "ToRow" >> beam.Map(_to_row, self._model_id)
        )
        return {TABLE_ROWS: rows, FAILURES: windows[FAILURES]}


def make_model_handler(model_dir: str, min_batch_size: int, max_batch_size: int):
    from apache_beam.ml.inference.base import KeyedModelHandler
    from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy

    return KeyedModelHandler(
        TFModelHandlerNumpy(
            model_uri=os.path.join(model_dir, "saved_model"),
            min_batch_size=min_batch_size,
            max_batch_size=max_batch_size,
        )
    )

