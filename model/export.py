"""Write a model directory: a self-contained serving SavedModel plus config.json describing it.

``export_model`` is the one writer (the layout, and its one reader, are in ``speechid.model.model_dir``).
The serving model is rebuilt in float32 (whatever policy trained it; ``serving_model``) with the
normalisation statistics as graph constants, and ``tf.keras.models.load_model(<model_dir>/saved_model)``
loads it without custom objects, which is how Beam's ``TFModelHandlerTensor`` loads it. Both files appear
atomically: written beside their final name, then renamed.

The operating points come measured (``speechid.model.calibration.measure``, which the trainer runs on dev
speakers with ``serving_model``); without them config.json holds the threshold given, or the seed's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import TYPE_CHECKING

import numpy as np

from speechid import __version__
from speechid.config import THRESHOLD
from speechid.errors import ConfigError
from speechid.model import model_dir as _reader
from speechid.model.features import FeatureConfig
from speechid.model.model_dir import IDENTITY_FILE, SAVED_MODEL_DIR, config_fingerprint, model_fingerprint, write_config
from speechid.operating_points import OperatingPoints, clip_threshold

if TYPE_CHECKING:  # the network imports TensorFlow; reading a config.json must not
    from speechid.model.network import NetworkConfig

FORMAT_VERSION = 1

# Compatibility for readers outside model/ that still import these from here (pipelines/embed.py,
# app/demo.py, app/demo_real.py, benchmarks/bench_embed.py); their home is speechid.model.model_dir.
read_config = _reader.read_config
operating_points = _reader.operating_points
verify_serving_model = _reader.verify_serving_model
load_serving_model = _reader.load_serving_model


def serving_model(weights: list[np.ndarray], mel_mean: np.ndarray, mel_var: np.ndarray, features: FeatureConfig,
                  network: NetworkConfig):
    """The float32 embedder of ``weights`` (whatever policy trained them): what ``export_model`` saves."""
    import tensorflow as tf

    from speechid.model.network import build_embedder

    policy = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy("float32")
    try:
        serving = build_embedder(mel_mean, mel_var, features, network)
    finally:
        tf.keras.mixed_precision.set_global_policy(policy)
    serving.set_weights(weights)
    return serving


def export_model(
    weights: list[np.ndarray],
    model_dir: str,
    *,
    mel_mean: np.ndarray,
    mel_var: np.ndarray,
    features: FeatureConfig,
    network: NetworkConfig,
    window_s: float,
    hop_s: float,
    data_fingerprint: str,
    threshold: float | None = None,
    operating_points: OperatingPoints | None = None,
    training: dict | None = None,
) -> dict:
    """Write ``saved_model/`` and ``config.json`` into ``model_dir`` from trained ``weights``; return the config.

    ``operating_points``: measured on speakers not trained on (``speechid.model.calibration.measure``); they
    go into config.json and their default is the threshold. Without them (no dev split) ``threshold`` is
    written, or the seed's ``speechid.config.THRESHOLD`` when None: every reader then says the threshold is
    uncalibrated. Giving both is refused (the operating points are the threshold's one home).
    """
    from speechid.model.network import trainable_parameters

    if operating_points is not None and threshold is not None:
        raise ConfigError(f"threshold {threshold}: a calibrated model's threshold is its operating points' default")
    os.makedirs(model_dir, exist_ok=True)
    serving = serving_model(weights, mel_mean, mel_var, features, network)
    config = {
        "format_version": FORMAT_VERSION,
        "speechid_version": __version__,
        "sample_rate": int(features.sample_rate),
        "window_s": float(window_s),
        "hop_s": float(hop_s),
        "embedding_dim": int(network.embedding_dim),
        "threshold": float(clip_threshold(operating_points, threshold, fallback=THRESHOLD)[0]),
        "distance": "euclidean",
        "data_fingerprint": data_fingerprint,
        "features": features.to_dict(),
        "network": network.to_dict(),
        "trainable_parameters": trainable_parameters(serving),
        "input": {"name": "waveform", "dtype": "float32", "shape": [None, None]},
        "output": {"dtype": "float32", "shape": [None, int(network.embedding_dim)], "unit_norm": True},
        "training": training or {},
    }
    if operating_points is not None:
        config["operating_points"] = operating_points.to_dict()
    config = json.loads(json.dumps(config))  # fingerprint what readers will read back (tuples as lists, ...)
    config["model_id"] = model_fingerprint(serving.get_weights(), config)
    _save_serving(serving, os.path.join(model_dir, SAVED_MODEL_DIR), config)
    write_config(model_dir, config)
    return config


def _save_serving(serving, final: str, config: dict) -> None:
    """The SavedModel and its identity file at ``final``, replacing what was there only once both are written."""
    tmp = final + ".tmp"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    # Keras 2 logs "Compiled the loaded model, but the compiled metrics have yet to be built" when it saves
    # any uncompiled model; a serving model is never compiled, so the line only misleads users.
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        serving.save(tmp, save_format="tf", include_optimizer=False)
    finally:
        tf_logger.setLevel(level)
    _write_identity(tmp, config, int(serving.output_shape[-1]))
    if os.path.exists(final):
        old = final + ".old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _write_identity(saved_model: str, config: dict, output_size: int) -> None:
    path = os.path.join(saved_model, IDENTITY_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"model_id": config["model_id"], "config_fingerprint": config_fingerprint(config),
                   "embedding_dim": output_size}, f, indent=2, sort_keys=True)
        f.write("\n")
