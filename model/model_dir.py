"""The model directory's one reader: config.json checked field by field and against the serving model.

Layout (written by ``speechid.model.export.export_model``; read by the Encoder, the embed pipeline, the
evaluation and the index build)::

    <model_dir>/config.json      sample_rate, window_s, hop_s, embedding_dim, threshold, model_id,
                                 data_fingerprint, features, network, trainable_parameters, training,
                                 operating_points (measured on dev speakers, see speechid.operating_points)
    <model_dir>/saved_model/     Keras 2 SavedModel: float32 waveform [batch, samples] at sample_rate
                                 -> float32 unit-norm embeddings [batch, embedding_dim]
    <model_dir>/saved_model/assets.extra/speechid.json
                                 the serving model's identity: model_id, config_fingerprint, embedding_dim
                                 (SavedModel's folder for files its graph does not load; it travels with
                                 saved_model/, so another model's saved_model/ brings its own)
    <model_dir>/metrics.json     written by the last ``speechid evaluate``

``threshold`` is the default of ``operating_points`` when the model was calibrated (the block is its one
home; ``read_config`` refuses a file where the two disagree, and ``write_operating_points`` replaces both
at once). ``model_id`` fingerprints the weights and the config without them, so recalibrating
(``speechid calibrate``) keeps the model_id: the vectors do not change, only what a distance is taken to mean.

A model directory that contradicts itself is refused with one line naming the file, never used:
``read_config`` (no TensorFlow) type- and range-checks every field (``check_config``) and matches config.json
against the serving model's identity (its model_id, the fingerprint of config.json's fingerprinted fields,
its output size); ``check_serving_model``, where the weights are loaded (``Encoder.load``), recomputes the
model_id from the weights and config.json. A model exported before the identity file existed is accepted
without it: its weights are checked where they are loaded (``Encoder.load``, and once up front by
``verify_serving_model`` for ``speechid embed``).

This module imports nothing of the model package, so everything above it (export, encoder, calibration,
evaluation, trainer) reads a model directory the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np

from speechid import outputs
from speechid.errors import ConfigError
from speechid.operating_points import OperatingPoints

CONFIG_JSON = "config.json"
SAVED_MODEL_DIR = "saved_model"
IDENTITY_FILE = "assets.extra/speechid.json"  # inside saved_model/: the serving model's model_id
_NOT_FINGERPRINTED = ("model_id", "threshold", "operating_points")
REQUIRED_KEYS = ("sample_rate", "window_s", "hop_s", "embedding_dim", "threshold", "model_id")  # what readers use


def _fingerprinted(config: dict) -> bytes:
    return json.dumps({k: v for k, v in config.items() if k not in _NOT_FINGERPRINTED}, sort_keys=True).encode()


def model_fingerprint(weights: list[np.ndarray], config: dict) -> str:
    """16 hex digits identifying the weights and the config (everything but model_id itself)."""
    h = hashlib.sha256()
    for w in weights:
        w = np.ascontiguousarray(w, dtype=np.float32)
        h.update(str(w.shape).encode())
        h.update(w.tobytes())
    h.update(_fingerprinted(config))
    return h.hexdigest()[:16]


def config_fingerprint(config: dict) -> str:
    """16 hex digits identifying the config alone (the part of ``model_fingerprint`` that is not weights):
    the serving model records it, so an edited config.json is caught without loading TensorFlow."""
    return hashlib.sha256(_fingerprinted(config)).hexdigest()[:16]


def write_config(model_dir: str, config: dict) -> None:
    """config.json into ``model_dir``, atomically (written beside its final name, then renamed)."""
    outputs.write_json(os.path.join(model_dir, CONFIG_JSON), config)


def write_operating_points(model_dir: str, ops: OperatingPoints) -> dict:
    """Replace the model's operating points (and so its default threshold) in config.json, atomically."""
    config = read_config(model_dir)
    config["operating_points"] = ops.to_dict()
    config["threshold"] = ops.threshold
    write_config(model_dir, config)
    return config


def operating_points(config: dict, where: str = CONFIG_JSON) -> OperatingPoints | None:
    """The validated operating points of a config read by ``read_config`` (None for an uncalibrated model)."""
    block = config.get("operating_points")
    return None if block is None else OperatingPoints.from_dict(block, where)


def _positive_number(config: dict, key: str, path: str) -> float:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{path}: {key} {json.dumps(value)} is not a positive, finite number")
    return float(value)


def _positive_int(config: dict, key: str, path: str) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{path}: {key} {json.dumps(value)} is not a positive whole number")
    return value


def _check_copies(config: dict, path: str, rate: int, dim: int) -> None:
    """The copies of the feature rate and the embedding size inside the config agree with its top level."""
    copies = (("features", "sample_rate", rate, "sample_rate"),
              ("network", "embedding_dim", dim, "embedding_dim"))
    for block, key, value, name in copies:
        inner = config.get(block)
        if isinstance(inner, dict) and key in inner and inner[key] != value:
            raise ConfigError(f"{path}: {name} {value}, but {block}.{key} is {json.dumps(inner[key])}")
    shape = config.get("output", {}).get("shape") if isinstance(config.get("output"), dict) else None
    if isinstance(shape, list) and shape and shape[-1] != dim:
        raise ConfigError(f"{path}: embedding_dim {dim}, but output.shape is {json.dumps(shape)}")


def check_config(config: dict, path: str) -> dict:
    """Type- and range-check the fields every reader uses, and their copies inside the config (the feature
    rate, the network's and the output's size): a ConfigError naming ``path`` for the first that is wrong."""
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise ConfigError(f"{path}: missing {', '.join(missing)}")
    rate = _positive_int(config, "sample_rate", path)
    dim = _positive_int(config, "embedding_dim", path)
    for key in ("window_s", "hop_s"):
        if round(_positive_number(config, key, path) * rate) < 1:
            raise ConfigError(f"{path}: {key} {config[key]} is shorter than one sample at {rate} Hz")
    _positive_number(config, "threshold", path)
    if not isinstance(config["model_id"], str) or not config["model_id"]:
        raise ConfigError(f"{path}: model_id {json.dumps(config['model_id'])} is not a model fingerprint")
    _check_copies(config, path, rate, dim)
    return config


def _read_identity(model_dir: str) -> tuple[str, dict] | None:
    """(path, content) of the serving model's identity file; None for a model exported before it existed."""
    from apache_beam.io.filesystems import FileSystems  # ~1 s to import; TensorFlow is not needed

    path = FileSystems.join(model_dir, SAVED_MODEL_DIR, *IDENTITY_FILE.split("/"))
    if not FileSystems.exists(path):
        return None
    try:
        with FileSystems.open(path) as f:
            identity = json.loads(f.read().decode("utf-8"))
        if not isinstance(identity, dict):
            raise ValueError("not a JSON object")
        for key, kind in (("model_id", str), ("config_fingerprint", str), ("embedding_dim", int)):
            if not isinstance(identity.get(key), kind):
                raise ValueError(f"no {key}")
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable serving model identity: {e}") from None
    return path, identity


def _check_identity(model_dir: str, config: dict, path: str) -> None:
    """config.json against the identity its serving model was exported with."""
    found = _read_identity(model_dir)
    if found is None:
        return  # exported before the identity file: the weights are checked where they are loaded
    where, identity = found
    if identity["model_id"] != config["model_id"]:
        raise ConfigError(f"{where}: the serving model is model_id {identity['model_id']}, but {path} says "
                          f"{config['model_id']}: saved_model/ and config.json come from different models")
    if identity["embedding_dim"] != config["embedding_dim"]:
        raise ConfigError(f"{path}: embedding_dim {config['embedding_dim']}, but the serving model outputs "
                          f"{identity['embedding_dim']} values")
    if identity["config_fingerprint"] != config_fingerprint(config):
        raise ConfigError(f"{path}: edited after export: its fields no longer match model_id {config['model_id']} "
                          f"(config fingerprint {config_fingerprint(config)}, exported "
                          f"{identity['config_fingerprint']}); restore the exported config.json")


def _load_json(model_dir: str) -> tuple[str, dict]:
    """(path, content) of config.json: a ConfigError for a missing directory, file or JSON object."""
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
    return path, config


def read_config(model_dir: str) -> dict:
    """config.json of a model directory (local or any filesystem Beam reads, gs:// included), checked field by
    field (``check_config``) and against the serving model's identity: the one reader of a model directory's
    description. A ConfigError naming the file for anything that does not hold."""
    from apache_beam.io.filesystems import FileSystems

    path, config = _load_json(model_dir)
    check_config(config, path)
    ops = operating_points(config, path)
    if ops is not None and abs(ops.threshold - float(config["threshold"])) > 1e-9:
        raise ConfigError(f"{path}: threshold {config['threshold']} is not the operating points' default "
                          f"{ops.threshold}; recalibrate with `speechid calibrate`")
    saved = FileSystems.join(model_dir, SAVED_MODEL_DIR)
    # object stores have no folders: there the model's own file stands for saved_model/
    if not (FileSystems.exists(saved) or FileSystems.exists(FileSystems.join(saved, "saved_model.pb"))):
        raise ConfigError(f"{model_dir}: no {SAVED_MODEL_DIR}/ beside {CONFIG_JSON}")
    _check_identity(model_dir, config, path)
    return config


def load_serving_model(model_dir: str):
    """The serving model, loaded exactly as Beam's TF handler does: ``load_model`` without custom objects."""
    import tensorflow as tf

    return tf.keras.models.load_model(os.path.join(model_dir, SAVED_MODEL_DIR), compile=False)


def check_serving_model(model, config: dict, model_dir: str) -> None:
    """The loaded serving model against its config.json (read by ``read_config``): its output size is
    ``embedding_dim`` and its weights with config.json give config.json's model_id. Milliseconds, once per
    load; catches what the identity file cannot (a model exported before it, weights replaced under it)."""
    saved = os.path.join(model_dir, SAVED_MODEL_DIR)
    size = model.output_shape[-1] if isinstance(getattr(model, "output_shape", None), tuple) else None
    if size is not None and size != config["embedding_dim"]:
        raise ConfigError(f"{os.path.join(model_dir, CONFIG_JSON)}: embedding_dim {config['embedding_dim']}, but "
                          f"{saved} outputs {size} values")
    got = model_fingerprint(model.get_weights(), config)
    if got != config["model_id"]:
        raise ConfigError(f"{saved}: its weights with {CONFIG_JSON} give model_id {got}, but {CONFIG_JSON} says "
                          f"{config['model_id']}: config.json was edited or saved_model/ belongs to another model")


def verify_serving_model(model_dir: str, config: dict) -> None:
    """For a reader that never loads the weights itself (``speechid embed``): nothing more when the serving
    model carries its identity (``read_config`` checked it); for a model exported before that, load it once
    (seconds) and ``check_serving_model``."""
    if _read_identity(model_dir) is None:
        check_serving_model(load_serving_model(model_dir), config, model_dir)
