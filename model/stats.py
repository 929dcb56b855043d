"""The training data's statistics, as the prep pipeline's tf.Transform analysis leaves them in
``<data dir>/transform_fn/``: per-mel-bin log-mel mean and variance, the speaker vocabulary, the frame count.

This is the model's side of the contract between prep and training: ``speechid.pipelines.transform``
writes these outputs (``schema.MEL_MEAN``, ``schema.MEL_VAR``, ``FRAMES_TOTAL``, the ``schema.SPEAKER_VOCAB``
vocabulary) and the trainer reads them back here, so the model never imports the pipeline package.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from speechid import schema
from speechid.errors import ConfigError

FRAMES_TOTAL = "frames_total"  # int64: log-mel frames the statistics were computed over


@dataclass(frozen=True)
class TransformStats:
    """What training needs from the analysis, read back from ``transform_fn/``."""

    mel_mean: np.ndarray  # [n_mels] float32
    mel_var: np.ndarray  # [n_mels] float32
    speakers: list[str]  # train client_ids; the label of speakers[i] is i
    frames: float  # log-mel frames the statistics were computed over

    @property
    def fingerprint(self) -> str:
        """Identifies the statistics and vocabulary a model was trained with (goes into config.json)."""
        h = hashlib.sha256()
        h.update(np.asarray(self.mel_mean, np.float32).tobytes())
        h.update(np.asarray(self.mel_var, np.float32).tobytes())
        h.update("\n".join(self.speakers).encode("utf-8"))
        return h.hexdigest()[:16]


def load_stats(data_dir: str) -> TransformStats:
    """Read the analysis results that the prep pipeline wrote under ``data_dir``."""
    import tensorflow as tf
    import tensorflow_transform as tft

    missing = ConfigError(f"{data_dir}: no tf.Transform output ({schema.TRANSFORM_FN_DIR}/) found")
    # TFTransformOutput is lazy: on a folder without the analysis it hands back None, not an error.
    if not tf.io.gfile.exists(os.path.join(data_dir, schema.TRANSFORM_FN_DIR)):
        raise missing
    try:
        out = tft.TFTransformOutput(data_dir)
        vocab_file = out.vocabulary_file_by_name(schema.SPEAKER_VOCAB)
    except (OSError, tf.errors.NotFoundError, ValueError) as e:
        raise ConfigError(f"{missing}: {e}") from None
    if vocab_file is None:
        raise missing
    with tf.io.gfile.GFile(vocab_file, "rb") as f:
        speakers = [line.rstrip(b"\n").decode("utf-8") for line in f if line.strip()]
    # The statistics are constants of the transform graph: run it once on a dummy clip to read them.
    dummy = {
        "audio": tf.constant([b"\x00\x00" * 800]),
        "client_id": tf.constant([b""]),
    }
    result = out.transform_raw_features(dummy, drop_unused_features=True)
    stats = TransformStats(
        mel_mean=result[schema.MEL_MEAN].numpy()[0].astype(np.float32),
        mel_var=result[schema.MEL_VAR].numpy()[0].astype(np.float32),
        speakers=speakers,
        frames=float(result[FRAMES_TOTAL].numpy()[0]),
    )
    # An empty train split analyses to NaN statistics and tf.Transform's placeholder vocabulary entry.
    if stats.frames <= 0 or not (np.all(np.isfinite(stats.mel_mean)) and np.all(np.isfinite(stats.mel_var))):
        raise ConfigError(f"{data_dir}: the tf.Transform analysis saw no train audio (is the train split empty?)")
    return stats
