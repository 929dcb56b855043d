"""The serving model is self-contained: loaded as Beam's TF handler loads it (``tf.keras.models.load_model``,
no custom objects, no speechid import) after its training data and transform_fn are gone, it gives the
embeddings of the best checkpoint's weights with the statistics baked in."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from speechid.model.features import FeatureConfig
from speechid.model.network import NetworkConfig, build_embedder
from speechid.model.stats import load_stats

from .conftest import TINY_NET

LOAD_LIKE_BEAM = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np
    import tensorflow as tf

    model = tf.keras.models.load_model(sys.argv[1])
    inputs = np.load(sys.argv[2])
    out = {k: model(tf.constant(inputs[k])).numpy() for k in inputs.files}
    np.savez(sys.argv[3], **out)
    assert not [m for m in sys.modules if m.startswith("speechid")], "loading needed speechid code"
    print(type(model).__name__, model.count_params())
    """
)


def test_saved_model_loads_without_custom_objects_or_data(tiny_model, tiny_data, tmp_path):
    model_dir, result = tiny_model
    assert not os.path.exists(os.path.join(os.path.dirname(model_dir), "data"))  # the training copy is gone
    rng = np.random.default_rng(0)
    inputs = {"a": rng.uniform(-0.3, 0.3, (3, 16_000)), "b": rng.uniform(-0.3, 0.3, (2, 21_000))}
    np.savez(tmp_path / "in.npz", **{k: v.astype(np.float32) for k, v in inputs.items()})
    script = tmp_path / "load.py"
    script.write_text(LOAD_LIKE_BEAM)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            os.path.join(model_dir, "saved_model"),
            tmp_path / "in.npz",
            tmp_path / "out.npz",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")

    # Reference: the best checkpoint's weights in a freshly built network, with the statistics of the
    # (identical) original data passed in explicitly.
    stats = load_stats(tiny_data)
    ref = build_embedder(stats.mel_mean, stats.mel_var, FeatureConfig(), NetworkConfig(**TINY_NET))
    best = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints", "best"))
    tf.train.Checkpoint(model=ref).restore(best).expect_partial()
    for key, x in inputs.items():
        got = out[key]
        assert got.shape == (len(x), TINY_NET["embedding_dim"]) and got.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(got, ref(x.astype(np.float32)).numpy(), atol=1e-5)


def test_config_describes_the_model(tiny_model):
    model_dir, result = tiny_model
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    for key in (
        "sample_rate",
        "window_s",
        "hop_s",
        "embedding_dim",
        "threshold",
        "model_id",
        "data_fingerprint",
        "features",
        "network",
        "trainable_parameters",
    ):
        assert key in config, key
    assert config["network"] == {**NetworkConfig(**TINY_NET).to_dict()}
    assert config["model_id"] == result["model_id"]
    assert not any(name.endswith((".tmp", ".old")) for name in os.listdir(model_dir))


# -- the one reader of a model directory: model/model_dir.read_config, through Beam's FileSystems ------------------

def _model_dir(root, **config):
    root.mkdir(parents=True)
    body = {"sample_rate": 16000, "window_s": 2.0, "hop_s": 1.0, "embedding_dim": 16, "threshold": 0.83,
            "model_id": "0123456789abcdef", **config}
    (root / "config.json").write_text(json.dumps({k: v for k, v in body.items() if v is not None}))
    (root / "saved_model").mkdir()
    (root / "saved_model" / "saved_model.pb").write_bytes(b"")
    return root


def test_read_config_reads_any_beam_filesystem(tmp_path):
    """A scheme other than the local disk (gs:// in production) is read through FileSystems: here a test
    filesystem that maps ``sidtest://`` onto tmp_path and has no folders, as object stores have none."""
    from apache_beam.io.localfilesystem import LocalFileSystem

    from speechid.model.model_dir import read_config

    prefix = "sidtest://"

    class PrefixedFileSystem(LocalFileSystem):
        @classmethod
        def scheme(cls):
            return "sidtest"

        def exists(self, path):
            local = path[len(prefix):]
            return os.path.isfile(local)  # no folders: only objects exist

        def open(self, path, *args, **kwargs):
            return super().open(path[len(prefix):], *args, **kwargs)

    _model_dir(tmp_path / "m")
    config = read_config(prefix + str(tmp_path / "m"))
    assert config["model_id"] == "0123456789abcdef" and config["embedding_dim"] == 16
    import pytest

    from speechid.errors import ConfigError

    with pytest.raises(ConfigError, match="no config.json"):
        read_config(prefix + str(tmp_path / "nothing"))
    del PrefixedFileSystem


def test_read_config_refuses_what_its_readers_would_trip_on(tmp_path):
    import pytest

    from speechid.errors import ConfigError
    from speechid.model.model_dir import read_config

    with pytest.raises(ConfigError, match="missing model_id"):
        read_config(str(_model_dir(tmp_path / "no_id", model_id=None)))
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a JSON object"):
        read_config(str(tmp_path / "list"))
    with pytest.raises(ConfigError, match="model directory not found"):
        read_config(str(tmp_path / "absent"))


# -- a model directory that contradicts itself is refused, naming the file (issue 21, items 3 and 8) ---------

SMALL_NET = NetworkConfig(lstm_units=(8,), bidirectional=False, embedding_dim=5)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two exported models of one architecture and different weights: (model_dir a, model_dir b)."""
    from speechid.model.export import export_model

    root = tmp_path_factory.mktemp("two_models")
    fc, mean, var = FeatureConfig(n_mels=16), np.full(16, -4.0, np.float32), np.full(16, 5.0, np.float32)
    dirs = []
    for seed in (0, 1):
        tf.keras.utils.set_random_seed(seed)
        net = build_embedder(mean, var, fc, SMALL_NET)
        export_model(net.get_weights(), str(root / f"m{seed}"), mel_mean=mean, mel_var=var, features=fc,
                     network=SMALL_NET, window_s=1.0, hop_s=0.5, data_fingerprint="test")
        dirs.append(str(root / f"m{seed}"))
    return tuple(dirs)


def _copy(model_dir, dest, **edits):
    """A copy of ``model_dir`` at ``dest`` with config.json fields replaced (a value None deletes the key)."""
    shutil.copytree(model_dir, dest)
    path = os.path.join(dest, "config.json")
    with open(path) as f:
        config = json.load(f)
    config.update(edits)
    config = {k: v for k, v in config.items() if v is not None}
    with open(path, "w") as f:
        json.dump(config, f)
    return str(dest)


def test_the_serving_model_carries_its_model_id_and_an_intact_directory_loads(two_models):
    import speechid
    from speechid.model.model_dir import IDENTITY_FILE, config_fingerprint, read_config

    config = read_config(two_models[0])
    with open(os.path.join(two_models[0], "saved_model", IDENTITY_FILE)) as f:
        identity = json.load(f)
    assert identity == {"model_id": config["model_id"], "config_fingerprint": config_fingerprint(config),
                        "embedding_dim": 5}
    assert speechid.Encoder.load(two_models[0]).config["model_id"] == config["model_id"]


@pytest.mark.parametrize("key, value, says", [
    ("threshold", "abc", 'threshold "abc" is not a positive, finite number'),
    ("threshold", None, "threshold null is not a positive, finite number"),
    ("threshold", 0, "threshold 0 is not a positive, finite number"),
    ("window_s", "one", 'window_s "one" is not a positive, finite number'),
    ("window_s", 0, "window_s 0 is not a positive, finite number"),
    ("hop_s", 0, "hop_s 0 is not a positive, finite number"),
    ("hop_s", -0.5, "hop_s -0.5 is not a positive, finite number"),
    ("hop_s", 1e-6, "hop_s 1e-06 is shorter than one sample at 16000 Hz"),
    ("sample_rate", 0, "sample_rate 0 is not a positive whole number"),
    ("sample_rate", 16000.5, "sample_rate 16000.5 is not a positive whole number"),
    ("sample_rate", True, "sample_rate true is not a positive whole number"),
    ("embedding_dim", "16", 'embedding_dim "16" is not a positive whole number'),
    ("model_id", 7, "model_id 7 is not a model fingerprint"),
])
def test_every_config_field_is_type_and_range_checked(tmp_path, key, value, says):
    from speechid.errors import ConfigError
    from speechid.model.model_dir import read_config

    body = {"sample_rate": 16000, "window_s": 2.0, "hop_s": 1.0, "embedding_dim": 16, "threshold": 0.83,
            "model_id": "0123456789abcdef", key: value}
    (tmp_path / "m" / "saved_model").mkdir(parents=True)
    (tmp_path / "m" / "config.json").write_text(json.dumps(body))
    with pytest.raises(ConfigError) as e:
        read_config(str(tmp_path / "m"))
    assert str(e.value) == f"{tmp_path / 'm' / 'config.json'}: {says}"


def test_an_edited_config_is_refused(two_models, tmp_path):
    from speechid.errors import ConfigError
    from speechid.model.model_dir import read_config

    where = str(tmp_path / "{}" / "config.json")
    with pytest.raises(ConfigError, match=f"^{re.escape(where.format('rate'))}: sample_rate 8000, but "
                                          "features.sample_rate is 16000$"):
        read_config(_copy(two_models[0], tmp_path / "rate", sample_rate=8000))
    with pytest.raises(ConfigError, match=f"^{re.escape(where.format('dim'))}: embedding_dim 64, but "
                                          "network.embedding_dim is 5$"):
        read_config(_copy(two_models[0], tmp_path / "dim", embedding_dim=64))
    # a field no other field repeats: the fingerprint the serving model recorded no longer matches
    with pytest.raises(ConfigError, match=f"^{re.escape(where.format('hop'))}: edited after export: its fields no "
                                          "longer match model_id"):
        read_config(_copy(two_models[0], tmp_path / "hop", hop_s=0.25))
    # the copies of a field edited with it: still the fingerprint
    edited = _copy(two_models[0], tmp_path / "both", embedding_dim=64, network={**SMALL_NET.to_dict(),
                                                                                "embedding_dim": 64})
    with open(os.path.join(edited, "config.json")) as f:
        config = json.load(f)
    config["output"]["shape"] = [None, 64]
    with open(os.path.join(edited, "config.json"), "w") as f:
        json.dump(config, f)
    with pytest.raises(ConfigError, match=r"config.json: embedding_dim 64, but the serving model outputs 5 values$"):
        read_config(edited)


def test_another_models_saved_model_is_refused(two_models, tmp_path):
    from speechid.errors import ConfigError
    from speechid.model.model_dir import IDENTITY_FILE, read_config

    a, b = read_config(two_models[0]), read_config(two_models[1])
    mixed = _copy(two_models[0], tmp_path / "mixed")
    shutil.rmtree(os.path.join(mixed, "saved_model"))
    shutil.copytree(os.path.join(two_models[1], "saved_model"), os.path.join(mixed, "saved_model"))
    with pytest.raises(ConfigError) as e:
        read_config(mixed)
    assert str(e.value) == (f"{os.path.join(mixed, 'saved_model', IDENTITY_FILE)}: the serving model is model_id "
                            f"{b['model_id']}, but {os.path.join(mixed, 'config.json')} says {a['model_id']}: "
                            "saved_model/ and config.json come from different models")


def test_a_model_exported_before_the_identity_file_is_checked_by_its_weights(two_models, tmp_path):
    """Without assets.extra/speechid.json (older exports) config.json is accepted by read_config; the weights
    are checked where they are loaded (Encoder.load) and, for embed, once up front."""
    import speechid
    from speechid.errors import ConfigError
    from speechid.model.model_dir import read_config, verify_serving_model

    old = _copy(two_models[0], tmp_path / "old")
    shutil.rmtree(os.path.join(old, "saved_model", "assets.extra"))
    config = read_config(old)
    verify_serving_model(old, config)
    assert speechid.Encoder.load(old).config["model_id"] == config["model_id"]

    mixed = _copy(two_models[0], tmp_path / "mixed")
    shutil.rmtree(os.path.join(mixed, "saved_model"))
    shutil.copytree(os.path.join(two_models[1], "saved_model"), os.path.join(mixed, "saved_model"))
    shutil.rmtree(os.path.join(mixed, "saved_model", "assets.extra"))
    config = read_config(mixed)
    says = (f"^{re.escape(os.path.join(mixed, 'saved_model'))}: its weights with config.json give model_id "
            f"{read_config(two_models[1])['model_id']}, but config.json says {config['model_id']}")
    with pytest.raises(ConfigError, match=says):
        speechid.Encoder.load(mixed)
    with pytest.raises(ConfigError, match=says):
        verify_serving_model(mixed, config)

    bare = _copy(two_models[0], tmp_path / "bare", embedding_dim=64, network=None, output=None)  # no copies
    shutil.rmtree(os.path.join(bare, "saved_model", "assets.extra"))
    with pytest.raises(ConfigError, match=r"config.json: embedding_dim 64, but .*saved_model outputs 5 values$"):
        verify_serving_model(bare, read_config(bare))


def test_cli_refuses_a_contradictory_model_in_one_line(two_models, tmp_path, capsys):
    """`embedding_dim` 64 used to end `speechid embed` in an ArrowInvalid traceback, a bad threshold or window
    in `unexpected ValueError`; now one line naming config.json, exit 2, before any work."""
    from tests.conftest import run_cli

    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "b.wav").write_bytes(b"")
    for name, edit in (("dim", {"embedding_dim": 64}), ("thr", {"threshold": "abc"}), ("win", {"window_s": "one"}),
                       ("rate", {"sample_rate": 0})):
        model = _copy(two_models[0], tmp_path / name, **edit)
        for argv in (["embed", "--model", model, "--input", str(tmp_path / "a.wav"), "--output", str(tmp_path / "o")],
                     ["compare", "--model", model, str(tmp_path / "a.wav"), str(tmp_path / "b.wav")]):
            code, err, out = run_cli(argv, capsys)
            assert code == 2 and len(err) == 1 and "Traceback" not in err[0], (argv, err)
            assert f"{os.path.join(model, 'config.json')}: {next(iter(edit))}" in err[0], err
        assert not (tmp_path / "o").exists()
