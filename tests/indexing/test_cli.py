"""`speechid index`, `dedup`, `query` through speechid.app.cli.main: results, and errors as one line + exit 2."""

import json
import os

import numpy as np
import pytest

from speechid.app import cli
from speechid.indexing import synthetic
from tests.conftest import tree_digest

from .conftest import write_embeddings


def run(argv, capsys):
    """speechid.app.cli.main(argv) -> (exit code, stdout, stderr)."""
    code = 0
    try:
        cli.main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, err):
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.fixture
def embeddings(tmp_path):
    x, voice = synthetic.clustered_unit_vectors(12, 6, dim=16, seed=4)
    ids = np.array([f"c{i:02d}" for i in voice], dtype=object)
    ids[np.flatnonzero(voice == 1)[3:]] = "c01-alias"
    (tmp_path / "aliases.tsv").write_text(
        "client_id\ttrue_speaker\n" + "".join(f"{i}\t{i.removesuffix('-alias')}\n" for i in sorted(set(ids))))
    return write_embeddings(tmp_path / "emb", x, ids)


# A merge threshold given on the command line (these indexes carry no model operating points) is a separation:
# here the alias (3 + 3 clips) sits 0.6 apart and the closest two distinct voices 2.7 (their clips are not even
# linked at 0.83), so 2.0 merges the alias and nothing else.
MERGE = "2.0"


def test_build_then_dedup_with_truth(tmp_path, embeddings, capsys):
    code, out, err = run(["index", "--embeddings", embeddings, "--output", str(tmp_path / "idx"),
                          "--threshold", "0.83"], capsys)
    assert code == 0, err
    assert "flat index" in out and "72 clips of 13 speakers" in out
    # without model operating points or --merge-threshold, nothing is merged, and the output says why
    code, out, err = run(["dedup", "--index", str(tmp_path / "idx"), "--output", str(tmp_path / "bare"),
                          "--truth", str(tmp_path / "aliases.tsv")], capsys)
    assert code == 0, err
    assert "nothing merged" in out and "--merge-threshold" in out
    assert json.loads((tmp_path / "bare" / "summary.json").read_text())["merged_groups"] == 0
    code, out, err = run(["dedup", "--index", str(tmp_path / "idx"), "--output", str(tmp_path / "dd"),
                          "--truth", str(tmp_path / "aliases.tsv"), "--merge-threshold", MERGE], capsys)
    assert code == 0, err
    assert "c01 + c01-alias" in out.replace("c01-alias + c01", "c01 + c01-alias")
    assert "speakers: precision 1.000 recall 1.000" in out
    summary = json.loads((tmp_path / "dd" / "summary.json").read_text())
    assert summary["merged_groups"] == 1 and summary["scores"]["speakers"]["true_pairs"] == 1
    assert summary["merge_threshold"] == 2.0 and summary["merge_rule"] == "given, not calibrated"


def test_missing_or_foreign_index_directory(tmp_path, capsys):
    (tmp_path / "clip.wav").write_bytes(b"")
    (tmp_path / "model").mkdir()
    err = one_line_error(*run(["query", "--index", str(tmp_path / "nope"), "--model", str(tmp_path / "model"),
                               str(tmp_path / "clip.wav")], capsys)[::2])
    assert "nope" in err and "does not exist" in err
    (tmp_path / "notindex").mkdir()
    err = one_line_error(*run(["dedup", "--index", str(tmp_path / "notindex"), "--output", str(tmp_path / "o")],
                              capsys)[::2])
    assert "not a speechid index (no meta.json)" in err


def test_dimension_mismatch_between_shards(tmp_path, capsys):
    a, _ = synthetic.clustered_unit_vectors(2, 3, dim=16, seed=0)
    b, _ = synthetic.clustered_unit_vectors(2, 3, dim=24, seed=0)
    write_embeddings(tmp_path / "emb", a, ["s"] * 6, shards=1)
    write_embeddings(tmp_path / "other", b, ["s"] * 6, shards=1)
    (tmp_path / "other" / "part-00000.parquet").rename(tmp_path / "emb" / "part-00001.parquet")
    err = one_line_error(*run(["index", "--embeddings", str(tmp_path / "emb"),
                               "--output", str(tmp_path / "idx")], capsys)[::2])
    assert "part-00001.parquet: embedding dimension mismatch: 24 here, 16" in err
    assert not (tmp_path / "idx").exists()


def test_query_with_a_model_of_another_model_id(tmp_path, embeddings, capsys):
    assert run(["index", "--embeddings", embeddings, "--output", str(tmp_path / "idx")], capsys)[0] == 0
    # A model directory as model/model_dir.py describes it; the check reads config.json before any weights load.
    model = tmp_path / "model"
    (model / "saved_model").mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({
        "sample_rate": 16000, "window_s": 2.0, "hop_s": 1.0, "embedding_dim": 16, "threshold": 0.83,
        "model_id": "0123456789abcdef"}))
    (tmp_path / "clip.wav").write_bytes(b"")
    err = one_line_error(*run(["query", "--index", str(tmp_path / "idx"), "--model", str(model),
                               str(tmp_path / "clip.wav")], capsys)[::2])
    assert "built from model_id model-a, but the model gives model_id 0123456789abcdef" in err


def test_bad_flag_values(tmp_path, embeddings, capsys):
    err = one_line_error(*run(["index", "--embeddings", embeddings, "--output", str(tmp_path / "i"),
                               "--kind", "lsh"], capsys)[::2])
    assert "lsh" in err
    err = one_line_error(*run(["index", "--embeddings", embeddings, "--output", str(tmp_path / "i"),
                               "--threshold", "0"], capsys)[::2])
    assert "'--threshold': 0 is not a positive, finite number" in err
    assert run(["index", "--embeddings", embeddings, "--output", str(tmp_path / "i"), "--threshold", "0.83"],
               capsys)[0] == 0
    for bad in ("0", "-1"):  # a separation is positive
        err = one_line_error(*run(["dedup", "--index", str(tmp_path / "i"), "--output", str(tmp_path / "d"),
                                   "--merge-threshold", bad], capsys)[::2])
        assert f"'--merge-threshold': {bad} is not a positive, finite number" in err
    assert not (tmp_path / "d").exists()


def test_an_output_that_holds_the_input_is_refused_and_nothing_is_deleted(tmp_path, embeddings, capsys):
    import shutil

    idx = tmp_path / "idx"
    assert run(["index", "--embeddings", embeddings, "--output", str(idx)], capsys)[0] == 0
    inside = str(shutil.move(embeddings, idx / "emb"))  # kept inside an index folder: a rebuild would delete them
    before = tree_digest(tmp_path)
    err = one_line_error(*run(["index", "--embeddings", inside, "--output", str(idx)], capsys)[::2])
    assert f"--output {idx} contains the input {inside}" in err
    err = one_line_error(*run(["dedup", "--index", str(idx), "--output", str(idx)], capsys)[::2])
    assert f"--output {idx} is the input {idx}" in err
    assert tree_digest(tmp_path) == before


def test_a_users_renamed_or_copied_index_beside_the_output_survives_a_rebuild(tmp_path, embeddings, capsys):
    # `speechid index ... --output idx; mv idx idx.old-mine; echo notes > idx.old-mine/NOTES.txt`, a rebuild, then
    # `cp -a idx idx.old-backup` and another: both folders carry the index's marker, and both are the user's.
    import shutil

    idx = tmp_path / "idx"
    argv = ["index", "--embeddings", embeddings, "--output", str(idx)]
    assert run(argv, capsys)[0] == 0
    idx.rename(tmp_path / "idx.old-mine")
    (tmp_path / "idx.old-mine" / "NOTES.txt").write_text("notes\n")
    assert run(argv, capsys)[0] == 0
    shutil.copytree(idx, tmp_path / "idx.old-backup", symlinks=True)
    assert run(argv, capsys)[0] == 0
    assert (tmp_path / "idx.old-mine" / "NOTES.txt").read_text() == "notes\n"
    assert sorted(os.listdir(tmp_path / "idx.old-backup")) == sorted(os.listdir(idx))


def test_dedup_truth_with_a_bom_is_read_and_a_file_without_the_columns_is_refused(tmp_path, embeddings, capsys):
    assert run(["index", "--embeddings", embeddings, "--output", str(tmp_path / "idx"), "--threshold", "0.83"],
               capsys)[0] == 0
    text = (tmp_path / "aliases.tsv").read_text()
    argv = ["dedup", "--index", str(tmp_path / "idx"), "--output", str(tmp_path / "dd"), "--merge-threshold", MERGE]
    (tmp_path / "bom.tsv").write_text("\ufeff" + text, encoding="utf-8")  # as Excel and Notepad save it
    code, out, err = run(argv + ["--truth", str(tmp_path / "bom.tsv")], capsys)
    assert code == 0, err
    assert "speakers: precision 1.000 recall 1.000" in out
    before = tree_digest(tmp_path / "dd")
    bad = {
        "no-header.tsv": text.split("\n", 1)[1],
        "speakers.tsv": "speaker\tclient_ids\tclips\nann\tc00\t6\n",  # another file of the release
        "empty.tsv": "",
    }
    for name, content in bad.items():
        (tmp_path / name).write_text(content)
        code, out, err = run(argv + ["--truth", str(tmp_path / name)], capsys)
        assert one_line_error(code, err) == (
            f"speechid dedup: error: {tmp_path / name}: not a truth file: expected a header row with the "
            "tab-separated columns client_id, true_speaker\n")
    assert tree_digest(tmp_path / "dd") == before  # refused before any work


def test_dedup_flags_a_mislabelled_clip_and_scores_it_from_the_truth_files_clip_rows(tmp_path, capsys):
    """A three-column aliases.tsv: the clip row says clip00030.mp3 (voice c05) is filed under c07; at
    --mislabel-threshold 1.8 it is the one clip flagged (2.2 from the rest of c07; clean clips 1.46 at most)."""
    x, voice = synthetic.clustered_unit_vectors(12, 6, dim=16, seed=4)
    ids = np.array([f"c{i:02d}" for i in voice], dtype=object)
    wrong = int(np.flatnonzero(voice == 5)[0])
    ids[wrong] = "c07"
    emb = write_embeddings(tmp_path / "emb", x, ids)
    (tmp_path / "aliases.tsv").write_text(
        "client_id\ttrue_speaker\tclip\n" + "".join(f"c{i:02d}\tc{i:02d}\t\n" for i in range(12))
        + f"c07\tc05\tclip{wrong:05d}.mp3\n")
    assert run(["index", "--embeddings", emb, "--output", str(tmp_path / "idx"), "--threshold", "0.83"],
               capsys)[0] == 0
    argv = ["dedup", "--index", str(tmp_path / "idx"), "--output", str(tmp_path / "dd"),
            "--truth", str(tmp_path / "aliases.tsv")]
    code, out, err = run(argv, capsys)  # no flag point in an uncalibrated index: nothing flagged, and why
    assert code == 0, err
    assert "nothing flagged" in out and "--mislabel-threshold" in out
    assert "mislabels: precision n/a recall 0.000 (0 of 0 flags" in out
    code, out, err = run(argv + ["--mislabel-threshold", "1.8"], capsys)
    assert code == 0, err
    assert "mislabels: precision 1.000 recall 1.000 (1 of 1 flags are planted mislabels" in out
    assert f"clip{wrong:05d}.mp3: filed under c07" in out and "resembles c05" in out
    assert "clips: precision 1.000 recall 1.000" in out  # the clip's voice, c05, is its cluster
    summary = json.loads((tmp_path / "dd" / "summary.json").read_text())
    assert summary["suspicious_clips"] == 1 and summary["mislabel_threshold"] == 1.8
    for bad in ("0", "-1", "nan", "inf"):
        err = one_line_error(*run(argv + ["--mislabel-threshold", bad], capsys)[::2])
        assert f"'--mislabel-threshold': {bad} is not a positive, finite number" in err


# -- ids for people: client_ids are 128 hex digits; the console and summary.txt show 16 of them --------------------

def _long_id_index(tmp_path, capsys):
    import hashlib

    x, voice = synthetic.clustered_unit_vectors(6, 6, dim=16, seed=4)
    client = {v: hashlib.sha512(f"voice{v}".encode()).hexdigest() for v in set(voice.tolist())}
    ids = np.array([client[v] for v in voice], dtype=object)
    ids[np.flatnonzero(voice == 1)[3:]] = hashlib.sha512(b"alias").hexdigest()  # one voice under two ids
    emb = write_embeddings(tmp_path / "emb", x, ids)
    assert run(["index", "--embeddings", emb, "--output", str(tmp_path / "idx"), "--threshold", "0.83"],
               capsys)[0] == 0
    model = tmp_path / "model"
    (model / "saved_model").mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({
        "sample_rate": 16000, "window_s": 2.0, "hop_s": 1.0, "embedding_dim": 16, "threshold": 0.83,
        "model_id": "model-a"}))
    return x, ids, model


def test_dedup_summary_txt_shows_short_ids_and_the_tables_keep_them_whole(tmp_path, capsys):
    import pyarrow.parquet as pq

    _, ids, _ = _long_id_index(tmp_path, capsys)
    code, out, err = run(["dedup", "--index", str(tmp_path / "idx"), "--output", str(tmp_path / "dd"),
                          "--merge-threshold", MERGE], capsys)  # the alias: 1.2 apart; other voices 2.7+
    assert code == 0, err
    text = (tmp_path / "dd" / "summary.txt").read_text()
    assert text == out and ", merged" in text  # a merge proposal line, with short ids
    assert not any(i in text for i in set(ids)) and any(f"{i[:16]}…" in text for i in set(ids))
    pairs = pq.read_table(tmp_path / "dd" / "speaker_pairs.parquet").to_pylist()
    assert pairs and all(len(p["speaker_a"]) == 128 for p in pairs)


def test_query_prints_an_aligned_table_with_short_ids_unless_full_ids(tmp_path, capsys, monkeypatch):
    from speechid.model.encoder import Encoder

    x, ids, model = _long_id_index(tmp_path, capsys)

    class FakeEncoder:  # the query command's part is the table; embedding is the Encoder's own tests' part
        config = {"model_id": "model-a"}

        def embed(self, path):
            return x[0]

    monkeypatch.setattr(Encoder, "load", classmethod(lambda cls, model_dir, **kw: FakeEncoder()))
    clip = tmp_path / "who.wav"
    clip.write_bytes(b"")
    argv = ["query", "--index", str(tmp_path / "idx"), "--model", str(model), str(clip), "-k", "3"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    head, columns, *rows = out.splitlines()
    assert head.startswith(f"{clip}  (nearest clips; Euclidean distance, same person below 0.830")
    assert columns.split() == ["rank", "speaker_id", "clip_id", "distance", "verdict"] and len(rows) == 3
    assert rows[0].split()[:5] == ["1", f"{ids[0][:16]}…", "clip00000.mp3", "0.0000", "same"]
    assert rows[0].endswith("same (the query's own audio: this clip or a copy of it)")  # distance ~0
    assert not rows[1].endswith(")")
    assert len({r.index(" clip") for r in [columns] + rows}) == 1  # the columns line up
    code, out, err = run(argv + ["--full-ids"], capsys)
    assert code == 0 and out.splitlines()[2].split()[1] == ids[0]
    code, out, err = run(argv + ["--by", "speaker"], capsys)
    assert code == 0 and out.splitlines()[1].split() == ["rank", "speaker_id", "clips", "distance", "verdict"]
    assert all(len(r.split()[1]) == 17 for r in out.splitlines()[2:])


def test_query_answers_the_good_clips_and_reports_each_bad_one_on_its_own_line(tmp_path, capsys, monkeypatch):
    from speechid.errors import AudioError
    from speechid.model.encoder import Encoder

    x, ids, model = _long_id_index(tmp_path, capsys)

    class FakeEncoder:
        config = {"model_id": "model-a"}

        def embed(self, path):
            if path.endswith("missing.mp3"):
                raise FileNotFoundError(2, "No such file or directory", path)
            if path.endswith("bad.wav"):
                raise AudioError("corrupt", path, "not audio")
            return x[3]

    monkeypatch.setattr(Encoder, "load", classmethod(lambda cls, model_dir, **kw: FakeEncoder()))
    good = tmp_path / "good.wav"
    good.write_bytes(b"")
    argv = ["query", "--index", str(tmp_path / "idx"), "--model", str(model), str(good), str(tmp_path / "missing.mp3"),
            str(tmp_path / "bad.wav"), "-k", "2"]
    code, out, err = run(argv, capsys)
    assert code == 2, err
    assert out.splitlines()[0].startswith(f"{good}  (nearest clips") and len(out.splitlines()) == 4  # answered
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("speechid query: error:") and "missing.mp3" in lines[0]
    assert lines[1] == f"speechid query: error: {tmp_path / 'bad.wav'}: corrupt (not audio)"
    code, out, err = run(argv + ["--json"], capsys)
    doc = json.loads(out)
    assert code == 2 and [r["query"] for r in doc["results"]] == [str(good)]
    assert [f["file"] for f in doc["failed"]] == [str(tmp_path / "missing.mp3"), str(tmp_path / "bad.wav")]
    assert doc["results"][0]["matches"][0]["identical_audio"] is True
