"""Fixtures shared by the pipeline tests."""

import pytest


@pytest.fixture(scope="session")
def dask_client():
    """One loopback dask cluster for the dask runner's tests: 2 worker processes of 1 thread each, 127.0.0.1
    only, no fixed port. Started by the first test that asks for it (a run without those tests starts none),
    torn down at the end of the session; shared so that its workers import TensorFlow once."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=":0")
    client = Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """An exported, untrained model small enough to build in seconds (16 mel bins, LSTM 16+16, 8-d
    embeddings, 1 s windows every 0.5 s): what the embed tests run. Read-only, so one serves the session."""
    import numpy as np

    from speechid.model.export import export_model
    from speechid.model.features import FeatureConfig
    from speechid.model.network import NetworkConfig, build_embedder

    out = str(tmp_path_factory.mktemp("tiny_model"))
    features = FeatureConfig(n_mels=16)
    network = NetworkConfig(lstm_units=(16, 16), embedding_dim=8)
    mean, var = np.full(16, -6.0, np.float32), np.full(16, 4.0, np.float32)
    weights = build_embedder(mean, var, features, network).get_weights()
    export_model(weights, out, mel_mean=mean, mel_var=var, features=features, network=network,
                 window_s=1.0, hop_s=0.5, data_fingerprint="test")
    return out
