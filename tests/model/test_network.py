"""The embedder's size and output contract."""

import numpy as np
import pytest
import tensorflow as tf

from speechid.model.features import FeatureConfig
from speechid.model.network import NetworkConfig, build_embedder, count_parameters, trainable_parameters


@pytest.mark.parametrize(("n_mels", "expected"), [(40, 600_192), (80, 641_152)])
def test_default_parameter_count_is_the_seeds(n_mels, expected):
    # The seed (2 x BiLSTM 128, Dense 128) on its 80 mel bins has 641,152; our 40-bin default 600,192.
    model = build_embedder(np.zeros(n_mels), np.ones(n_mels), FeatureConfig(n_mels=n_mels))
    assert trainable_parameters(model) == expected
    assert count_parameters(n_mels) == expected


def test_closed_form_count_matches_keras_for_other_sizes():
    config = NetworkConfig(lstm_units=(24, 8, 12), bidirectional=False, embedding_dim=5)
    model = build_embedder(np.zeros(16), np.ones(16), FeatureConfig(n_mels=16), config)
    assert trainable_parameters(model) == count_parameters(16, config)


def test_waveform_in_unit_embeddings_out():
    fc = FeatureConfig(n_mels=16)
    model = build_embedder(np.zeros(16), np.ones(16), fc, NetworkConfig(lstm_units=(8, 8), embedding_dim=6))
    x = np.random.default_rng(0).standard_normal((3, 8000)).astype(np.float32) * 0.1
    y = model(x).numpy()
    assert y.shape == (3, 6) and y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)


def test_statistics_must_match_the_features():
    from speechid.errors import ConfigError

    with pytest.raises(ConfigError, match="40 mel bins"):
        build_embedder(np.zeros(80), np.ones(80), FeatureConfig(n_mels=40))


def test_statistics_pooling_counts_and_exports_without_custom_objects(tmp_path):
    """``pooling="stats"`` (mean and standard deviation over frames): the closed-form count holds, and the
    exported model loads as Beam loads it and embeds what the in-process network does."""
    from speechid.model.export import export_model
    from speechid.model.model_dir import load_serving_model

    fc, config = FeatureConfig(n_mels=16), NetworkConfig(lstm_units=(8, 6), embedding_dim=5, pooling="stats")
    mean, var = np.full(16, -4.0, np.float32), np.full(16, 5.0, np.float32)
    model = build_embedder(mean, var, fc, config)
    assert trainable_parameters(model) == count_parameters(16, config)
    assert count_parameters(16, config) - count_parameters(16, NetworkConfig((8, 6), True, 5, "mean")) == 12 * 5
    export_model(model.get_weights(), str(tmp_path / "m"), mel_mean=mean, mel_var=var, features=fc, network=config,
                 window_s=1.0, hop_s=0.5, data_fingerprint="test")
    x = np.random.default_rng(1).uniform(-0.3, 0.3, (2, 12_000)).astype(np.float32)
    got = load_serving_model(str(tmp_path / "m"))(x).numpy()
    np.testing.assert_allclose(got, model(x).numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_utterance_norm_removes_a_gain_and_exports_without_custom_objects(tmp_path):
    """``utterance_norm``: each clip's mean log-mel is subtracted, so a fixed gain (a constant added to every
    log-mel bin) leaves the embedding where it was; without it the embedding moves. The exported model
    loads as Beam loads it and agrees with the in-process network."""
    from speechid.model.export import export_model
    from speechid.model.model_dir import load_serving_model

    fc = FeatureConfig(n_mels=16)
    mean, var = np.full(16, -4.0, np.float32), np.full(16, 5.0, np.float32)
    x = np.random.default_rng(2).uniform(-0.3, 0.3, (2, 12_000)).astype(np.float32)
    moved = {}
    for norm in (False, True):
        tf.keras.utils.set_random_seed(0)
        config = NetworkConfig(lstm_units=(8,), embedding_dim=5, utterance_norm=norm)
        model = build_embedder(mean, var, fc, config)
        moved[norm] = float(np.abs(model(x * 8.0).numpy() - model(x).numpy()).max())
    assert moved[True] < 1e-3 < moved[False]
    assert NetworkConfig.from_dict(config.to_dict()) == config
    export_model(model.get_weights(), str(tmp_path / "m"), mel_mean=mean, mel_var=var, features=fc, network=config,
                 window_s=1.0, hop_s=0.5, data_fingerprint="test")
    np.testing.assert_allclose(load_serving_model(str(tmp_path / "m"))(x).numpy(), model(x).numpy(), atol=1e-5)
