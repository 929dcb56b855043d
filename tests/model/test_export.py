"""The serving model is self-contained: loaded as Beam's TF handler loads it (``tf.keras.models.load_model``,
no custom objects, no speechid import) after its training data and transform_fn are gone, it gives the
embeddings of the best checkpoint's weights with the statistics baked in."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
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


# -- the one reader of a model directory: model/export.read_config, through Beam's FileSystems ------------------

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

    from speechid.model.export import read_config

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
    from speechid.model.export import read_config

    with pytest.raises(ConfigError, match="missing model_id"):
        read_config(str(_model_dir(tmp_path / "no_id", model_id=None)))
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a JSON object"):
        read_config(str(tmp_path / "list"))
    with pytest.raises(ConfigError, match="model directory not found"):
        read_config(str(tmp_path / "absent"))
