"""Progress lines: done of total, rate and time left, in one wording."""

import logging

from speechid.progress import Meter, duration_text, progress_text


def test_progress_text_says_done_total_rate_and_time_left():
    assert progress_text(1312, 3000, 20.0, "clips") == "1,312 of 3,000 clips (65.6/s, ~26 s left)"
    assert progress_text(1312, None, 20.0, "clips") == "1,312 clips (65.6/s)"
    assert progress_text(4.2, 10.0, 35.0, "GB", "{:,.2f}") == "4.20 of 10.00 GB (0.1/s, ~48 s left)"
    assert progress_text(10, 10, 5.0, "steps") == "10 of 10 steps (2.0/s)"  # done: no time left
    assert [duration_text(s) for s in (42, 390, 7560)] == ["42 s", "6.5 min", "2.1 h"]


def test_meter_is_due_only_every_interval(monkeypatch):
    clock = iter([0.0, 1.0, 2.0, 31.0, 32.0, 61.5])
    monkeypatch.setattr("speechid.progress.time.monotonic", lambda: next(clock))
    meter = Meter(total=100, every_s=30.0)
    assert [meter.add() for _ in range(4)] == [False, False, True, False]  # at 1, 2, 31, 32 s
    assert meter.add(6) and meter.done == 10


def test_worker_progress_line_has_share_rate_and_tallies(caplog, monkeypatch):
    from speechid.pipelines import jobs

    clock = iter([0.0, 10.0, 20.0, 20.0])
    monkeypatch.setattr("speechid.progress.time.monotonic", lambda: next(clock))
    progress = jobs.Progress("speechid prep, pass 2", every_s=15.0, total=1500)
    with caplog.at_level(logging.INFO, logger="speechid"):
        progress.tick("written", 600)
        progress.tick("failed", 2)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("speechid prep, pass 2 [pid ")
    assert line.endswith("]: 602 of 1,500 clips (30.1/s, ~30 s left); failed 2, written 600")
