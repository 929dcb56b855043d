"""Index build: kind choice, meta.json, metadata tables, checks on the input, atomic replacement."""

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from speechid import config
from speechid import embedding_table as et
from speechid.errors import ConfigError
from speechid.indexing import ModelMismatchError, build_index, choose_kind, synthetic
from speechid.indexing.build import ivf_nlist, ivf_nprobe

from .conftest import write_embeddings


def test_auto_kind_is_exact_up_to_200k_then_ivf():
    assert choose_kind(1) == "flat" and choose_kind(200_000) == "flat"
    assert choose_kind(200_001) == "ivf"
    assert choose_kind(500, flat_max=100) == "ivf"
    assert ivf_nlist(1_000_000) == 4000 and ivf_nlist(1000) == 25  # >= 39 training points per cell
    assert 16 <= ivf_nprobe(4000) <= 4000 and ivf_nprobe(10) == 10


def test_build_writes_meta_metadata_and_speaker_centroids(tmp_path, voices):
    x, labels = voices
    speakers = np.array([f"spk{i:03d}" for i in labels], dtype=object)
    speakers[:10] = None  # one voice without labels: indexed, but no speaker centroid
    emb = write_embeddings(tmp_path / "emb", x, speakers, shards=3)
    s = build_index(emb, tmp_path / "idx", kind="ivf", nlist=8, seed=3, threshold=config.THRESHOLD)
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert {k: meta[k] for k in ("dimension", "count", "kind", "metric", "model_id", "threshold", "distance")} == {
        "dimension": 32, "count": 1200, "kind": "ivf", "metric": "l2", "model_id": "model-a",
        "threshold": config.THRESHOLD, "distance": "euclidean"}
    assert meta["params"] == {"nlist": 8, "nprobe": 8, "dedup_nprobe": 4, "train_size": 512}
    assert s.kind == "ivf" and s.count == 1200 and s.speakers == 119
    clips = pq.read_table(tmp_path / "idx" / "clips.parquet")
    assert clips.column_names == ["row", "clip_id", "source", "speaker_id", "split"]
    assert clips.column("row").to_pylist() == list(range(1200))
    assert clips.column("clip_id")[500].as_py() == "clip00500.mp3"
    spk = pq.read_table(tmp_path / "idx" / "speakers.parquet").to_pydict()
    i = spk["speaker_id"].index("spk005")
    expected = x[labels == 5].mean(axis=0)
    np.testing.assert_allclose(spk["centroid"][i], expected / np.linalg.norm(expected), atol=1e-5)
    assert spk["n_clips"][i] == 10 and sum(spk["n_clips"]) == 1190


def test_rebuild_replaces_and_unrelated_directories_are_refused(tmp_path, voices):
    x, labels = voices
    emb = write_embeddings(tmp_path / "emb", x[:100], labels[:100].astype(str))
    build_index(emb, tmp_path / "idx")
    emb2 = write_embeddings(tmp_path / "emb2", x[:50], labels[:50].astype(str))
    build_index(emb2, tmp_path / "idx", kind="hnsw", hnsw_m=8)
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert meta["count"] == 50 and meta["kind"] == "hnsw"
    assert sorted(os.listdir(tmp_path)) == ["emb", "emb2", "idx"]  # no temp or old directory left behind
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="refusing to replace"):
        build_index(emb, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_input_checks_fail_before_anything_is_written(tmp_path, voices):
    x, labels = voices
    emb = write_embeddings(tmp_path / "mixed", x[:40], labels[:40].astype(str), shards=2)
    write_embeddings(tmp_path / "other", x[20:40], labels[20:40].astype(str), model_id="model-b", shards=1)
    os.replace(tmp_path / "other" / "part-00000.parquet", tmp_path / "mixed" / "part-00001.parquet")
    with pytest.raises(ModelMismatchError, match=r"part-00001\.parquet: rows from model_id model-b"):
        build_index(emb, tmp_path / "idx")

    y = x[:40].copy()
    y[33] *= 0.5
    bad = write_embeddings(tmp_path / "bad", y, labels[:40].astype(str), shards=2)
    with pytest.raises(et.NotUnitLengthError, match=r"part-00001\.parquet: row 13 has L2 norm 0\.5"):
        build_index(bad, tmp_path / "idx")
    with pytest.raises(ConfigError, match="index kind"):
        build_index(bad, tmp_path / "idx", kind="pq")
    with pytest.raises(ConfigError, match="metric"):
        build_index(bad, tmp_path / "idx", metric="cosine")
    assert sorted(os.listdir(tmp_path)) == ["bad", "mixed", "other"]


def test_ip_metric_index_stores_spherical_ivf(tmp_path):
    x, labels = synthetic.clustered_unit_vectors(30, 10, dim=16, seed=2)
    emb = write_embeddings(tmp_path / "emb", x, labels.astype(str))
    s = build_index(emb, tmp_path / "idx", kind="ivf", metric="ip", nlist=4)
    assert s.metric == "ip"
    import faiss

    index = faiss.read_index(str(tmp_path / "idx" / "index.faiss"))
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT
    centroids = index.quantizer.reconstruct_n(0, 4)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-4)


def test_a_file_added_to_an_index_folder_is_never_deleted(tmp_path, voices):
    from speechid.errors import OutputError

    x, labels = voices
    emb = write_embeddings(tmp_path / "emb", x[:60], labels[:60].astype(str))
    build_index(emb, tmp_path / "idx")
    (tmp_path / "idx" / "my-notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="my-notes.txt"):
        build_index(emb, tmp_path / "idx")
    assert (tmp_path / "idx" / "my-notes.txt").read_text() == "keep me"
    assert json.loads((tmp_path / "idx" / "meta.json").read_text())["count"] == 60
