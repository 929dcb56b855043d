"""An index directory that contradicts itself is refused with one line naming the file (issue 21, items 3
and 8): meta.json's fields are type- and range-checked when read, and its metric must be the FAISS index's."""

import json
import os
import shutil

import numpy as np
import pytest

from speechid.indexing import IndexDirError, SpeakerIndex, build_index, synthetic
from speechid.indexing.store import read_meta
from tests.conftest import run_cli

from .conftest import write_embeddings


def _edited(index_dir, dest, **edits) -> str:
    shutil.copytree(index_dir, dest)
    path = os.path.join(dest, "meta.json")
    with open(path) as f:
        meta = json.load(f)
    meta.update(edits)
    with open(path, "w") as f:
        json.dump(meta, f)
    return str(dest)


@pytest.mark.parametrize("key, value, says", [
    ("threshold", "abc", 'threshold "abc" is not a positive, finite number (or null: the model\'s operating point)'),
    ("threshold", 0, "threshold 0 is not a positive, finite number"),
    ("threshold", float("nan"), "threshold NaN is not a positive, finite number"),
    ("dimension", "32", 'dimension "32" is not a positive whole number'),
    ("count", -1, "count -1 is not a whole number"),
    ("kind", "lsh", 'kind "lsh" is not one of flat, ivf, hnsw'),
    ("metric", "cosine", 'metric "cosine" is not one of l2, ip'),
    ("params", [], "params [] is not an object"),
    ("params", {"nprobe": "x"}, 'params.nprobe "x" is not a positive whole number'),
    ("model_id", None, "model_id null is not a model fingerprint"),
])
def test_every_meta_field_is_type_and_range_checked(voices_index, tmp_path, key, value, says):
    index_dir = _edited(voices_index, tmp_path / "idx", **{key: value})
    with pytest.raises(IndexDirError) as e:
        read_meta(index_dir)
    assert str(e.value).startswith(f"{os.path.join(index_dir, 'meta.json')}: {says}")


@pytest.mark.parametrize("built, claimed", [("l2", "ip"), ("ip", "l2")])
def test_a_meta_metric_that_is_not_the_index_metric_is_refused(tmp_path, built, claimed):
    """meta.json saying "ip" over an L2 index used to return neighbours out of order with wrong verdicts."""
    x, voice = synthetic.clustered_unit_vectors(6, 4, dim=8, seed=3)
    emb = write_embeddings(tmp_path / "emb", x, np.array([f"s{v}" for v in voice]))
    build_index(emb, tmp_path / "idx", kind="flat", metric=built, threshold=0.83)
    assert SpeakerIndex.load(tmp_path / "idx").metric == built
    index_dir = _edited(tmp_path / "idx", tmp_path / "bad", metric=claimed)
    with pytest.raises(IndexDirError) as e:
        SpeakerIndex.load(index_dir)
    assert str(e.value) == (f"{os.path.join(index_dir, 'meta.json')}: metric {claimed!r}, but "
                            f"{os.path.join(index_dir, 'index.faiss')} is an index of metric {built!r}; rebuild the "
                            "index with `speechid index`")


def test_cli_refuses_a_contradictory_index_in_one_line(voices_index, tmp_path, capsys):
    for name, edit in (("thr", {"threshold": "abc"}), ("metric", {"metric": "ip"})):
        index_dir = _edited(voices_index, tmp_path / name, **edit)
        code, err, _ = run_cli(["dedup", "--index", index_dir, "--output", str(tmp_path / "out")], capsys)
        assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
        assert f"{os.path.join(index_dir, 'meta.json')}: {next(iter(edit))}" in err[0]
        assert not (tmp_path / "out").exists()
