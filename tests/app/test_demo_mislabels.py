"""The demo plants mislabels: its default, its --mislabels flag, its summary row, its query clip."""

import io
import tarfile

from speechid.app.demo import DemoConfig
from speechid.app.demo_stages import mislabel_rows, pick_query_clip
from tests.conftest import run_cli


def test_the_demo_plants_at_least_20_mislabels_by_default():
    assert DemoConfig().mislabels >= 20


def test_mislabels_size_the_synthetic_demo_only(capsys):
    code, err, _ = run_cli(["demo", "--real", "--mislabels", "3"], capsys)
    assert code == 2 and "--mislabels size the synthetic demo" in " ".join(err)


def test_the_summary_row_gives_precision_recall_and_the_clean_clips_flagged():
    flags = {"precision": 0.8, "recall": 0.75, "flagged": 5, "planted": 4, "found": 3, "clean_clips": 2372,
             "clean_flagged": 2, "resembles_right": 3}
    [(name, value)] = mislabel_rows(flags)
    assert name == "dedup: mislabelled clips flagged vs the 4 planted"
    assert value == "precision 80.0%, recall 75.0%; 2 of 2,372 other clips flagged (0.1%)"
    [(_, value)] = mislabel_rows(flags, {**flags, "flagged": 3, "precision": 1.0, "recall": 0.75})
    assert "(the 3 that resemble another id: precision 100.0%, recall 75.0%)" in value
    assert mislabel_rows(None) == []


def test_the_query_clip_is_never_a_mislabelled_one(tmp_path):
    rows = "client_id\tpath\nA1\tm.mp3\nA1\tok.mp3\nA2\tx.mp3\n"
    with tarfile.open(tmp_path / "c.tar.gz", "w:gz") as tar:
        for name, data in (("r/en/validated.tsv", rows.encode()), ("r/en/clips/m.mp3", b"m"),
                           ("r/en/clips/ok.mp3", b"ok"), ("r/en/clips/x.mp3", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "aliases.tsv").write_text("client_id\ttrue_speaker\tclip\nA1\tann\t\nA2\tann\t\nA1\tbo\tm.mp3\n")
    path, cid, speaker = pick_query_clip(str(tmp_path / "c.tar.gz"), str(tmp_path / "aliases.tsv"), str(tmp_path))
    assert path.endswith("query-ok.mp3") and (cid, speaker) == ("A1", "ann")
