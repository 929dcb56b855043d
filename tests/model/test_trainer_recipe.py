"""Recipe options of the trainer: AAM (+ triplet) with augmentation trains, resumes with its speaker
centres, exports a model without them, records the recipe in config.json; the wall-time budget stops early."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from speechid.errors import ConfigError

from .conftest import tiny_train


def test_aam_with_augmentation_resumes_and_exports_without_centres(tiny_data, tmp_path):
    model_dir = str(tmp_path / "m")
    first = tiny_train(tiny_data, model_dir, epochs=1, loss="triplet+aam", augment="standard", aam_scale=10.0)
    assert np.isfinite(first["last_loss"])
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")))
    shapes = reader.get_variable_to_shape_map()
    centres = [n for n in shapes if n.startswith("aam_centres")]
    assert centres and shapes[centres[0]] == [8, 8]  # embedding_dim x train speakers of tiny_data
    before = reader.get_tensor(centres[0])
    second = tiny_train(tiny_data, model_dir, epochs=2, loss="triplet+aam", augment="standard", aam_scale=10.0,
                        resume=True)
    assert second["start_epoch"] == 2 and second["optimizer_steps"] == 2 * 3
    after = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")))
    assert not np.allclose(after.get_tensor(centres[0]), before)  # the centres kept training
    with open(os.path.join(model_dir, "config.json")) as f:
        training = json.load(f)["training"]
    assert training["loss"] == "triplet+aam" and training["aam_scale"] == 10.0
    assert training["augment"]["preset"] == "standard" and training["augment"]["p_noise"] == 0.5
    served = tf.keras.models.load_model(os.path.join(model_dir, "saved_model"), compile=False)
    assert all("aam" not in v.name for v in served.variables)


def test_time_budget_stops_after_the_epoch_that_crosses_it(tiny_data, tmp_path):
    result = tiny_train(tiny_data, str(tmp_path / "m"), epochs=3, time_budget_s=1e-3)
    assert result["epochs_run"] == [1] and os.path.exists(tmp_path / "m" / "config.json")


def test_unknown_loss_or_augment_is_a_config_error(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="triplet"):
        tiny_train(tiny_data, str(tmp_path / "a"), loss="softmax")
    with pytest.raises(ConfigError, match="standard"):
        tiny_train(tiny_data, str(tmp_path / "b"), augment="loud")
