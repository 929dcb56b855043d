"""The embeddings Parquet format: schema, atomic writes, block reads, and errors that name the file."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from speechid import embedding_table as et
from speechid.errors import SpeechIdError
from speechid.indexing import synthetic

from .conftest import write_embeddings


def test_schema_has_the_documented_columns_and_types():
    s = et.arrow_schema(16)
    assert s.names == list(et.COLUMNS)
    assert s.field("embedding").type == pa.list_(pa.float32(), 16)
    assert s.field("duration_s").type == pa.float32() and s.field("n_windows").type == pa.int32()
    assert s.field("speaker_id").nullable and s.field("split").nullable
    assert not s.field("clip_id").nullable and not s.field("model_id").nullable
    assert et.part_name(3).startswith("part-") and et.part_name(3, 10) == "part-00003-of-00010.parquet"


def test_round_trip_in_blocks_keeps_row_order_across_shards(tmp_path):
    x, labels = synthetic.clustered_unit_vectors(10, 7, dim=8, seed=1)
    write_embeddings(tmp_path, x, np.array([f"s{i}" for i in labels]), shards=3)
    assert et.describe(tmp_path) == (70, 8)
    blocks = list(et.iter_embeddings(tmp_path, batch_size=9))
    assert all(len(b) <= 9 for b in blocks) and all(b.dtype == np.float32 for b in blocks)
    np.testing.assert_allclose(np.concatenate(blocks), x, atol=0)
    batches = list(et.iter_blocks(tmp_path, ["clip_id", "speaker_id"], batch_size=16))
    assert all(b.schema.names == ["clip_id", "speaker_id"] for b in batches)  # never more columns than asked
    ids = [c for b in batches for c in b.column("clip_id").to_pylist()]
    assert ids == [f"clip{i:05d}.mp3" for i in range(70)]


def test_rows_as_the_embed_pipeline_makes_them(tmp_path):
    rows = [{"clip_id": f"c{i}", "source": "a.tar", "speaker_id": None, "split": None, "duration_s": 2.0,
             "n_windows": 1, "embedding": [1.0, 0.0, 0.0], "model_id": "m"} for i in range(3)]
    path = et.write_table(tmp_path / "part-00000.parquet", rows)
    t = pq.read_table(path)
    assert t.schema == et.arrow_schema(3)
    assert t.column("speaker_id").null_count == 3


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    x = synthetic.normalize(np.ones((2, 4)))
    with pytest.raises(et.EmbeddingTableError, match="clip_id"):  # a missing required column: nothing written
        et.write_table(tmp_path / "part-00000.parquet", {"source": "s", "embedding": x, "model_id": "m",
                                                         "duration_s": [1, 1], "n_windows": [1, 1]})
    assert os.listdir(tmp_path) == []
    write_embeddings(tmp_path, x, ["a", "b"], shards=1)
    assert sorted(os.listdir(tmp_path)) == ["part-00000.parquet"]


def test_errors_name_the_directory_or_shard(tmp_path):
    with pytest.raises(et.EmbeddingTableError, match="not found"):
        et.describe(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(et.EmbeddingTableError, match="no part-"):
        et.describe(tmp_path / "empty")

    x8 = synthetic.normalize(np.random.default_rng(0).standard_normal((4, 8)))
    x6 = synthetic.normalize(np.random.default_rng(1).standard_normal((4, 6)))
    et.write_table(tmp_path / "dims" / "part-00000.parquet", _columns(x8))
    et.write_table(tmp_path / "dims" / "part-00001.parquet", _columns(x6))
    with pytest.raises(et.EmbeddingTableError, match=r"part-00001\.parquet: embedding dimension mismatch: 6"):
        et.describe(tmp_path / "dims")

    table = et.to_table(_columns(x8)).set_column(6, "embedding", pa.array(x8.astype(np.float64).tolist()))
    (tmp_path / "badtype").mkdir()
    pq.write_table(table, tmp_path / "badtype" / "part-00000.parquet")
    with pytest.raises(et.EmbeddingTableError, match=r"part-00000\.parquet: 'embedding' is list<.*double>"):
        et.describe(tmp_path / "badtype")
    assert issubclass(et.EmbeddingTableError, SpeechIdError)


def test_unit_length_check_names_shard_and_row(tmp_path):
    x = synthetic.normalize(np.random.default_rng(0).standard_normal((10, 4)))
    x[7] *= 1.5
    et.write_table(tmp_path / "part-00000.parquet", _columns(x[:5]))
    et.write_table(tmp_path / "part-00001.parquet", _columns(x[5:]))
    with pytest.raises(et.NotUnitLengthError, match=r"part-00001\.parquet: row 2 has L2 norm 1\.5000"):
        list(et.iter_embeddings(tmp_path, batch_size=4))
    x[7] = np.nan
    et.write_table(tmp_path / "part-00001.parquet", _columns(x[5:]))
    with pytest.raises(et.NotUnitLengthError, match="row 2 has L2 norm nan"):
        list(et.iter_embeddings(tmp_path))
    assert len(np.concatenate(list(et.iter_embeddings(tmp_path, check_unit=False)))) == 10


def _columns(x):
    n = len(x)
    return {"clip_id": [f"c{i}" for i in range(n)], "source": "s", "speaker_id": ["a"] * n, "split": "train",
            "duration_s": np.ones(n, np.float32), "n_windows": np.ones(n, np.int32), "embedding": x,
            "model_id": "m"}
