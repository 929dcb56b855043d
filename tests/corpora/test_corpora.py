"""Corpus makers on fabricated sources in the exact formats of the Debian packages (never the packages).

- a ``queen.1c`` with a QTBL table, three .DOG dialogue files (two scenes of one character) and .SB MP3s;
- Drascula ``.ALS`` files (32-byte header, unsigned 8-bit PCM at 11,025 Hz, 32 trailing bytes);
- a folder of WAVs with a speakers TSV.
Each release is checked by its labels, splits, archive layout and the reconciliation of its counts; one
test runs `speechid prep` on the fabricated releases.
"""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from speechid import audio, schema
from speechid.corpora import drascula, folder, fotaq
from speechid.corpora.layout import CV_HEADER
from speechid.corpora.release import client_id, write_release
from speechid.corpora.sources import SourceFailure
from speechid.errors import ConfigError
from tests.conftest import tone
from tests.speechid.test_audio import damaged_mp3


def _mp3(seconds: float, freq: float) -> bytes:
    return audio.encode(tone(seconds, 11_025, freq), 11_025, fmt="MP3")


def _dog(talk_key: int) -> bytes:
    # 20-byte header, then big-endian int16s: levelMax, uniqueKey, talkKey, ...
    return b"AmBk" + b"\0" * 16 + struct.pack(">6h", 3, talk_key, talk_key, 7, 8, 0) + b"\0" * 40


def make_queen(path, entries: list[tuple[str, bytes]]) -> str:
    """A queen.1c: 'QTBL', version, entry count (u16 BE at 0x0d), 21-byte entries from 0x0f, then data."""
    table_end = 0x0F + 21 * len(entries)
    head = b"QTBL" + b"CEM10" + b"\0" * 4  # 13 bytes: magic, version, padding up to the count
    table, blob, offset = b"", b"", table_end
    for name, data in entries:
        table += name.encode().ljust(12, b"\0") + struct.pack(">BII", 1, offset, len(data))
        blob += data
        offset += len(data)
    with open(path, "wb") as f:
        f.write(head + struct.pack(">H", len(entries)) + table + blob)
    return str(path)


QUEEN_ENTRIES = [
    ("BOB1.DOG", _dog(6)),
    ("BOB3.DOG", _dog(67)),  # a later scene of Bob: the same character
    ("FAYE2.DOG", _dog(18)),
    ("060001P1.SB", _mp3(1.2, 200)),
    ("670002P1.SB", _mp3(1.1, 210)),
    ("06XXXXP2.SB", _mp3(1.0, 190)),
    ("180001P1.SB", _mp3(1.3, 300)),
    ("180002P1.SB", _mp3(1.0, 310)),
    ("180003P2.SB", _mp3(1.2, 305)),
    ("180004P1.SB", damaged_mp3()),  # decodes, with libmpg123 frame errors: counted, never printed
    ("JOE00011.SB", _mp3(1.4, 120)),
    ("180002J1.SB", _mp3(1.0, 125)),
    ("06SSSSJ1.SB", _mp3(1.1, 118)),
    ("C12A_061.SB", _mp3(1.0, 400)),  # cutaway: no speaker
    ("990001P1.SB", _mp3(1.0, 400)),  # talk key without a DOG file
    ("JOE00021.SB", _mp3(0.2, 120)),  # too short
    ("ROOM1.PCX", b"\0" * 50),
]


def _archive(path) -> tuple[list[str], dict[str, list[dict]]]:
    names, tsvs = [], {}
    with tarfile.open(path, "r:gz") as tar:
        for m in tar:
            names.append(m.name)
            if m.name.endswith(".tsv"):
                text = tar.extractfile(m).read().decode().splitlines()
                tsvs[m.name.rsplit("/", 1)[1]] = list(csv.DictReader(text, delimiter="\t", quoting=csv.QUOTE_NONE))
                if m.name.endswith("/train.tsv"):
                    assert tuple(text[0].split("\t")) == CV_HEADER
    return names, tsvs


@pytest.fixture(scope="module")
def queen_release(tmp_path_factory):
    root = tmp_path_factory.mktemp("fotaq")
    source = make_queen(root / "queen.1c", QUEEN_ENTRIES)
    out = root / "out"
    result = write_release(
        str(out), fotaq.RELEASE, fotaq.clips(str(root)), seed=3, dev_speakers=["fotaq/faye"],
        test_speakers=["fotaq/bob"], min_clips=2, aliases=1,
    )
    return source, out, result


def test_fotaq_speakers_follow_the_engine_rules(queen_release):
    _, out, result = queen_release
    by_speaker = {s["speaker"]: s for s in result.manifest["speakers"]}
    assert {k: v["clips"] for k, v in by_speaker.items()} == {"fotaq/bob": 3, "fotaq/faye": 4, "fotaq/joe": 3}
    assert {k: v["split"] for k, v in by_speaker.items()} == {
        "fotaq/bob": "test", "fotaq/faye": "dev", "fotaq/joe": "train"
    }
    with open(out / "failures.tsv") as f:
        failures = {r["source"]: r["reason"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)}
    assert failures == {
        "queen.1c:C12A_061.SB": "unlabelled",
        "queen.1c:990001P1.SB": "unlabelled",
        "queen.1c:JOE00021.SB": "too_short",
    }
    m = result.manifest
    assert m["sources"] == 13 == m["written"] + m["failed"]  # every .SB entry, nothing else
    assert m["decoder_warnings"] == 1
    assert m["failed_by_reason"] == {"too_short": 1, "unlabelled": 2}


def test_fotaq_archive_is_a_common_voice_release(queen_release):
    _, out, result = queen_release
    assert [p.rsplit("/", 1)[1] for p in result.archives] == ["fotaq-en.tar.gz"]
    names, tsvs = _archive(result.archives[0])
    # clip_durations.tsv first, clips, then the split TSVs (the current bundler's order)
    assert names[0] == "fotaq/en/clip_durations.tsv"
    clip_idx = [i for i, n in enumerate(names) if "/clips/" in n]
    tsv_idx = [i for i, n in enumerate(names) if n.endswith(".tsv") and i > 0]
    assert len(clip_idx) == 10 and max(clip_idx) < min(tsv_idx)
    assert "fotaq/en/clips/fotaq_060001p1.mp3" in names
    # client_ids are stable hashes of the label; the aliased held-out speaker (bob, test) has two
    test_ids = {r["client_id"] for r in tsvs["test.tsv"]}
    assert test_ids == {client_id("fotaq/bob"), client_id("fotaq/bob", 1)}
    assert {r["client_id"] for r in tsvs["train.tsv"]} == {client_id("fotaq/joe")}
    assert len(tsvs["validated.tsv"]) == 10 and not tsvs["invalidated.tsv"]
    with open(out / "aliases.tsv") as f:
        truth = list(csv.DictReader(f, delimiter="\t"))
    assert sorted(r["true_speaker"] for r in truth) == ["fotaq/bob", "fotaq/bob", "fotaq/faye", "fotaq/joe"]
    # MP3 bytes are kept as they are in the resource file
    with tarfile.open(result.archives[0], "r:gz") as tar:
        kept = tar.extractfile("fotaq/en/clips/fotaq_joe00011.mp3").read()
    assert kept == dict(QUEEN_ENTRIES)["JOE00011.SB"]


def test_fotaq_release_is_deterministic(queen_release, tmp_path):
    source, _, result = queen_release
    again = write_release(
        str(tmp_path), fotaq.RELEASE, fotaq.clips(source), seed=3, dev_speakers=["fotaq/faye"],
        test_speakers=["fotaq/bob"], min_clips=2, aliases=1,
    )
    with open(result.archives[0], "rb") as a, open(again.archives[0], "rb") as b:
        assert a.read() == b.read()


def test_fotaq_table_and_talk_keys():
    assert fotaq.character("BOB3.DOG") == "bob" and fotaq.character("SHOWERAM.DOG") == "showeram"
    keys = {6: "bob"}
    assert fotaq.speaker_of("JOE00011", keys)[0] == "joe"
    assert fotaq.speaker_of("02001EJ1", keys)[0] == "joe"
    assert fotaq.speaker_of("060001P2", keys)[0] == "bob"
    assert fotaq.speaker_of("070001P2", keys)[0] is None
    assert fotaq.speaker_of("C1A__012", keys)[0] is None
    with pytest.raises(ConfigError, match="QTBL"):
        fotaq.read_table(b"RIFF" + b"\0" * 40, "x.1c")


def _als(samples: np.ndarray) -> bytes:
    return b"\x11" * 32 + samples.astype(np.uint8).tobytes() + b"fact\x04\0\0\0FILT" + b"\0" * 20


@pytest.fixture(scope="module")
def drascula_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("drascula")
    rng = np.random.default_rng(0)
    for lang in ("en", "es"):
        (root / lang).mkdir()
        files = {"VB1.ALS": 11_025, "VB2.ALS": 9000, "I2.ALS": 12_000, "I7.ALS": 8000, "12.ALS": 10_000,
                 "13.ALS": 9000, "D70.ALS": 9000, "D3.ALS": 9000, "D65.ALS": 9000, "S1.ALS": 9000}
        for name, n in files.items():
            voiced = tone(n / 11_025 + 1e-6, 11_025, 90.0 + 15 * len(name), amp=0.4)[:n]  # speech-like: passes the VAD
            wave = 128 + 127 * voiced + rng.normal(0, 1, len(voiced))
            (root / lang / name).write_bytes(_als(np.clip(wave, 0, 255)))
        (root / lang / "track1.ogg").write_bytes(b"OggS")
    return root


def test_drascula_labels_languages_and_lossless_samples(drascula_root, tmp_path):
    result = write_release(str(tmp_path), drascula.RELEASE, drascula.clips(str(drascula_root)), min_clips=2,
                           test_speakers=["drascula-en/von_braun"], dev_speakers=["drascula-es/igor"])
    speakers = {s["speaker"]: s["clips"] for s in result.manifest["speakers"]}
    assert speakers == {
        f"drascula-{lang}/{who}": n
        for lang in ("en", "es")
        for who, n in (("von_braun", 2), ("igor", 2), ("john", 2), ("blind_man", 1), ("drascula", 1))
    }
    assert result.manifest["failed_by_reason"] == {"not_speech": 2, "unlabelled": 2}
    assert [a.rsplit("/", 1)[1] for a in result.archives] == ["drascula-en.tar.gz", "drascula-es.tar.gz"]
    raw = (drascula_root / "en" / "VB1.ALS").read_bytes()
    expected = (np.frombuffer(raw[32:-32], np.uint8).astype(np.float32) - 128) / 128
    with tarfile.open(result.archives[0], "r:gz") as tar:
        flac = tar.extractfile("drascula/en/clips/drascula_en_vb1.flac").read()
    import soundfile as sf

    got, rate = sf.read(io.BytesIO(flac), dtype="float32")
    assert rate == 11_025 and len(got) == 11_025
    np.testing.assert_allclose(got, expected, atol=1 / 32767 + 1e-6)


def test_drascula_missing_package_names_it(tmp_path):
    with pytest.raises(ConfigError, match="drascula-spanish"):
        drascula.resolve_languages(str(tmp_path), ["es"])
    with pytest.raises(ConfigError, match="apt-get install drascula drascula-spanish"):
        drascula.resolve_languages(str(tmp_path), None)
    with pytest.raises(ConfigError, match="hold no voices"):
        drascula.resolve_languages(str(tmp_path), ["fr"])


def test_folder_accounts_for_every_file_and_row(tmp_path):
    audio_dir = tmp_path / "audio"
    for spk, freq in (("ann", 200), ("bo", 260), ("cy", 320)):
        (audio_dir / spk).mkdir(parents=True)
        for k in range(3):
            (audio_dir / spk / f"{k}.wav").write_bytes(audio.encode(tone(1.0, 16_000, freq + k), 16_000))
    (audio_dir / "stray.flac").write_bytes(audio.encode(tone(1.0, 16_000), 16_000, fmt="FLAC"))
    (audio_dir / "bo" / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")
    (audio_dir / "cy" / "silent.wav").write_bytes(audio.encode(np.zeros(16_000, np.float32), 16_000))
    (tmp_path / "outside.wav").write_bytes(audio.encode(tone(1.0, 16_000), 16_000))
    rows = ["path\tspeaker\tsplit"]
    rows += [f"{spk}/{k}.wav\t{spk}\t{split}" for spk, split in (("ann", "train"), ("bo", "dev"), ("cy", "test"))
             for k in range(3)]
    rows += ["bo/bad.wav\tbo\tdev", "cy/silent.wav\tcy\ttest", "gone.wav\tann\ttrain",
             "../outside.wav\tann\ttrain", "only-a-path"]
    tsv = tmp_path / "speakers.tsv"
    tsv.write_text("\n".join(rows) + "\n")
    result = write_release(str(tmp_path / "out"), "mine", folder.clips(str(audio_dir), str(tsv)))
    m = result.manifest
    assert {s["speaker"]: (s["clips"], s["split"]) for s in m["speakers"]} == {
        "ann": (3, "train"), "bo": (3, "dev"), "cy": (3, "test")
    }
    assert m["failed_by_reason"] == {"corrupt": 1, "malformed_row": 1, "missing": 1, "no_speech": 1,
                                     "unlabelled": 1, "unsafe_path": 1}
    assert m["sources"] == 15 == m["written"] + m["failed"]
    names, _ = _archive(result.archives[0])
    assert "mine/und/clips/ann__0.wav" in names


def test_a_release_without_held_out_speakers_says_how_to_prep_it(tmp_path):
    (tmp_path / "a").mkdir()
    for k in range(3):
        (tmp_path / "a" / f"{k}.wav").write_bytes(audio.encode(tone(1.0, 16_000, 200 + k), 16_000))
    tsv = tmp_path / "s.tsv"
    tsv.write_text("".join(f"{k}.wav\tann\n" for k in range(3)))
    result = write_release(str(tmp_path / "out"), "x", folder.clips(str(tmp_path / "a"), str(tsv)))
    assert "no dev or test speakers" in result.summary() and "--splits train" in result.summary()


def test_folder_speakers_tsv_saved_with_a_bom_has_its_header_row_recognised(tmp_path):
    for k in range(2):
        (tmp_path / f"{k}.wav").write_bytes(audio.encode(tone(1.0, 16_000, 200 + k), 16_000))
    tsv = tmp_path / "s.tsv"
    tsv.write_text("\ufeffpath\tspeaker\n0.wav\tann\n1.wav\tann\n", encoding="utf-8")  # as Excel saves it
    items = list(folder.clips(str(tmp_path), str(tsv)))
    assert [(type(i).__name__, i.origin) for i in items] == [("SourceClip", "0.wav"), ("SourceClip", "1.wav")]


def _wavs(folder_path, *names):
    for k, name in enumerate(names):
        (folder_path / name).parent.mkdir(parents=True, exist_ok=True)
        (folder_path / name).write_bytes(audio.encode(tone(1.0, 16_000, 200 + 10 * k), 16_000))


def _failures_tsv(result) -> list[list[str]]:
    with open(result.failures_tsv, newline="", encoding="utf-8") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]


def test_folder_speakers_tsv_row_over_the_csv_field_limit_fails_alone(tmp_path):
    audio_dir = tmp_path / "audio"
    _wavs(audio_dir, "0.wav", "1.wav", "2.wav")
    tsv = tmp_path / "s.tsv"
    tsv.write_text("path\tspeaker\n0.wav\tann\n" + "2.wav\t" + "x" * 200_000 + "\n1.wav\tann\n")
    result = write_release(str(tmp_path / "out"), "x", folder.clips(str(audio_dir), str(tsv)))
    m = result.manifest
    assert (m["written"], m["failed_by_reason"]) == (2, {"malformed_row": 1, "unlabelled": 1})  # 2.wav: no row
    assert m["sources"] == 4 == m["written"] + m["failed"]
    ((source, _, _, detail),) = [r for r in _failures_tsv(result) if r[2] == "malformed_row"]
    assert source == "s.tsv:3" and "field larger than field limit" in detail


def test_folder_file_names_no_tsv_can_hold_fail_alone_and_the_rest_is_written(tmp_path):
    audio_dir = tmp_path / "audio"
    _wavs(audio_dir, "0.wav", "1.wav", 'say "hi".wav', "x\ty.wav", "p\nq.wav")
    tsv = tmp_path / "s.tsv"
    tsv.write_text('0.wav\tBo "the voice"\n1.wav\tBo "the voice"\n')  # a quote is written and read back as is
    items = list(folder.clips(str(audio_dir), str(tsv)))
    refused = [(i.origin, i.reason) for i in items if isinstance(i, SourceFailure) and i.reason == "unsafe_path"]
    assert sorted(refused) == [("p\\nq.wav", "unsafe_path"), ("x\\ty.wav", "unsafe_path")]  # never read
    result = write_release(str(tmp_path / "out"), "x", folder.clips(str(audio_dir), str(tsv)))
    m = result.manifest
    assert (m["written"], m["failed_by_reason"]) == (2, {"unlabelled": 1, "unsafe_path": 2})
    assert m["sources"] == 5 == m["written"] + m["failed"]
    assert sorted((r[0], r[2]) for r in _failures_tsv(result)) == [
        ("p\\nq.wav", "unsafe_path"), ('say "hi".wav', "unlabelled"), ("x\\ty.wav", "unsafe_path")]
    assert "its name holds a tab" in " ".join(r[3] for r in _failures_tsv(result))
    assert [s["speaker"] for s in m["speakers"]] == ['Bo "the voice"']


def test_folder_paths_that_flatten_to_one_clip_name_are_all_kept(tmp_path):
    audio_dir = tmp_path / "audio"
    _wavs(audio_dir, "a_b/2.wav", "a_b__2__2.wav", "a_b__2.wav", "A b/2.WAV")
    tsv = tmp_path / "s.tsv"
    tsv.write_text("a_b/2.wav\tann\na_b__2__2.wav\tann\na_b__2.wav\tann\nA b/2.WAV\tann\n")
    result = write_release(str(tmp_path / "out"), "x", folder.clips(str(audio_dir), str(tsv)))
    assert (result.manifest["written"], result.manifest["failed"]) == (4, 0)
    names, tsvs = _archive(result.archives[0])
    assert sorted(n.rsplit("/", 1)[1] for n in names if "/clips/" in n) == [
        "A_b__2.wav", "a_b__2.wav", "a_b__2__1.wav", "a_b__2__2.wav"]
    again = write_release(str(tmp_path / "again"), "x", folder.clips(str(audio_dir), str(tsv)))
    assert _archive(again.archives[0]) == (names, tsvs)  # the same names on every run


def test_folder_speaker_in_two_splits_is_refused(tmp_path):
    (tmp_path / "a.wav").write_bytes(audio.encode(tone(1.0, 16_000), 16_000))
    (tmp_path / "b.wav").write_bytes(audio.encode(tone(1.0, 16_000), 16_000))
    tsv = tmp_path / "s.tsv"
    tsv.write_text("a.wav\tann\ttrain\nb.wav\tann\ttest\n")
    with pytest.raises(ConfigError, match="speaker-disjoint"):
        write_release(str(tmp_path / "out"), "x", folder.clips(str(tmp_path), str(tsv)))


def test_cli_missing_package_is_one_line_exit_2(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "speechid", "corpus", "fotaq", str(tmp_path / "out"), "--source", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "flight-of-the-amazon-queen" in lines[0] and str(tmp_path) in lines[0]
    assert not (tmp_path / "out").exists()


def test_prep_reads_the_releases_unchanged(queen_release, drascula_root, tmp_path, capfd):
    from speechid.pipelines.prep import run

    _, _, queen = queen_release
    dras = write_release(str(tmp_path / "d"), drascula.RELEASE, drascula.clips(str(drascula_root), ["en"]),
                         min_clips=2, test_speakers=["drascula-en/von_braun"], dev_speakers=["drascula-en/igor"])
    out = str(tmp_path / "data")
    run(["--input", queen.archives[0], "--input", dras.archives[0], "--output", out])
    with open(f"{out}/manifest.json") as f:
        manifest = json.load(f)
    assert manifest["failures"] == {} and manifest["reconciliation"]["balanced"]
    assert manifest["records"] == {"train": 3 + 4, "dev": 4 + 2, "test": 3 + 2}
    assert manifest["clips"]["written_with_decoder_warnings"] == 1
    assert "mpg123" not in capfd.readouterr().err
    records = list(schema.read_records(schema.record_pattern(out, "test")))
    assert {r.client_id for r in records} >= {client_id("fotaq/bob"), client_id("drascula-en/von_braun")}


def test_corpus_output_never_replaces_what_it_did_not_write(queen_release, tmp_path):
    from speechid.errors import OutputError
    from tests.conftest import tree_digest

    source, _, _ = queen_release
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    before = tree_digest(str(tmp_path))
    with pytest.raises(OutputError, match="not written by"):
        write_release(str(user), fotaq.RELEASE, fotaq.clips(source), min_clips=2)
    with pytest.raises(OutputError, match="inside the input"):
        write_release(os.path.join(os.path.dirname(source), "out2"), fotaq.RELEASE, fotaq.clips(source),
                      min_clips=2, sources=[os.path.dirname(source)])
    assert tree_digest(str(tmp_path)) == before
    # its own output is replaced by a rerun, and only its files are there
    again = write_release(str(tmp_path / "own"), fotaq.RELEASE, fotaq.clips(source), min_clips=2)
    again = write_release(str(tmp_path / "own"), fotaq.RELEASE, fotaq.clips(source), min_clips=2)
    assert sorted(os.listdir(tmp_path / "own")) == sorted(
        [".speechid.json", "aliases.tsv", "corpus.json", "failures.tsv", "fotaq-en.tar.gz", "speakers.tsv"]
    )
    assert again.archives == [str(tmp_path / "own" / "fotaq-en.tar.gz")]


def test_a_failure_reason_outside_the_vocabulary_is_a_maker_bug():
    from speechid.corpora.sources import SourceFailure

    assert SourceFailure("a.wav", "no_speech").reason == "no_speech"  # decoder reasons belong to it too
    with pytest.raises(ValueError, match="unknown corpus failure reason 'lost'"):
        SourceFailure("a.wav", "lost")


def _four_voices(tmp_path):
    """ann and bo (train), cy and di (test), four clips each, and a speakers TSV that names the splits."""
    audio_dir = tmp_path / "audio"
    rows = ["path\tspeaker\tsplit"]
    for j, (spk, split) in enumerate((("ann", "train"), ("bo", "train"), ("cy", "test"), ("di", "test"))):
        (audio_dir / spk).mkdir(parents=True)
        for k in range(4):
            (audio_dir / spk / f"{k}.wav").write_bytes(audio.encode(tone(1.0, 16_000, 150 + 60 * j + k), 16_000))
            rows.append(f"{spk}/{k}.wav\t{spk}\t{split}")
    (tmp_path / "speakers.tsv").write_text("\n".join(rows) + "\n")
    return str(audio_dir), str(tmp_path / "speakers.tsv")


def test_planted_mislabels_file_test_clips_under_another_test_voice(tmp_path):
    from speechid.truth import read_clip_truth, read_truth

    audio_dir, tsv = _four_voices(tmp_path)
    plain = write_release(str(tmp_path / "plain"), "mine", folder.clips(audio_dir, tsv))
    res = write_release(str(tmp_path / "out"), "mine", folder.clips(audio_dir, tsv), mislabels=2)
    m = res.manifest
    assert m["mislabelled_clips"] == 2 and plain.manifest["mislabelled_clips"] == 0
    assert m["sources"] == m["written"] + m["failed"] == plain.manifest["sources"]
    assert m["speakers"] == plain.manifest["speakers"]  # clips per true voice unchanged
    truth, clip_truth = read_truth(res.aliases_tsv), read_clip_truth(res.aliases_tsv)
    assert truth == read_truth(plain.aliases_tsv) and len(clip_truth) == 2
    names0, tsvs0 = _archive(plain.archives[0])
    names1, tsvs1 = _archive(res.archives[0])
    assert names0 == names1
    before = {r["path"]: r["client_id"] for r in tsvs0["validated.tsv"]}
    after = {r["path"]: r["client_id"] for r in tsvs1["validated.tsv"]}
    assert {p for p in after if after[p] != before[p]} == set(clip_truth)
    for p, voice in clip_truth.items():
        assert truth[before[p]] == voice in ("cy", "di") and truth[after[p]] in ("cy", "di")
        assert truth[after[p]] != voice
        assert p in {r["path"] for r in tsvs1["test.tsv"]}  # still a test clip
    assert {r["path"]: r["client_id"] for r in tsvs1["test.tsv"]} == {
        p: after[p] for p in after if truth[before[p]] in ("cy", "di")}


def test_corpus_cli_plants_mislabels_and_refuses_what_the_test_split_cannot_hold(tmp_path, capsys):
    from speechid.truth import read_clip_truth
    from tests.conftest import run_cli

    audio_dir, tsv = _four_voices(tmp_path)
    code, err, out = run_cli(["corpus", "folder", audio_dir, str(tmp_path / "ok"), "--speakers", tsv,
                              "--plant-mislabels", "2"], capsys)
    assert code == 0, err
    assert len(read_clip_truth(str(tmp_path / "ok" / "aliases.tsv"))) == 2
    code, err, out = run_cli(["corpus", "folder", audio_dir, str(tmp_path / "no"), "--speakers", tsv,
                              "--plant-mislabels", "3"], capsys)
    assert code == 2 and len(err) == 1, err
    assert "--plant-mislabels: 3 mislabels: 2 voices under 2 client_ids can move 2 clips" in err[0]
    assert not (tmp_path / "no").exists()
    one = tmp_path / "one.tsv"
    one.write_text(open(tsv).read().replace("\ttest\n", "\ttrain\n", 4))  # cy alone in test
    code, err, out = run_cli(["corpus", "folder", audio_dir, str(tmp_path / "one"), "--speakers", str(one),
                              "--plant-mislabels", "1"], capsys)
    assert code == 2 and len(err) == 1, err
    assert "--plant-mislabels 1: needs two test speakers, this split has 1" in err[0]
