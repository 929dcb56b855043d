"""`speechid demo --real` without the Debian packages: one line naming them, exit 2, nothing written; and the
whole real chain wired end to end on a tiny fabricated FOTAQ ``queen.1c`` and Drascula ``.ALS`` folder (the
packages' formats, as tests/corpora/test_corpora.py fabricates them), its report labelling real and
synthetic figures."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from speechid import audio
from speechid.corpora import drascula, fotaq
from speechid.errors import ConfigError
from tests.conftest import run_cli, tone
from tests.corpora.test_corpora import _als, _dog, make_queen
from tests.corpora.test_packaged_voices import make_asterisk_root, make_klettres_root

CHARACTERS = {"bob": 6, "faye": 18, "azura": 21, "frank": 33, "pygmy": 40}  # talk keys of .DOG files


def _mp3(seconds: float, freq: float) -> bytes:
    return audio.encode(tone(seconds, 11_025, freq), 11_025, fmt="MP3")


def fabricate_packages(root) -> tuple[str, str]:
    """A queen.1c with Joe and five characters, 4 lines each, and a Drascula en/ folder: (queen.1c, root)."""
    entries = [(f"{name.upper()}1.DOG", _dog(key)) for name, key in CHARACTERS.items()]
    for i, key in enumerate(CHARACTERS.values()):
        entries += [(f"{key:02d}{k:04d}P1.SB", _mp3(1.2 + 0.1 * k, 140 + 35 * i + 3 * k)) for k in range(4)]
    entries += [(f"JOE000{k}1.SB", _mp3(1.3, 110 + 2 * k)) for k in range(4)]
    os.makedirs(root / "fotaq")
    queen = make_queen(root / "fotaq" / "queen.1c", entries)
    en = root / "drascula" / "en"
    en.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, prefix in enumerate(("VB", "I", "")):
        for k in range(3):
            voiced = tone(1.0, 11_025, 100.0 + 40 * i + 4 * k, amp=0.4)
            wave = 128 + 127 * voiced + rng.normal(0, 1, len(voiced))
            (en / f"{prefix}{k + 1}.ALS").write_bytes(_als(np.clip(wave, 0, 255)))
    return queen, str(root / "drascula")


def test_missing_packages_is_one_line_naming_them_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fotaq, "DEFAULT_SOURCE", str(tmp_path / "nowhere" / "queen.1c"))
    monkeypatch.setattr(drascula, "DEFAULT_ROOT", str(tmp_path / "nowhere"))
    work = tmp_path / "work"
    code, err, out = run_cli(["demo", "--real", "--workdir", str(work)], capsys)
    assert code == 2 and len(err) == 1, err
    assert "apt-get install flight-of-the-amazon-queen" in err[0]
    assert out == "" and not work.exists()


def test_real_flags_are_refused_with_synthetic_sizes(tmp_path, capsys):
    code, err, _ = run_cli(["demo", "--real", "--epochs", "2", "--workdir", str(tmp_path / "w")], capsys)
    assert code == 2 and len(err) == 1 and "--real takes --aliases" in err[0]
    code, err, _ = run_cli(["demo", "--train-minutes", "2", "--workdir", str(tmp_path / "w")], capsys)
    assert code == 2 and len(err) == 1 and "--train-minutes is for --real" in err[0]
    assert not (tmp_path / "w").exists()


def test_every_corpus_but_fotaq_is_optional(tmp_path):
    from speechid.app.demo_real import find_sources

    queen, drascula_root = fabricate_packages(tmp_path)
    nowhere = str(tmp_path / "nowhere")
    sources = find_sources(queen, {"drascula": nowhere, "bass": nowhere, "asterisk": nowhere},
                           training=("bass",), held_out=("drascula", "asterisk"))
    assert sources.fotaq == queen and sources.training == () and sources.held_out == ()
    sources = find_sources(queen, {"drascula": drascula_root, "asterisk": nowhere},
                           training=(), held_out=("drascula", "asterisk"))
    assert sources.held_out == ("drascula",)
    with pytest.raises(ConfigError, match="apt-get install flight-of-the-amazon-queen"):
        find_sources(str(tmp_path / "nowhere"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from speechid.app.demo_real import RealDemoConfig, find_sources, run_real_demo

    root = tmp_path_factory.mktemp("packages")
    queen, drascula_root = fabricate_packages(root)
    asterisk_root = make_asterisk_root(root / "asterisk")  # held out: scored, never trained on
    klettres_root = make_klettres_root(root / "klettres")  # trained on beside FOTAQ
    config = RealDemoConfig(aliases=1, mislabels=1, synth_speakers=15, synth_clips_per_speaker=3, min_clips=2,
                            dev_speakers=1, test_speakers=2, train_minutes=0.01, max_epochs=1, steps_per_epoch=2,
                            speakers_per_batch=3, clips_per_speaker_batch=2, crop_seconds=1.0, augment="none",
                            max_dev_clips=50, trials=200, max_clips_per_speaker=2, workers=1)
    work = tmp_path_factory.mktemp("work")
    log: list[str] = []
    sources = find_sources(queen, {"drascula": drascula_root, "asterisk": str(asterisk_root),
                                   "klettres": str(klettres_root)},
                           training=("klettres",), held_out=("drascula", "asterisk"))
    result = run_real_demo(str(work), config, sources, log=log.append)
    return work, result, log


@pytest.mark.slow  # ~80 s on 2 cores: Beam prep and RunInference, a 2-step training, FAISS, on ~60 tiny clips
def test_the_real_chain_runs_and_scores_what_it_says(tiny_run):
    from speechid.app.demo_real import summary_rows

    work, result, _ = tiny_run
    record = result.record
    lists = {item["key"]: item for item in record.real["lists"]}
    assert list(lists) == ["drascula_en", "asterisk", "fotaq_heldout", "synth_test"]  # cross-corpus first
    assert all(lists[k]["relation"].startswith("cross-corpus") for k in ("drascula_en", "asterisk"))
    assert lists["asterisk"]["speakers"] == 3  # Allison's two folders are one person
    assert record.real["trained_on"] == ["fotaq", "klettres", "synth"]
    mean = (lists["drascula_en"]["eer"] + lists["asterisk"]["eer"]) / 2
    assert record.real["cross_corpus_mean_eer"] == pytest.approx(mean)
    # the training mix holds klettres' readers (their client_ids are in the prepared data's manifest)
    manifest = json.loads((work / "data" / "manifest.json").read_text())
    assert "klettres" in json.dumps(manifest["inputs"])
    assert lists["fotaq_heldout"]["speakers"] == 2 and lists["fotaq_heldout"]["voices"] == "real"
    assert lists["synth_test"]["voices"] == "synthetic"
    assert lists["drascula_en"]["clips"] == 6  # 3 characters, at most 2 clips each
    # the aliased character's two client_ids are one speaker in the trials, and two ids in the dedup truth
    assert record.dedup["speakers"]["true_pairs"] == 1
    assert record.dedup["mislabels"]["planted"] == 1  # a FOTAQ clip filed under another character's id
    for name in ("corpus", "corpus-synth", "corpus-drascula", "corpus-asterisk", "corpus-klettres", "data", "model",
                 "eval", "eval-synth", "eval-cross/metrics-drascula_en.json", "eval-cross/metrics-asterisk.json",
                 "embeddings", "index", "dedup", "demo.json", "report.html"):
        assert (work / name).exists(), name
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    assert metrics["eer"] == lists["fotaq_heldout"]["eer"] and metrics["speakers"] == 2
    rows = dict(summary_rows(result))
    assert list(rows)[0] == "real voices recorded elsewhere (never trained on): mean EER"
    assert any(k.startswith("real voices: FOTAQ held-out") for k in rows)
    assert any(k.startswith("synthetic voices:") for k in rows)


@pytest.mark.slow
def test_the_report_labels_real_and_synthetic_figures(tiny_run):
    from speechid.app.report import rebuild_report

    work, result, _ = tiny_run
    page = open(result.report, encoding="utf-8").read()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r'src="data:[^"]+"', "", page)))
    h2 = re.findall(r"<h2>(.*?)</h2>", page)
    assert h2[0] == "The answer"
    answer = text[text.index("The answer"):text.index("Same person? Verification")]
    assert answer.index("Voices recorded elsewhere first") < answer.index("Same person? One clip")
    assert "FOTAQ held-out characters" in answer and "synthetic test speakers" in answer
    assert "Drascula, English cast" in answer and "Asterisk prompts" in answer and "cross-corpus" in answer
    assert "real voices" in answer and "synthetic voices" in answer
    subtitle = text[:text.index("The answer")]  # says what was run
    assert "Flight of the Amazon Queen" in subtitle and "synthetic voices" in subtitle
    assert rebuild_report(str(work)) == result.report  # --report-only on a real run


@pytest.mark.slow
def test_the_report_the_console_and_the_json_files_give_the_same_numbers(tiny_run):
    """One run, three readers: the report page, the console summary and metrics.json / summary.json."""
    from speechid.app.demo_real import summary_rows
    from speechid.app.htmlpage import pct

    work, result, _ = tiny_run
    page = open(result.report, encoding="utf-8").read().replace("&middot;", "·")
    rows = dict(summary_rows(result))
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    dedup = json.loads((work / "dedup" / "summary.json").read_text())["scores"]["speakers"]
    eer = pct(metrics["eer"])
    assert f"EER {eer}" in page and rows["real voices: FOTAQ held-out characters EER"].startswith(eer)
    merges = f"precision {pct(dedup['precision'])}, recall {pct(dedup['recall'])}"
    assert merges in next(v for k, v in rows.items() if k.startswith("real voices: dedup vs"))
    assert merges.replace(", ", " · ") in page
    for name in ("drascula_en", "asterisk"):
        cross = json.loads((work / "eval-cross" / f"metrics-{name}.json").read_text())
        assert f"<b>{pct(cross['eer'])}</b>" in page
    mean = result.record.real["cross_corpus_mean_eer"]
    assert rows["real voices recorded elsewhere (never trained on): mean EER"] == pct(mean)
    assert f"EER {pct(mean)}" in page
