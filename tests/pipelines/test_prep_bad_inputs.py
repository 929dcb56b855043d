"""`speechid prep` given the wrong thing: it says so in one line naming it (exit 2), and nothing outside its
own output changes. Each test hashes the whole working tree (inputs, a previous good output, a user's
folder) before and after.

Refusals found before the job runs cost nothing; the ones only the job can find (a truncated archive, a
TSV without client_id, a split that ends up empty) run Beam's in-memory runner on a tiny release.
"""

import json
import os
import tarfile

import pytest

from speechid import outputs, schema
from speechid.errors import ConfigError
from speechid.pipelines.failures import Failure
from tests.conftest import run_cli, tree_digest
from tests.pipelines.prep_helpers import CV_HEADER, cv_row, small_release, wav


@pytest.fixture
def work(tmp_path):
    """tmp_path with a good release in corpus/ and a previous prep output in data/ (marked as prep's)."""
    (tmp_path / "corpus").mkdir()
    good = small_release(tmp_path / "corpus" / "good.tar.gz")
    staging = outputs.stage(str(tmp_path / "data"), "prep")
    with open(os.path.join(staging, schema.MANIFEST), "w") as f:
        f.write('{"previous": "good output"}\n')
    outputs.publish(staging, str(tmp_path / "data"), "prep")
    return tmp_path, good


def _refused(args, tmp_path, capsys, *expected_in_message):
    before = tree_digest(tmp_path)
    code, err, _ = run_cli(args, capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("speechid prep: error: ") and "Traceback" not in err[0]
    for text in expected_in_message:
        assert text in err[0], err[0]
    assert tree_digest(tmp_path) == before  # nothing written, nothing deleted, the previous output intact
    return err[0]


# -- 1. data loss -------------------------------------------------------------------------------------------


def test_a_users_folder_or_the_archives_folder_as_output_is_refused(work, capsys):
    tmp_path, good = work
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    _refused(["prep", "--input", good, "--output", str(mine)], tmp_path, capsys,
             f"--output {mine}: not empty and not written by `speechid prep`")
    _refused(["prep", "--input", str(tmp_path / "corpus" / "*.tar.gz"), "--output", str(tmp_path / "corpus")],
             tmp_path, capsys, f"--output {tmp_path / 'corpus'} contains the input {good}")
    _refused(["prep", "--input", good, "--output", good], tmp_path, capsys, f"--output {good} is the input")


# -- 2. bad input reported as success ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.tar.gz", b"", "an empty file (0 bytes)"),
        ("notes.tar.gz", b"these are my notes, not an archive\n" * 20, "not a tar archive"),
        ("nothing.tar", None, "an archive with no members"),
        ("folder.tar.gz", "dir", "a folder, not an archive"),
    ],
)
def test_an_input_that_is_no_archive_is_refused_before_the_job_starts(work, capsys, name, content, message):
    tmp_path, _ = work
    bad = tmp_path / "corpus" / name
    if content == "dir":
        bad.mkdir()
    elif content is None:
        tarfile.open(bad, "w").close()
    else:
        bad.write_bytes(content)
    _refused(["prep", "--input", str(bad), "--output", str(tmp_path / "data")], tmp_path, capsys, name, message)


def test_a_truncated_archive_a_tsv_without_client_id_or_an_empty_split_publish_nothing(work, capsys):
    tmp_path, good = work
    data = open(good, "rb").read()
    cut = tmp_path / "corpus" / "cut.tar.gz"
    cut.write_bytes(data[: len(data) // 2])
    _refused(["prep", "--input", str(cut), "--output", str(tmp_path / "data")], tmp_path, capsys,
             f"{cut}: archive_truncated", "every archive failed, nothing was written")

    no_client = small_release(tmp_path / "corpus" / "noclient.tar.gz",
                              header=CV_HEADER.replace("client_id", "speaker"))
    _refused(["prep", "--input", no_client, "--output", str(tmp_path / "data")], tmp_path, capsys,
             f"{no_client}: cv/en/dev.tsv: header lacks client_id", "(and 2 more)")

    _refused(["prep", "--input", good, "--output", str(tmp_path / "data"), "--splits", "train,other"], tmp_path,
             capsys, f"--splits other: no records (no other.tsv rows in {good})")


# -- 3. typos --------------------------------------------------------------------------------------------------


def test_flags_that_neither_speechid_nor_beam_knows_are_errors_naming_the_closest(work, capsys):
    tmp_path, good = work
    base = ["prep", "--input", good, "--output", str(tmp_path / "data")]
    _refused(base + ["--num-shard", "3"], tmp_path, capsys, "unknown flag --num-shard", "did you mean --num-shards?")
    _refused(base + ["--sample_rate", "8000"], tmp_path, capsys, "did you mean --sample-rate?")
    _refused(base + ["--direct_num_worker", "2"], tmp_path, capsys, "did you mean --direct_num_workers?")


# -- 4. identity silently changed ------------------------------------------------------------------------------


def test_a_non_utf8_client_id_fails_its_row_instead_of_becoming_a_new_speaker(tmp_path, capsys):
    bad_row = b"caf\xe9\tbad.wav\tsentence\t2\t0\t\t\t\ten\t"  # Latin-1 'café': one byte that is not UTF-8
    release = small_release(tmp_path / "r.tar.gz", extra_rows={"train": [bad_row]},
                            extra_members=[("cv/en/clips/bad.wav", wav(0.6, freq=500))])
    out = tmp_path / "data"
    code, err, stdout = run_cli(["prep", "--input", release, "--output", str(out)], capsys)
    assert code == 0, err
    manifest = json.load(open(out / schema.MANIFEST))
    assert manifest["reconciliation"]["balanced"], manifest["reconciliation"]
    assert manifest["failures"] == {"undecodable_row": 1} and manifest["rows"]["failed"] == 1
    assert manifest["clips"]["unlisted"] == 1  # its clip: no usable row names it
    failures = [Failure.from_json(line) for p in (out / schema.FAILURES_DIR).iterdir() for line in open(p)]
    assert [(f.reason, f.line, f.path) for f in failures] == [("undecodable_row", 6, "cv/en/clips/bad.wav")]
    assert "client_id" in failures[0].detail
    ids = {r.client_id for r in schema.read_records(schema.record_pattern(str(out), "train"))}
    assert ids == {"train-speaker-0", "train-speaker-1"}  # no 'caf\ufffd' speaker
    assert manifest["speakers"]["train"] == 2


def test_parse_tsv_keeps_undecodable_bytes_out_of_every_field():
    import io

    from speechid.pipelines.tsv import parse_tsv

    bad = b"x\tb.wav\tna\xefve\t2\t0\t\t\t\ten\t\n"  # a Latin-1 byte in the sentence
    text = (CV_HEADER + "\n" + cv_row("ok", "a.wav") + "\n").encode() + bad
    out = list(parse_tsv(io.BytesIO(text), "A", "cv/en/train.tsv", "train", True))
    assert out[0][1].get("client_id") == "ok"
    assert isinstance(out[1], Failure) and (out[1].reason, out[1].line) == ("undecodable_row", 3)
    assert "sentence" in out[1].detail and "\\x" not in out[1].path


# -- 5. inputs read wrongly --------------------------------------------------------------------------------------


def test_an_existing_archive_whose_name_holds_glob_characters_is_taken_literally(tmp_path):
    from speechid.pipelines.archive_inputs import match_archives

    literal = small_release(tmp_path / "cv [en] 2024.tar.gz")
    other = small_release(tmp_path / "cv e 2024.tar.gz")  # what "cv [en] 2024.tar.gz" matches as a glob
    assert match_archives([literal]) == [literal]
    assert match_archives([str(tmp_path / "cv*.tar.gz")]) == sorted([literal, other])  # a glob is still a glob
    with pytest.raises(ConfigError, match="no archive matches"):  # brackets that name no file: a glob
        match_archives([str(tmp_path / "cv [ab] 2024.tar.gz")])


def test_prep_reads_a_bracketed_archive_a_huge_field_and_a_clip_in_a_subfolder(tmp_path, capsys):
    huge = cv_row("train-speaker-9", "huge.wav", "x" * 200_000).encode()  # over csv's 128 KiB field limit
    sub = cv_row("train-speaker-0", "sub dir/x.wav").encode()
    release = small_release(tmp_path / "cv [en] 2024.tar.gz", extra_rows={"train": [huge, sub]},
                            extra_members=[("cv/en/clips/sub dir/x.wav", wav(0.6, freq=500)),
                                           ("cv/en/clips/huge.wav", wav(0.6, freq=550))])
    out = tmp_path / "data"
    code, err, _ = run_cli(["prep", "--input", release, "--output", str(out)], capsys)
    assert code == 0, err
    manifest = json.load(open(out / schema.MANIFEST))
    assert manifest["reconciliation"]["balanced"], manifest["reconciliation"]
    assert manifest["failures"] == {"malformed_row": 1} and manifest["rows"]["failed"] == 1
    assert manifest["clips"]["unlisted"] == 1  # huge.wav: the row naming it could not be read
    failures = [Failure.from_json(line) for p in (out / schema.FAILURES_DIR).iterdir() for line in open(p)]
    assert [(f.archive, f.tsv, f.line, f.reason) for f in failures] == [
        (release, "cv/en/train.tsv", 6, "malformed_row")]
    assert "field larger than field limit" in failures[0].detail
    train = {r.clip_id for r in schema.read_records(schema.record_pattern(str(out), "train"))}
    assert "sub dir/x.wav" in train and len(train) == 5
