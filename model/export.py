"""The model directory: a self-contained serving SavedModel plus config.json describing it.

Layout (what the Encoder, the embed pipeline and the evaluation read)::

    <model_dir>/config.json      sample_rate, window_s, hop_s, embedding_dim, threshold, model_id,
                                 data_fingerprint, features, network, trainable_parameters, training,
                                 operating_points (measured on dev speakers, see speechid.operating_points)
    <model_dir>/saved_model/     Keras 2 SavedModel: float32 waveform [batch, samples] at sample_rate
                                 -> float32 unit-norm embeddings [batch, embedding_dim]
    <model_dir>/metrics.json     written by the last ``speechid evaluate``

The serving model is rebuilt in float32 (whatever policy trained it) with the normalisation statistics
as graph constants, and ``tf.keras.models.load_model(<model_dir>/saved_model)`` loads it without
custom objects, which is how Beam's ``TFModelHandlerTensor`` loads it. Both files appear atomically:
written beside their final name, then renamed.

``threshold`` is the default of ``operating_points`` when the model was calibrated (the block is its one
home; ``read_config`` refuses a file where the two disagree). ``model_id`` fingerprints the weights and
the config without them, so recalibrating (``speechid calibrate``) keeps the model_id: the vectors do not
change, only what a distance is taken to mean.

The windowing used at inference lives in ``speechid.model.windows`` and is re-exported here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from typing import TYPE_CHECKING

import numpy as np

from speechid import __version__
from speechid.config import THRESHOLD
from speechid.errors import ConfigError
from speechid.model.features import FeatureConfig
from speechid.model.windows import pool_embeddings, window_waveform  # noqa: F401  (the inference windowing)
from speechid.operating_points import OperatingPoints

if TYPE_CHECKING:  # the network imports TensorFlow; reading a config.json must not
    from speechid.model.network import NetworkConfig

CONFIG_JSON = "config.json"
SAVED_MODEL_DIR = "saved_model"
FORMAT_VERSION = 1
_NOT_FINGERPRINTED = ("model_id", "threshold", "operating_points")
REQUIRED_KEYS = ("sample_rate", "window_s", "hop_s", "embedding_dim", "threshold", "model_id")  # what readers use


def model_fingerprint(weights: list[np.ndarray], config: dict) -> str:
    """16 hex digits identifying the weights and the config (everything but model_id itself)."""
    h = hashlib.sha256()
    for w in weights:
        w = np.ascontiguousarray(w, dtype=np.float32)
        h.update(str(w.shape).encode())
        h.update(w.tobytes())
    h.update(json.dumps({k: v for k, v in config.items() if k not in _NOT_FINGERPRINTED}, sort_keys=True).encode())
    return h.hexdigest()[:16]


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
    training: dict | None = None,
    dev: tuple | None = None,
    seed: int = 0,
) -> dict:
    """Write ``saved_model/`` and ``config.json`` into ``model_dir`` from trained ``weights``; return the config.

    ``dev``: (waveforms, speaker labels) of speakers not trained on; the serving model embeds them and the
    operating points measured on them (``speechid.model.calibration.measure``) go into config.json, their
    default becoming the threshold (``threshold`` is then not used). Without ``dev`` (no dev split),
    ``threshold`` is written, or the seed's ``speechid.config.THRESHOLD`` when None, and no operating points:
    every reader then says the threshold is uncalibrated.
    """
    import tensorflow as tf

    from speechid.model.network import build_embedder, trainable_parameters

    os.makedirs(model_dir, exist_ok=True)
    policy = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy("float32")  # serve in float32 whatever trained the weights
    try:
        serving = build_embedder(mel_mean, mel_var, features, network)
    finally:
        tf.keras.mixed_precision.set_global_policy(policy)
    serving.set_weights(weights)
    ops = None
    if dev is not None:
        from speechid.model.calibration import measure
        from speechid.model.windows import embed_clips

        emb = embed_clips(lambda x: serving(x, training=False).numpy(), dev[0], features.sample_rate, window_s, hop_s)
        ops = measure(emb, dev[1], seed=seed, measured_on={"split": "dev", "data_fingerprint": data_fingerprint})
        threshold = ops.threshold
    elif threshold is None:
        threshold = THRESHOLD

    config = {
        "format_version": FORMAT_VERSION,
        "speechid_version": __version__,
        "sample_rate": int(features.sample_rate),
        "window_s": float(window_s),
        "hop_s": float(hop_s),
        "embedding_dim": int(network.embedding_dim),
        "threshold": float(threshold),
        "distance": "euclidean",
        "data_fingerprint": data_fingerprint,
        "features": features.to_dict(),
        "network": network.to_dict(),
        "trainable_parameters": trainable_parameters(serving),
        "input": {"name": "waveform", "dtype": "float32", "shape": [None, None]},
        "output": {"dtype": "float32", "shape": [None, int(network.embedding_dim)], "unit_norm": True},
        "training": training or {},
    }
    if ops is not None:
        config["operating_points"] = ops.to_dict()
    config["model_id"] = model_fingerprint(serving.get_weights(), config)

    final = os.path.join(model_dir, SAVED_MODEL_DIR)
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
    if os.path.exists(final):
        old = final + ".old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _write_config(model_dir, config)
    return config


def _write_config(model_dir: str, config: dict) -> None:
    cfg_tmp = os.path.join(model_dir, CONFIG_JSON + ".tmp")
    with open(cfg_tmp, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(cfg_tmp, os.path.join(model_dir, CONFIG_JSON))


def write_operating_points(model_dir: str, ops: OperatingPoints) -> dict:
    """Replace the model's operating points (and so its default threshold) in config.json, atomically."""
    config = read_config(model_dir)
    config["operating_points"] = ops.to_dict()
    config["threshold"] = ops.threshold
    _write_config(model_dir, config)
    return config


def operating_points(config: dict, where: str = CONFIG_JSON) -> OperatingPoints | None:
    """The validated operating points of a config read by ``read_config`` (None for an uncalibrated model)."""
    block = config.get("operating_points")
    return None if block is None else OperatingPoints.from_dict(block, where)


def read_config(model_dir: str) -> dict:
    """config.json of a model directory (local or any filesystem Beam reads, gs:// included), checked for the
    keys every reader relies on: the one reader of a model directory's description."""
    from apache_beam.io.filesystems import FileSystems  # ~1 s to import; TensorFlow is not needed

    path = FileSystems.join(model_dir, CONFIG_JSON)
    if FileSystems.get_scheme(model_dir) is None and not os.path.isdir(model_dir):
        raise ConfigError(f"{model_dir}: model directory not found")
    if not FileSystems.exists(path):
        raise ConfigError(f"{model_dir}: not a model directory (no {CONFIG_JSON}); train one with `speechid train`")
    try:
        with FileSystems.open(path) as f:
            config = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable model config: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: unreadable model config: not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise ConfigError(f"{path}: missing {', '.join(missing)}")
    ops = operating_points(config, path)
    if ops is not None and abs(ops.threshold - float(config["threshold"])) > 1e-9:
        raise ConfigError(f"{path}: threshold {config['threshold']} is not the operating points' default "
                          f"{ops.threshold}; recalibrate with `speechid calibrate`")
    saved = FileSystems.join(model_dir, SAVED_MODEL_DIR)
    # object stores have no folders: there the model's own file stands for saved_model/
    if not (FileSystems.exists(saved) or FileSystems.exists(FileSystems.join(saved, "saved_model.pb"))):
        raise ConfigError(f"{model_dir}: no {SAVED_MODEL_DIR}/ beside {CONFIG_JSON}")
    return config


def load_serving_model(model_dir: str):
    """The serving model, loaded exactly as Beam's TF handler does: ``load_model`` without custom objects."""
    import tensorflow as tf

    return tf.keras.models.load_model(os.path.join(model_dir, SAVED_MODEL_DIR), compile=False)
