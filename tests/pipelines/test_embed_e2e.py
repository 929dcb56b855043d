"""The embed job end to end with a real exported model (untrained, tiny) on each input kind."""

import glob
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from speechid import audio, schema
from speechid.corpora import synth
from speechid.truth import read_truth
from tests.conftest import tone


@pytest.fixture
def model_dir(tiny_model_dir):
    return tiny_model_dir  # conftest.py: shared with the dask runner's embed test


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    return synth.make_corpus(str(out), speakers=3, clips_per_speaker=2, seed=5, min_duration=1.0,
                             max_duration=2.0, extra_fraction=0.0, workers=1)


def _table(out_dir):
    t = pq.read_table(sorted(glob.glob(os.path.join(out_dir, "part-*.parquet"))))
    return {r["clip_id"]: r for r in t.to_pylist()}, t.schema


def _manifest(out_dir):
    with open(os.path.join(out_dir, "manifest.json")) as f:
        return json.load(f)


def test_audio_glob_matches_encoder_and_routes_failures(model_dir, tmp_path):
    from speechid import Encoder
    from speechid.pipelines.embed import run

    src = tmp_path / "clips"
    src.mkdir()
    (src / "a.wav").write_bytes(audio.encode(tone(2.2, 44_100, 150), 44_100, "WAV"))
    (src / "b.flac").write_bytes(audio.encode(tone(0.7, 16_000, 260), 16_000, "FLAC"))
    (src / "c.ogg").write_bytes(audio.encode(tone(1.3, 48_000, 320), 48_000, "OGG", "VORBIS"))
    (src / "broken.wav").write_bytes(b"RIFF nonsense")
    (src / "silent.wav").write_bytes(audio.encode(np.zeros(32_000, np.float32), 16_000, "WAV"))
    out = str(tmp_path / "emb")
    manifest = run(["--model", model_dir, "--input", str(src / "*"), "--output", out, "--min-batch-size", "2",
                    "--max-batch-size", "4"])
    assert manifest["clips_seen"] == 5 and manifest["clips_written"] == 3
    assert manifest["failures_by_reason"] == {"corrupt": 1, "no_speech": 1} and manifest["reconciles"]
    rows, arrow_schema = _table(out)
    import pyarrow as pa

    emb_type = arrow_schema.field("embedding").type
    assert pa.types.is_fixed_size_list(emb_type) and emb_type.list_size == 8
    assert emb_type.value_type == pa.float32()
    enc = Encoder.load(model_dir)
    for name in ("a.wav", "b.flac", "c.ogg"):
        row = rows[str(src / name)]
        np.testing.assert_allclose(row["embedding"], enc.embed(str(src / name)), atol=1e-4)
        assert row["model_id"] == enc.config["model_id"] and row["speaker_id"] is None
    assert rows[str(src / "a.wav")]["n_windows"] == 4  # 2.2 s in 1 s windows every 0.5 s, tail covered
    failures = [json.loads(x) for f in glob.glob(os.path.join(out, "failures", "*.jsonl")) for x in open(f)]
    assert sorted((f["clip_id"], f["reason"]) for f in failures) == [
        (str(src / "broken.wav"), "corrupt"), (str(src / "silent.wav"), "no_speech")]


def test_archive_and_tfrecords_give_the_same_vectors(model_dir, corpus, tmp_path):
    import tensorflow as tf

    from speechid.pipelines.embed import embed_corpus

    out_a = str(tmp_path / "from_archive")
    m = embed_corpus(model_dir, [corpus.tarball], out_a)
    assert m["clips_written"] == m["clips_seen"] == 6 and m["reconciles"]
    rows_a, _ = _table(out_a)
    truth = read_truth(corpus.aliases_tsv)
    assert all(r["speaker_id"] in truth for r in rows_a.values())
    assert {r["split"] for r in rows_a.values()} <= {"train", "dev", "test"}

    # The same clips as prep would store them: PCM16 at 16 kHz in GZIP TFRecords.
    data = tmp_path / "data"
    data.mkdir()
    import tarfile

    with tarfile.open(corpus.tarball) as tar, tf.io.TFRecordWriter(
        str(data / "train-00000-of-00001.tfrecord.gz"), options="GZIP"
    ) as w:
        for m_ in tar.getmembers():
            if m_.name.endswith(".mp3"):
                name = m_.name.rsplit("/", 1)[1]
                wave = audio.decode(tar.extractfile(m_).read())
                row = rows_a[name]
                w.write(schema.to_example(schema.ClipRecord(
                    clip_id=name, client_id=row["speaker_id"], audio=wave, sample_rate=16_000, split=row["split"],
                    source=corpus.tarball, path=m_.name)))
    (data / "manifest.json").write_text("{}")
    out_t = str(tmp_path / "from_records")
    m = embed_corpus(model_dir, [str(data)], out_t)
    assert m["inputs"][0]["kind"] == "tfrecord" and m["clips_written"] == 6
    rows_t, _ = _table(out_t)
    for clip_id, row in rows_a.items():
        # PCM16 storage costs a little precision; the vectors stay within 1e-3.
        np.testing.assert_allclose(rows_t[clip_id]["embedding"], row["embedding"], atol=1e-3)
        assert rows_t[clip_id]["speaker_id"] == row["speaker_id"]


def test_rerun_replaces_output(model_dir, tmp_path):
    from speechid.pipelines.embed import embed_corpus

    src = tmp_path / "a.wav"
    src.write_bytes(audio.encode(tone(1.5), 16_000, "WAV"))
    out = str(tmp_path / "emb")
    embed_corpus(model_dir, [str(src)], out)
    embed_corpus(model_dir, [str(src)], out)
    rows, _ = _table(out)
    assert len(rows) == 1
    assert not glob.glob(str(tmp_path / "emb.tmp-*")) and not glob.glob(str(tmp_path / "emb.old-*"))
    assert {n for n in os.listdir(out) if not n.startswith("part-")} == {"failures", "manifest.json", ".speechid.json"}


def test_cli_errors_are_one_line(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "speechid", "embed", "--model", str(tmp_path / "nope"), "--input",
                        "x.wav", "--output", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nope" in r.stderr


def test_error_after_tensorflow_starts_is_still_one_line(model_dir, tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really")
    good = tmp_path / "good.wav"
    good.write_bytes(audio.encode(tone(1.0), 16_000, "WAV"))
    r = subprocess.run([sys.executable, "-m", "speechid", "compare", "--model", model_dir, str(good), str(bad)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"speechid compare: error: {bad}: corrupt (format not recognised)"]


# -- bad inputs and outputs: one line naming it, exit 2, nothing outside the output changed ---------------------


def _refused(args, root, capsys, *expected):
    from tests.conftest import run_cli, tree_digest

    before = tree_digest(root)
    code, err, _ = run_cli(args, capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("speechid embed: error: "), err
    for text in expected:
        assert text in err[0], err[0]
    assert ".tmp-" not in err[0] and tree_digest(root) == before
    return err[0]


def test_embed_refuses_outputs_it_must_not_write(model_dir, tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "a.wav").write_bytes(audio.encode(tone(1.0), 16_000, "WAV"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    args = ["embed", "--model", model_dir, "--input", str(clips / "*.wav"), "--output"]
    _refused(args + [str(mine)], tmp_path, capsys, f"--output {mine}: not empty and not written by `speechid embed`")
    _refused(args + [str(clips)], tmp_path, capsys, f"--output {clips} contains the input {clips / '*.wav'}")
    _refused(args + [os.path.join(model_dir, "emb")], tmp_path, capsys, "is inside the input")
    _refused(args + ["/proc/speechid-x"], tmp_path, capsys, "--output /proc/speechid-x: cannot write there")
    _refused(args + [str(tmp_path / "emb"), "--num-shard", "2"], tmp_path, capsys,
             "unknown flag --num-shard", "did you mean --num-shards?")


def test_embed_refuses_a_folder_an_empty_archive_or_a_pattern_matching_nothing(model_dir, tmp_path, capsys):
    import tarfile

    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "a.wav").write_bytes(audio.encode(tone(1.0), 16_000, "WAV"))
    out = tmp_path / "emb"
    from speechid.pipelines.embed import embed_corpus

    embed_corpus(model_dir, [str(clips / "a.wav")], str(out))  # a previous good output that must survive
    empty = tmp_path / "empty.tar"
    tarfile.open(empty, "w").close()
    args = ["embed", "--model", model_dir, "--output", str(out), "--input"]
    _refused(args + [str(clips)], tmp_path, capsys, f"--input {clips}: a folder; give a glob of the clips in it")
    _refused(args + [str(empty)], tmp_path, capsys, f"--input {empty}: an archive with no members")
    _refused(args + [str(tmp_path / "nope" / "*.wav")], tmp_path, capsys, "nope/*.wav: no file matches")
    # Clips that all fail: nothing embedded, nothing published, the previous output intact.
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / "s.wav").write_bytes(audio.encode(tone(0.2), 16_000, "WAV"))
    _refused(args + [str(tmp_path / "short" / "*.wav")], tmp_path, capsys,
             "none of its 1 clips was embedded (too_short 1); nothing was written")


def test_refused_members_and_unlisted_clips_are_counted_not_dropped(model_dir, tmp_path, capsys):
    from tests.conftest import run_cli, tree_digest
    from tests.pipelines.prep_helpers import cv_row, make_tar, tsv, wav

    archive = make_tar(tmp_path / "r.tar.gz", [
        ("cv/en/train.tsv", tsv(cv_row("alice", "a.wav"))),
        ("cv/en/clips/a.wav", wav(1.0)),
        ("cv/en/clips/unlisted.wav", wav(1.0, freq=300)),  # no TSV row: no speaker
        ("../evil.wav", wav(1.0)),  # refused: outside the release
        ("cv/en/clips/link.wav", "symlink", "a.wav"),  # refused: not a file
        ("cv/en/README.txt", b"about this release"),
    ])
    out = tmp_path / "emb"
    before = tree_digest(tmp_path)
    code, err, stdout = run_cli(["embed", "--model", model_dir, "--input", archive, "--output", str(out)], capsys)
    assert code == 0, err
    assert "clips: 4 seen = 1 written + 2 failed + 1 skipped by policy" in stdout
    m = _manifest(out)
    assert (m["clips_seen"], m["clips_written"], m["clips_failed"], m["clips_skipped"]) == (4, 1, 2, 1)
    assert m["reconciles"] and m["failures_by_reason"] == {"not_a_file": 1, "unsafe_path": 1}
    assert m["skipped_by_reason"] == {"unlisted": 1} and m["other_members_ignored"] == 1
    failures = [json.loads(x) for f in glob.glob(os.path.join(out, "failures", "*.jsonl")) for x in open(f)]
    assert sorted((f["reason"], f["detail"]) for f in failures) == [
        ("not_a_file", "member cv/en/clips/link.wav: link"), ("unsafe_path", "member ../evil.wav: '..' component")]
    rows, _ = _table(out)
    assert list(rows) == ["a.wav"] and rows["a.wav"]["speaker_id"] == "alice"
    after = tree_digest(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("emb/")} == before  # only its own output is new


def test_a_corpus_replaced_while_embed_reads_it_is_never_published(model_dir, tmp_path, monkeypatch):
    """The reader-during-publish race, with a deterministic gate: another job publishes a different corpus
    into the input folder after embed has staged and before its pipeline reads the archive."""
    from speechid.errors import OutputError
    from speechid.pipelines import runner
    from speechid.pipelines.embed import embed_corpus

    def corpus(seed: int, speakers: int):
        return synth.make_corpus(str(tmp_path / "c1"), speakers=speakers, clips_per_speaker=2, seed=seed,
                                 min_duration=1.0, max_duration=2.0, extra_fraction=0.0, workers=1)

    first = corpus(5, 3)
    run_and_wait = runner.run_and_wait

    def gate(p, *args, **kwargs):
        corpus(6, 4)  # the other job's publish lands here
        return run_and_wait(p, *args, **kwargs)

    monkeypatch.setattr(runner, "run_and_wait", gate)
    out = tmp_path / "emb"
    with pytest.raises(OutputError, match=r"c1 was replaced by another `speechid synth` run while this run read it"):
        embed_corpus(model_dir, [first.tarball], str(out))
    assert sorted(os.listdir(tmp_path)) == ["c1"]  # nothing published, no staging left
