"""The Asterisk, KLettres/KTuberling and Italian Drascula recipes on fabricated folders laid out as the Debian
packages lay them out (never the packages): voice folders and their links, credits per language folder,
identical files shared between folders, and the reconciliation of every count."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from speechid import audio
from speechid.corpora import asterisk, drascula, kdeedu
from speechid.corpora.release import write_release
from speechid.errors import ConfigError
from tests.conftest import tone
from tests.corpora.test_corpora import _als


def _wav(freq: float, seconds: float = 1.0, rate: int = 8000) -> bytes:
    return audio.encode(tone(seconds, rate, freq), rate)


def _ogg(freq: float, seconds: float = 1.0) -> bytes:
    return audio.encode(tone(seconds, 22_050, freq), 22_050, fmt="OGG", subtype="VORBIS")


@pytest.fixture(scope="module")
def asterisk_root(tmp_path_factory):
    return make_asterisk_root(tmp_path_factory.mktemp("sounds"))


def make_asterisk_root(root):
    """Asterisk's sounds folder in miniature: four prompt folders (Allison in two languages), silence, tones,
    a file shared by two folders, and update-alternatives' links."""
    voices = {"en_US_f_Allison": 210, "es_MX_f_Allison": 215, "it_IT_m_Carlo": 120, "fr_CA_f_June": 260}
    for folder, freq in voices.items():
        base = root / folder
        (base / "digits").mkdir(parents=True)
        for k in range(3):
            (base / f"prompt-{k}.wav").write_bytes(_wav(freq + 3 * k))
        (base / "digits" / "1.wav").write_bytes(_wav(freq + 20))
        (base / "silence").mkdir()
        (base / "silence" / "1.wav").write_bytes(audio.encode(np.zeros(8000, np.float32), 8000))
        (base / "beep.wav").write_bytes(_wav(1000.0, 0.6))
        (base / "ascending-2tone.wav").write_bytes(_wav(900.0, 0.6))
        (base / "tt-monkeys.wav").write_bytes(_wav(700.0))
        (base / "readme.txt").write_text("not a prompt")
    shared = _wav(333.0)  # the same file in two voice folders: one clip
    (root / "en_US_f_Allison" / "shared.wav").write_bytes(shared)
    (root / "es_MX_f_Allison" / "shared.wav").write_bytes(shared)
    os.symlink(root / "en_US_f_Allison", root / "en_US")  # update-alternatives' links are not voices
    os.symlink(root / "en_US_f_Allison", root / "en")
    return root


def test_asterisk_one_speaker_per_person_across_languages(asterisk_root, tmp_path):
    result = write_release(str(tmp_path / "out"), asterisk.RELEASE, asterisk.clips(str(asterisk_root)),
                           min_clips=2, test_speakers=["asterisk/carlo"], dev_speakers=["asterisk/june"])
    m = result.manifest
    assert {s["speaker"]: s["clips"] for s in m["speakers"]} == {
        "asterisk/allison": 4 + 4 + 1, "asterisk/carlo": 4, "asterisk/june": 4,
    }
    # per voice folder: silence, beep, tone, monkeys (not_speech), readme (not_speech); one shared copy
    assert m["failed_by_reason"] == {"duplicate": 1, "not_speech": 4 * 5}
    assert m["sources"] == m["written"] + m["failed"] == 17 + 21
    assert [os.path.basename(a) for a in result.archives] == [
        "asterisk-en.tar.gz", "asterisk-es.tar.gz", "asterisk-fr.tar.gz", "asterisk-it.tar.gz"]
    with open(result.failures_tsv) as f:
        dup = [line for line in f if "\tduplicate\t" in line]
    assert dup == ["es_MX_f_Allison/shared.wav\t\tduplicate\tthe same bytes as en_US_f_Allison/shared.wav\n"]


def test_asterisk_missing_packages_are_named(tmp_path):
    with pytest.raises(ConfigError, match="apt-get install asterisk-core-sounds-en-wav .*menardi-wav"):
        asterisk.voice_folders(str(tmp_path))


@pytest.fixture(scope="module")
def klettres_root(tmp_path_factory):
    return make_klettres_root(tmp_path_factory.mktemp("klettres"))


def make_klettres_root(root):
    """KLettres' data folder in miniature: six language folders of letters and syllables, one file copied."""
    for lang, freq in (("en", 150), ("en_GB", 155), ("fr", 200), ("es", 230), ("hu", 260), ("nn", 280)):
        for sub in ("alpha", "syllab"):
            (root / lang / sub).mkdir(parents=True)
            for k in range(2):
                (root / lang / sub / f"{sub[0]}-{k}.ogg").write_bytes(_ogg(freq + 5 * k + (sub == "syllab")))
        (root / lang / "sounds.xml").write_text("<klettres/>")
    (root / "en_GB" / "alpha" / "a-0.ogg").write_bytes((root / "en" / "alpha" / "a-0.ogg").read_bytes())
    (root / "pics").mkdir()  # no .ogg: not a language
    return root


def test_klettres_credits_decide_who_speaks(klettres_root, tmp_path):
    clips = list(kdeedu.clips("klettres", str(klettres_root)))
    result = write_release(str(tmp_path / "out"), "klettres", iter(clips), min_clips=2,
                           test_speakers=["klettres/robert_wadley"], dev_speakers=["klettres/ludovic_grossard"])
    m = result.manifest
    assert {s["speaker"]: s["clips"] for s in m["speakers"]} == {
        "klettres/robert_wadley": 4, "klettres/ludovic_grossard": 4}
    # en_GB, es (two readers), hu (uncredited), nn (text-to-speech): 4 folders x 4 files
    assert m["failed_by_reason"] == {"unlabelled": 16}
    assert m["sources"] == 24 == m["written"] + m["failed"]
    why = {c.origin.split("/")[0]: c.detail for c in clips if hasattr(c, "reason")}
    assert "two readers" in why["es"] and "text-to-speech" in why["nn"] and "no credit" in why["hu"]


def test_klettres_uncredited_folders_as_one_voice_each(klettres_root, tmp_path):
    result = write_release(str(tmp_path / "out"), "klettres", kdeedu.clips("klettres", str(klettres_root), True),
                           min_clips=2, dev_speakers=0, test_speakers=0)
    m = result.manifest
    assert {s["speaker"] for s in m["speakers"]} == {
        "klettres/robert_wadley", "klettres/ludovic_grossard", "klettres/en_GB-uncredited", "klettres/hu-uncredited"}
    assert m["failed_by_reason"] == {"duplicate": 1, "unlabelled": 8}  # en_GB's copy of en's a-0
    assert m["sources"] == m["written"] + m["failed"] == 24


def test_ktuberling_and_a_missing_package(tmp_path):
    (tmp_path / "sounds" / "en").mkdir(parents=True)
    (tmp_path / "sounds" / "de").mkdir()
    for k in range(3):
        (tmp_path / "sounds" / "en" / f"w{k}.ogg").write_bytes(_ogg(140 + 4 * k))
        (tmp_path / "sounds" / "de" / f"w{k}.ogg").write_bytes(_ogg(240 + 4 * k))
    clips = list(kdeedu.clips("ktuberling", str(tmp_path / "sounds")))
    assert [c.speaker for c in clips if hasattr(c, "speaker") and not hasattr(c, "reason")] == [
        "ktuberling/john_calhoun"] * 3
    assert sum(getattr(c, "reason", "") == "unlabelled" for c in clips) == 3
    with pytest.raises(ConfigError, match="apt-get install ktuberling-data"):
        kdeedu.resolve_root("ktuberling", str(tmp_path / "nothing"))


def test_drascula_italian_cast_and_copies_of_other_languages(tmp_path):
    root = tmp_path / "drascula"
    rng = np.random.default_rng(1)

    def als(freq):
        wave = 128 + 127 * tone(1.0, 11_025, freq, amp=0.4) + rng.normal(0, 1, 11_025)
        return _als(np.clip(wave, 0, 255))

    for lang, freq in (("en", 100), ("es", 140), ("it", 180)):
        (root / lang).mkdir(parents=True)
        for name in ("I1.ALS", "I2.ALS", "VB1.ALS"):
            (root / lang / name).write_bytes(als(freq + len(name)))
    (root / "it" / "I2.ALS").write_bytes((root / "es" / "I2.ALS").read_bytes())  # a Spanish line reused
    os.symlink(root / "en" / "VB1.ALS", root / "es" / "VB2.ALS")  # a link to the English file
    assert list(drascula.resolve_languages(str(root), ["it", "en"])) == ["en", "it"]
    result = write_release(str(tmp_path / "out"), drascula.RELEASE, drascula.clips(str(root)), min_clips=1,
                           dev_speakers=0, test_speakers=0)
    m = result.manifest
    assert {s["speaker"]: s["clips"] for s in m["speakers"]} == {
        "drascula-en/igor": 2, "drascula-en/von_braun": 1, "drascula-es/igor": 2, "drascula-es/von_braun": 1,
        "drascula-it/igor": 1, "drascula-it/von_braun": 1}
    assert m["failed_by_reason"] == {"duplicate": 2}
    assert m["sources"] == 10 == m["written"] + m["failed"]


@pytest.mark.parametrize("recipe,package", [("asterisk", "asterisk-core-sounds-en-wav"),
                                            ("bass", "beneath-a-steel-sky"),
                                            ("klettres", "klettres-data"), ("ktuberling", "ktuberling-data")])
def test_cli_missing_package_is_one_line_exit_2(tmp_path, recipe, package):
    r = subprocess.run(
        [sys.executable, "-m", "speechid", "corpus", recipe, str(tmp_path / "out"), "--source", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert package in lines[0] and str(tmp_path) in lines[0]
    assert not (tmp_path / "out").exists()


def test_corpus_all_builds_each_installed_recipe_and_names_the_missing(asterisk_root, klettres_root, tmp_path,
                                                                        monkeypatch):
    from click.testing import CliRunner

    from speechid.app.commands.corpus import corpus
    from speechid.corpora import recipes

    here = {"asterisk": str(asterisk_root), "klettres": str(klettres_root), "fotaq": str(tmp_path / "none")}
    for name, make in list(recipes.RECIPES.items()):
        monkeypatch.setitem(recipes.RECIPES, name, lambda root, make=make, name=name: make(here.get(name, "/nowhere")))
    r = CliRunner().invoke(corpus, ["all", str(tmp_path / "out"), "--only", "asterisk,klettres,fotaq"])
    assert r.exit_code == 0, r.output
    assert "skipping fotaq" in r.output and "flight-of-the-amazon-queen" in r.output
    assert "built 2 corpora" in r.output and "not installed: fotaq" in r.output
    assert sorted(os.listdir(tmp_path / "out")) == ["asterisk", "klettres"]
    r = CliRunner().invoke(corpus, ["all", str(tmp_path / "out2"), "--only", "fotaq"])
    assert r.exit_code != 0 and "no real-voice recipe is installed" in str(r.exception or r.output)
    r = CliRunner().invoke(corpus, ["all", str(tmp_path / "out3"), "--only", "voxceleb"])
    assert r.exit_code == 2 and "voxceleb: choose from fotaq, drascula, bass" in r.output
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()
