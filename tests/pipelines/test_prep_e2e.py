"""Prep end to end on synthetic Common Voice releases with planted faults.

Two pipeline runs are shared by every test here (Beam + tf.Transform start slowly):
- ``first``: two archives in one run, in-memory mode, default flags, with the network disabled;
- ``rerun``: the faulty archive alone, through ``speechid prep`` in multi_processing mode with 2 workers
  and 2 shards, into a copy of the first output, which it must replace without leftovers.
"""

import collections
import csv
import glob
import json
import os
import re
import shutil
import tarfile

import numpy as np
import pytest

from speechid import audio, outputs, schema
from speechid.corpora import synth
from speechid.pipelines.prep import run
from tests.pipelines.prep_helpers import no_network

SHARD = re.compile(r"(train|dev|test)-\d{5}-of-\d{5}\.tfrecord\.gz")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep_corpora")
    faulty = synth.make_corpus(
        str(root / "a"), speakers=5, clips_per_speaker=3, seed=11, plant_faults=True, extra_fraction=0.2, workers=2
    )
    clean = synth.make_corpus(str(root / "b"), speakers=4, clips_per_speaker=3, seed=12, workers=2)
    return faulty, clean


@pytest.fixture(scope="module")
def first(corpora, tmp_path_factory):
    faulty, clean = corpora
    out = str(tmp_path_factory.mktemp("prep_out") / "data")
    with no_network() as attempts:
        result = run(["--input", faulty.tarball, "--input", clean.tarball, "--output", out])
    return result, out, list(attempts)


@pytest.fixture(scope="module")
def rerun(corpora, first, tmp_path_factory):
    from speechid.app.cli import main

    faulty, _ = corpora
    out = str(tmp_path_factory.mktemp("prep_rerun") / "data")
    shutil.copytree(first[1], out)  # a previous result with more archives, to be replaced
    args = ["prep", "--input", faulty.tarball, "--output", out, "--num-shards", "2"]
    args += ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
    with no_network() as attempts:
        main(args)
    return out, list(attempts)


def _records(out: str, split: str):
    return list(schema.read_records(schema.record_pattern(out, split)))


def _failures(out: str) -> list[dict]:
    lines = []
    for path in sorted(glob.glob(os.path.join(out, schema.FAILURES_DIR, "*.jsonl"))):
        with open(path) as f:
            lines += [json.loads(line) for line in f if line.strip()]
    return lines


def _tar_clips(tarball: str) -> dict[str, bytes]:
    with tarfile.open(tarball, "r|gz") as tar:
        return {m.name.rsplit("/", 1)[1]: tar.extractfile(m).read() for m in tar if "/clips/" in m.name}


def _tsv_rows(tarball: str, split: str) -> list[dict]:
    with tarfile.open(tarball, "r|gz") as tar:
        for m in tar:
            if m.name.endswith(f"/{split}.tsv"):
                text = tar.extractfile(m).read().decode("utf-8").splitlines()
                return list(csv.DictReader(text, delimiter="\t", quoting=csv.QUOTE_NONE))
    return []


def test_default_run_never_reaches_the_network(first):
    assert first[2] == []


def test_planted_faults_land_in_failures_with_their_reason(corpora, first):
    faulty, _ = corpora
    _, out, _ = first
    with open(faulty.faults_tsv) as f:
        planted = list(csv.DictReader(f, delimiter="\t"))
    assert len(planted) == 10
    failed = {(os.path.basename(f["path"]), f["reason"]) for f in _failures(out)}
    written = {r.clip_id: r for split in schema.SPLITS for r in _records(out, split)}
    for fault in planted:
        if fault["expected"] == "ok_converted":  # stereo 44.1 kHz: converted to mono 16 kHz, not failed
            rec = written[fault["path"]]
            assert rec.sample_rate == 16_000 and rec.audio.ndim == 1 and abs(rec.duration - 2.0) < 0.05
        else:
            assert (fault["path"], fault["expected"]) in failed, fault
    # The duplicated row still gives one record; nothing from the clean archive failed.
    dup = next(f["path"] for f in planted if f["expected"] == "duplicate")
    assert dup in written
    assert {f["archive"] for f in _failures(out)} == {faulty.tarball}
    assert len(_failures(out)) == 9


def test_manifest_reconciles_with_the_files_written(corpora, first):
    faulty, clean = corpora
    result, out, _ = first
    with open(os.path.join(out, schema.MANIFEST)) as f:
        m = json.load(f)
    assert m == result.manifest and result.balanced
    assert m["reconciliation"]["rows_balanced"] and m["reconciliation"]["clips_balanced"]
    for corpus in corpora:
        per_tsv = m["rows_read_per_tsv"][corpus.tarball]
        assert per_tsv == {f"cv-corpus-synth/en/{k}.tsv": n for k, n in corpus.rows.items()}
    assert m["clips"]["seen"] == faulty.clips + clean.clips
    assert m["clips"]["unlisted"] == 0 and m["clips"]["not_selected_by_policy"] > 0
    assert m["rows"]["skipped_by_policy"] == sum(
        c.rows[k] for c in corpora for k in ("validated", "invalidated", "other")
    )
    failures = collections.Counter(f["reason"] for f in _failures(out))
    assert m["failures"] == dict(failures)
    assert m["rows"]["failed"] == sum(f["rows"] for f in _failures(out))
    for split in schema.SPLITS:
        recs = _records(out, split)
        assert m["records"][split] == len(recs) > 0
        assert m["speakers"][split] == len({r.client_id for r in recs})
        assert abs(m["hours"][split] - sum(r.duration for r in recs) / 3600) < 1e-5
    assert m["inputs"] == sorted([faulty.tarball, clean.tarball])


def test_records_hold_the_original_audio_and_row(corpora, first):
    _, out, _ = first
    for corpus in corpora:
        clips = _tar_clips(corpus.tarball)
        rows = {r["path"]: r for r in _tsv_rows(corpus.tarball, "train")}
        recs = [r for r in _records(out, "train") if r.source == corpus.tarball]
        assert len(recs) >= 5
        for rec in recs:
            original = audio.decode(clips[rec.clip_id], 16_000, audio.NO_LIMITS)
            assert rec.audio.shape == original.shape
            assert np.max(np.abs(rec.audio - np.clip(original, -1, 1))) <= 0.5 / 32767 + 1e-6
            row = rows[rec.clip_id]
            assert (rec.client_id, rec.sentence, rec.up_votes, rec.locale) == (
                row["client_id"],
                row["sentence"],
                int(row["up_votes"]),
                "en",
            )
            assert rec.path == f"cv-corpus-synth/en/clips/{rec.clip_id}" and rec.split == "train"


def test_two_archives_share_one_speaker_vocabulary(corpora, first):
    import tensorflow as tf
    import tensorflow_transform as tft

    from speechid.model.stats import load_stats

    _, out, _ = first
    train = _records(out, "train")
    ids_by_archive = {c.tarball: {r.client_id for r in train if r.source == c.tarball} for c in corpora}
    assert all(ids_by_archive.values())
    assert not set.intersection(*ids_by_archive.values())
    stats = load_stats(out)
    assert sorted(stats.speakers) == sorted(set.union(*ids_by_archive.values()))
    # The transform graph gives every client_id of either archive its own vocabulary index.
    ids = sorted(set.union(*ids_by_archive.values()))
    labels = tft.TFTransformOutput(out).transform_raw_features(
        {"audio": tf.constant([b"\x00\x00" * 800] * len(ids)), "client_id": tf.constant(ids)},
        drop_unused_features=True,
    )["speaker"]
    assert [stats.speakers[i] for i in labels.numpy()] == ids


def test_transform_stats_match_a_direct_computation(first):
    import tensorflow as tf

    from speechid.model.features import FeatureConfig, log_mel
    from speechid.model.stats import load_stats

    _, out, _ = first
    config = FeatureConfig()
    s = np.zeros(config.n_mels)
    ss = np.zeros(config.n_mels)
    frames = 0
    for rec in _records(out, "train"):
        feats = log_mel(tf.constant(rec.audio), config).numpy().astype(np.float64)
        s += feats.sum(axis=0)
        ss += (feats**2).sum(axis=0)
        frames += len(feats)
    mean = s / frames
    stats = load_stats(out)
    assert stats.frames == frames
    np.testing.assert_allclose(stats.mel_mean, mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats.mel_var, ss / frames - mean**2, rtol=1e-3, atol=1e-3)


def test_outputs_follow_the_schema_names_and_nothing_is_left_beside(first):
    _, out, _ = first
    names = sorted(os.listdir(out))
    shards = [n for n in names if n.endswith(schema.RECORD_SUFFIX)]
    assert shards and all(SHARD.fullmatch(n) for n in shards)
    assert set(names) - set(shards) == {
        schema.FAILURES_DIR,
        schema.MANIFEST,
        schema.TRANSFORM_FN_DIR,
        "transformed_metadata",
        outputs.MARKER,
    }
    marker = outputs.read_marker(out)  # says who wrote the folder and lists every file it wrote
    assert marker["command"] == "prep" and sorted(marker["files"]) == sorted(
        os.path.relpath(os.path.join(root, f), out) for root, _, files in os.walk(out) for f in files
        if f != outputs.MARKER
    )
    assert os.listdir(os.path.dirname(out)) == ["data"]  # no staging or old folder beside it


def test_rerun_in_multi_processing_mode_replaces_the_previous_result(corpora, rerun):
    faulty, _ = corpora
    out, attempts = rerun
    assert attempts == []
    with open(os.path.join(out, schema.MANIFEST)) as f:
        m = json.load(f)
    assert m["inputs"] == [faulty.tarball] and m["reconciliation"]["balanced"]
    for split in schema.SPLITS:
        files = sorted(os.path.basename(p) for p in glob.glob(schema.record_pattern(out, split)))
        assert files == [f"{split}-00000-of-00002.tfrecord.gz", f"{split}-00001-of-00002.tfrecord.gz"]
        recs = _records(out, split)
        assert len(recs) == m["records"][split] == len({r.clip_id for r in recs})
        assert {r.source for r in recs} == {faulty.tarball}
    assert {f["archive"] for f in _failures(out)} == {faulty.tarball}
    assert os.listdir(os.path.dirname(out)) == ["data"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    from speechid.app.cli import main

    for args in (
        ["prep", "--input", str(tmp_path / "nothing-*.tar.gz"), "--output", str(tmp_path / "o")],
        ["prep", "--input", "x.tar", "--output", str(tmp_path / "o"), "--splits", "train,bogus"],
        ["prep", "stray.tar", "--input", "x.tar", "--output", str(tmp_path / "o")],
    ):
        with pytest.raises(SystemExit) as e:
            main(args)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "o")
