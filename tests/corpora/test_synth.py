import csv
import hashlib
import io
import re
import tarfile

import numpy as np
import pytest

from speechid.audio import decode
from speechid.corpora import synth
from speechid.corpora.voices import distinct_voices, make_voice, render_clip, trait_distance
from speechid.truth import read_clip_truth, read_truth
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    res = synth.make_corpus(str(out), speakers=12, clips_per_speaker=4, seed=7, aliases=2, workers=2)
    return out, res


def _read(tar_path):
    tsvs, clips = {}, {}
    with tarfile.open(tar_path, "r|gz") as tar:
        for m in tar:
            data = tar.extractfile(m).read()
            if m.name.endswith(".tsv"):
                text = data.decode("utf-8")
                tsvs[m.name.rsplit("/", 1)[1][:-4]] = (
                    text.splitlines()[0].split("\t"),
                    list(csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)),
                )
            else:
                clips[m.name] = data
    return tsvs, clips


def test_reads_back_as_common_voice(corpus):
    out, res = corpus
    tsvs, clips = _read(res.tarball)
    assert set(tsvs) == set(synth.TSV_NAMES)
    for header, _ in tsvs.values():
        assert tuple(header) == synth.CV_HEADER
    clip_names = {n.rsplit("/", 1)[1] for n in clips}
    assert all(n.startswith("cv-corpus-synth/en/clips/") for n in clips)
    for _, rows in tsvs.values():
        for r in rows:
            assert re.fullmatch(r"[0-9a-f]{128}", r["client_id"])
            assert r["path"] in clip_names
            assert r["locale"] == "en"
    # Speaker-disjoint splits and validated = train + dev + test.
    ids = {s: {r["client_id"] for r in tsvs[s][1]} for s in ("train", "dev", "test")}
    assert not ids["train"] & ids["dev"] and not ids["train"] & ids["test"] and not ids["dev"] & ids["test"]
    assert all(ids.values())
    split_rows = sorted(tuple(r.values()) for s in ("train", "dev", "test") for r in tsvs[s][1])
    assert split_rows == sorted(tuple(r.values()) for r in tsvs["validated"][1])
    assert len(tsvs["validated"][1]) == 12 * 4
    assert res.clips == len(clips)


def test_clips_are_48k_mono_mp3_that_decode(corpus):
    _, res = corpus
    _, clips = _read(res.tarball)
    import soundfile as sf

    name, data = sorted(clips.items())[0]
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.channels, info.format) == (48_000, 1, "MP3")
    x = decode(data, name=name)
    assert 1.4 < len(x) / 16_000 < 4.2 and np.abs(x).max() > 0.01


def test_aliases_ground_truth(corpus):
    out, res = corpus
    truth = read_truth(res.aliases_tsv)
    tsvs, _ = _read(res.tarball)
    listed = {r["client_id"] for _, rows in tsvs.values() for r in rows}
    assert set(truth) == {r["client_id"] for r in tsvs["validated"][1]}
    assert listed <= set(truth)
    by_speaker = {}
    for cid, spk in truth.items():
        by_speaker.setdefault(spk, []).append(cid)
    assert len(by_speaker) == 12
    assert sorted(len(v) for v in by_speaker.values()).count(2) == 2
    # Both client_ids of an aliased speaker are test ids: no model trains on the ids dedup is asked to merge.
    split_of = {r["client_id"]: s for s in ("train", "dev", "test") for r in tsvs[s][1]}
    for cids in by_speaker.values():
        assert len({split_of[c] for c in cids}) == 1
        if len(cids) == 2:
            assert split_of[cids[0]] == "test"


def test_same_arguments_same_bytes(tmp_path, corpus):
    _, res = corpus
    again = synth.make_corpus(str(tmp_path), speakers=12, clips_per_speaker=4, seed=7, aliases=2, workers=1)
    digest = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (res.tarball, again.tarball)]
    assert digest[0] == digest[1]
    other = synth.make_corpus(str(tmp_path / "o"), speakers=12, clips_per_speaker=4, seed=8, workers=2)
    assert hashlib.sha256(open(other.tarball, "rb").read()).hexdigest() != digest[0]


def test_planted_faults_are_listed(tmp_path):
    res = synth.make_corpus(str(tmp_path), speakers=4, clips_per_speaker=2, seed=1, plant_faults=True, workers=2)
    with open(res.faults_tsv) as f:
        faults = dict(csv.reader(f, delimiter="\t"))
    assert set(faults.values()) >= {"empty", "corrupt", "truncated", "too_short", "too_long", "missing_clip",
                                     "duplicate", "malformed_row", "ok_converted"}


def test_voices_differ_more_between_than_within_speakers():
    """A crude identity check: mean log-spectrum distance is smaller within a voice than across voices."""
    rng = np.random.default_rng(3)
    voices = [make_voice(rng) for _ in range(6)]

    def profile(v, i):
        x = render_clip(v, 2.0, np.random.default_rng(i))
        spec = np.abs(np.fft.rfft(x[: 16000 * 2].reshape(-1, 400) * np.hanning(400), axis=1)) ** 2
        return np.log(spec.mean(axis=0) + 1e-9)

    profs = [[profile(v, 10 * s + i) for i in range(3)] for s, v in enumerate(voices)]
    within = np.mean([np.linalg.norm(p[0] - p[1]) for p in profs])
    across = np.mean([np.linalg.norm(profs[a][0] - profs[b][0]) for a in range(6) for b in range(6) if a != b])
    assert within < across


def test_bad_arguments():
    with pytest.raises(ValueError, match="speakers"):
        synth.make_corpus("/tmp/never", speakers=2)
    with pytest.raises(ValueError, match="none of 10 to train on"):  # 9 aliased test speakers + 1 dev
        synth.make_corpus("/tmp/never", speakers=10, aliases=9)
    with pytest.raises(ValueError, match="heldout_clips"):
        synth.make_corpus("/tmp/never", speakers=10, heldout_clips=0)


def test_heldout_speakers_get_their_own_clip_count(tmp_path):
    res = synth.make_corpus(str(tmp_path), speakers=10, clips_per_speaker=2, heldout_clips=5, aliases=1, workers=1,
                            extra_fraction=0.0, min_duration=0.5, max_duration=0.6)
    tsvs, _ = _read(res.tarball)
    per_split = {s: len(tsvs[s][1]) for s in ("train", "dev", "test")}
    assert per_split == {"train": 8 * 2, "dev": 5, "test": 5}  # 1 dev and 1 test voice of 10
    test_ids = [r["client_id"] for r in tsvs["test"][1]]
    assert sorted(test_ids.count(c) for c in set(test_ids)) == [2, 3]  # the aliased test voice's 5 clips, 3 + 2


def _small(out, speakers=20, **kw):
    return synth.make_corpus(str(out), speakers=speakers, clips_per_speaker=2, heldout_clips=5, workers=1,
                             extra_fraction=0.0, min_duration=0.5, max_duration=0.6, **kw)


def test_planted_mislabels_move_test_clips_between_test_voices_and_are_in_the_truth(tmp_path):
    """Each planted clip keeps its bytes, path and split; only its client_id changes, to another test
    voice's; aliases.tsv gains a clip row per mislabel and keeps every client_id row; counts reconcile."""
    plain = _small(tmp_path / "plain")
    res = _small(tmp_path / "planted", mislabels=3)
    assert res.mislabels == 3 and "3 filed under another voice's client_id" in res.summary()
    (tsv0, clips0), (tsv1, clips1) = _read(plain.tarball), _read(res.tarball)
    assert clips0 == clips1 and res.rows == plain.rows and res.clips == plain.clips
    per_split = {s: len(tsv1[s][1]) for s in ("train", "dev", "test")}
    assert per_split == {"train": 16 * 2, "dev": 2 * 5, "test": 2 * 5}  # two test voices to move clips between
    truth, clip_truth = read_truth(res.aliases_tsv), read_clip_truth(res.aliases_tsv)
    assert truth == read_truth(plain.aliases_tsv) and len(clip_truth) == 3
    before = {r["path"]: r["client_id"] for r in tsv0["validated"][1]}
    after = {r["path"]: r["client_id"] for r in tsv1["validated"][1]}
    moved = {p for p in after if after[p] != before[p]}
    assert moved == set(clip_truth)
    test_ids = {r["client_id"] for r in tsv1["test"][1]}
    for p in moved:
        assert truth[before[p]] == clip_truth[p] != truth[after[p]]  # filed under another voice's id
        assert {before[p], after[p]} <= test_ids
    assert {r["path"]: r["client_id"] for r in tsv1["test"][1]} == {p: after[p] for p in after if after[p] in test_ids}
    ids = [after[p] for p in after if after[p] in test_ids]
    for cid in set(ids):  # every id keeps 3 of its own clips
        assert sum(1 for p in after if after[p] == cid and p not in moved) >= 3
    with open(res.aliases_tsv, encoding="utf-8") as f:
        assert f.readline() == "client_id\ttrue_speaker\tclip\n"
    with open(plain.aliases_tsv, encoding="utf-8") as f:
        assert f.readline() == "client_id\ttrue_speaker\n"  # no mislabels: the two-column file, as before


def test_too_many_mislabels_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="5 mislabels: 2 voices under 2 client_ids can move 4 clips"):
        _small(tmp_path / "x", speakers=10, mislabels=5)  # the test split grows to two voices
    code, err, _ = run_cli(["synth", str(tmp_path / "y"), "--speakers", "10", "--clips-per-speaker", "2",
                            "--heldout-clips", "5", "--plant-mislabels", "5"], capsys)
    assert code == 2 and len(err) == 1 and "5 mislabels" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "y").exists()


def test_synth_cli_plants_mislabels(tmp_path, capsys):
    code, err, out = run_cli(["synth", str(tmp_path / "c"), "--speakers", "10", "--clips-per-speaker", "2",
                              "--heldout-clips", "5", "--plant-mislabels", "2", "--min-duration", "0.5",
                              "--max-duration", "0.6"], capsys)
    assert code == 0, err
    assert "2 filed under another voice's client_id" in out
    assert len(read_clip_truth(str(tmp_path / "c" / "aliases.tsv"))) == 2


def test_distinct_voices_have_no_near_twins():
    """Independent draws give pairs of voices within a fraction of a semitone, tract length and tilt of each
    other; best-candidate sampling keeps the ranges but spreads them out (the rule checked by brute force)."""
    import itertools

    def gaps(voices):
        d = np.array([trait_distance(a, b) for a, b in itertools.combinations(voices, 2)])
        return d[np.isfinite(d)]

    rng = np.random.default_rng(np.random.SeedSequence([0, 0]))
    independent = [make_voice(rng) for _ in range(100)]
    distinct = distinct_voices(100, np.random.default_rng(np.random.SeedSequence([0, 0])))
    assert gaps(independent).min() < 0.2 and gaps(distinct).min() > 0.6
    assert (gaps(distinct) < 1.0).sum() < (gaps(independent) < 1.0).sum() / 2
    # each voice is the candidate farthest from those before it
    again = np.random.default_rng(5)
    chosen = distinct_voices(4, np.random.default_rng(5), candidates=3)
    replay = [make_voice(again) for _ in range(12)]
    assert chosen[0] == replay[0]
    for k in range(1, 4):
        options = replay[3 * k:3 * k + 3]
        best = max(options, key=lambda v: min(trait_distance(v, w) for w in chosen[:k]))
        assert chosen[k] == best
    ranges = [(v.f0, v.vtl, v.tilt) for v in distinct]
    assert min(r[0] for r in ranges) >= 85 and max(r[0] for r in ranges) <= 255
