"""Trainer: a run killed after epoch 1 resumes at epoch 2 with its optimizer state, and ends exactly where an
uninterrupted run ends; checkpoints, best-by-dev bookkeeping, TensorBoard logs and the exported config."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from speechid.config import THRESHOLD
from speechid.errors import ConfigError
from speechid.operating_points import OperatingPoints

from .conftest import TRAIN_KW, tiny_train


class Killed(Exception):
    """Stands for the process dying right after epoch 1's checkpoint was written."""


def checkpoint_values(model_dir: str) -> dict:
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")))
    names = [n for n in reader.get_variable_to_shape_map() if "model" in n or "optimizer" in n]
    return {n: reader.get_tensor(n) for n in names if not n.startswith("_CHECKPOINTABLE")}


@pytest.fixture(scope="module")
def resumed(tiny_data, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("resumed"))
    epochs_seen = []

    def die_after_first(epoch, summary):
        epochs_seen.append((epoch, summary["dev_eer"]))
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        tiny_train(tiny_data, model_dir, on_epoch_end=die_after_first)
    after_kill = {
        "exported": os.path.exists(os.path.join(model_dir, "saved_model")),
        "optimizer_steps": int(
            tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints")).get_tensor(
                "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"
            )
        ),
    }
    with pytest.raises(ConfigError, match="--resume"):
        tiny_train(tiny_data, model_dir)  # a second run without resume must not clobber the first
    result = tiny_train(
        tiny_data, model_dir, resume=True, on_epoch_end=lambda e, s: epochs_seen.append((e, s["dev_eer"]))
    )
    return model_dir, result, after_kill, epochs_seen


def test_resume_continues_at_epoch_2_with_optimizer_state(resumed, tiny_model):
    model_dir, result, after_kill, epochs_seen = resumed
    steps = TRAIN_KW["steps_per_epoch"]
    assert not after_kill["exported"]
    assert after_kill["optimizer_steps"] == steps
    assert result["start_epoch"] == 2 and result["epochs_run"] == [2] and result["final_epoch"] == 2
    assert result["optimizer_steps"] == 2 * steps  # Adam's step counter came back from the checkpoint
    assert [e for e, _ in epochs_seen] == [1, 2]
    # Same seed, same per-epoch batches, same restored Adam moments: the interrupted run ends where the
    # uninterrupted one (tiny_model) does. A reinitialised optimizer would land elsewhere.
    want = checkpoint_values(tiny_model[0])
    got = checkpoint_values(model_dir)
    assert set(got) == set(want) and sum("optimizer/_variables" in n for n in got) > 2  # Adam's m and v
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


def test_best_by_dev_eer_and_exported_config(resumed, tiny_data):
    model_dir, result, _, epochs_seen = resumed
    eers = [eer for _, eer in epochs_seen]
    assert result["best_dev_eer"] == pytest.approx(min(eers))
    assert result["best_epoch"] == 1 + int(np.argmin(eers))
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    assert config["model_id"] == result["model_id"] and len(config["model_id"]) == 16
    assert config["distance"] == "euclidean"
    # operating points measured on the dev speakers at export; the default threshold is their seed point
    ops = OperatingPoints.from_dict(config["operating_points"])
    assert config["threshold"] == ops.threshold == ops.clip.points["seed"].threshold
    assert ops.measured_on["split"] == "dev" and ops.clip.points[f"at_{THRESHOLD:g}"].threshold == THRESHOLD
    assert config["sample_rate"] == 16_000 and config["window_s"] == 1.0 and config["hop_s"] == 0.5
    assert config["embedding_dim"] == 8 and config["features"]["n_mels"] == 40
    from speechid.model.stats import load_stats

    assert config["data_fingerprint"] == load_stats(tiny_data).fingerprint
    assert config["trainable_parameters"] == result["trainable_parameters"]
    assert config["training"]["best_epoch"] == result["best_epoch"]
    # Best weights live under checkpoints/best; one TensorBoard event file with the scalars.
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints", "best")).endswith(
        f"best-{result['best_epoch']}"
    )
    events = os.listdir(os.path.join(model_dir, "logs"))
    tags = {
        v.tag
        for e in tf.compat.v1.train.summary_iterator(os.path.join(model_dir, "logs", events[0]))
        for v in e.summary.value
    }
    assert {"loss", "dev_eer", "clips_per_s"} <= tags


def test_resume_with_another_network_is_a_config_error(resumed, tiny_data):
    from speechid.model.network import NetworkConfig

    with pytest.raises(ConfigError, match="does not fit this network"):
        tiny_train(tiny_data, resumed[0], resume=True, network=NetworkConfig(lstm_units=(8,), embedding_dim=8))


def test_refuses_bad_inputs_before_building_anything(tiny_data, tmp_path):
    from speechid.model.features import FeatureConfig
    from speechid.model.stats import load_stats

    with pytest.raises(ConfigError, match="no train records"):
        tiny_train(str(tmp_path), str(tmp_path / "m"), stats=load_stats(tiny_data))
    with pytest.raises(ConfigError, match="mel bins"):
        tiny_train(tiny_data, str(tmp_path / "m"), features=FeatureConfig(n_mels=20))
    with pytest.raises(ConfigError, match="no tf.Transform output"):
        tiny_train(str(tmp_path), str(tmp_path / "m"))
    assert not os.path.exists(tmp_path / "m")


def _data_copy_with_dev(tiny_data, tmp_path, dev_records) -> str:
    """tiny_data's train records and statistics, with ``dev_records`` (ClipRecords) as its dev split."""
    import shutil

    from speechid import schema

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns("dev-*"))
    with tf.io.TFRecordWriter(f"{schema.record_prefix(str(data), 'dev')}-00000-of-00001.tfrecord.gz", "GZIP") as w:
        for rec in dev_records:
            w.write(schema.to_example(rec))
    return str(data)


def _dev_record(i: int, client: str, audio) -> "object":
    from speechid import schema

    return schema.ClipRecord(clip_id=f"dev_{i}.mp3", client_id=client, audio=audio, sample_rate=16_000,
                             split="dev", source="tiny.tar.gz", path=f"clips/dev_{i}.mp3")


def test_a_dev_split_with_one_speaker_fails_before_training(tiny_data, tmp_path, capsys):
    from tests.conftest import run_cli, tree_digest

    from .conftest import voice

    data = _data_copy_with_dev(tiny_data, tmp_path, [_dev_record(i, "only", voice(100, 1.2, i)) for i in range(3)])
    before = tree_digest(tmp_path)
    code, err, out = run_cli(["train", "--data", data, "--model-dir", str(tmp_path / "model"), "--epochs", "3"],
                             capsys)
    assert code == 2 and err == [
        f"speechid train: error: {data}: the dev split has 1 speaker (no different-speaker pairs); the dev EER "
        "needs both (re-split the corpus)"
    ]
    assert "epoch" not in out and tree_digest(tmp_path) == before  # no model folder, nothing trained


def test_a_model_dir_that_is_someone_elses_or_inside_the_data_is_refused(tiny_data, tmp_path):
    from speechid.errors import OutputError
    from tests.conftest import tree_digest

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("not a model")
    before, data_before = tree_digest(tmp_path), tree_digest(tiny_data)
    with pytest.raises(OutputError, match=r"^--model-dir .*mine: not empty and not written by `speechid train`"):
        tiny_train(tiny_data, str(mine))
    with pytest.raises(OutputError, match=r"^--model-dir .*model is inside the input"):
        tiny_train(tiny_data, os.path.join(tiny_data, "model"))
    assert tree_digest(tmp_path) == before and tree_digest(tiny_data) == data_before


def test_a_model_at_chance_level_is_exported_with_a_warning(tiny_data, tmp_path, monkeypatch, resumed):
    from speechid.model import trainer

    # The dev EER this run measures is what a model that cannot tell speakers apart scores.
    monkeypatch.setattr(trainer, "all_pairs_eer", lambda embeddings, speakers: 0.5)
    lines = []
    result = tiny_train(tiny_data, str(tmp_path / "model"), epochs=1, steps_per_epoch=1, log=lines.append)
    assert result["best_dev_eer"] == pytest.approx(0.5)
    chance = [w for w in result["warnings"] if "near chance" in w]
    assert len(chance) == 1 and "best dev EER is 50.0%, near chance (50%)" in chance[0]
    assert f"warning: {chance[0]}" in lines
    assert os.path.exists(tmp_path / "model" / "config.json")  # exported all the same: a warning, not a refusal
    best = resumed[1]["best_dev_eer"]  # a real run: warned exactly when its EER is near chance
    assert any("near chance" in w for w in resumed[1]["warnings"]) == (best >= trainer.CHANCE_EER)
    # 3 dev speakers of 4 clips: the operating points are exported, with the warning said and recorded
    few = [w for w in result["warnings"] if "operating points" in w]
    assert len(few) == 1 and "3 speakers and 18 same-speaker pairs" in few[0] and f"warning: {few[0]}" in lines
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert "3 speakers" in config["operating_points"]["measured_on"]["warning"]
