"""What every Beam job shares: the flag check (flags), the runner and stopping a local job (runner), worker logs
(workers)."""

import _thread
import os
import subprocess
import sys
import threading
import time

import pytest

from speechid.errors import ConfigError
from speechid.pipelines import embed, prep
from speechid.pipelines.flags import check_pipeline_args
from speechid.pipelines.runner import make_pipeline, run_and_wait
from speechid.pipelines.workers import WORKER_LOG_RELAY


def test_beam_and_own_flags_pass_and_unknown_ones_name_the_closest():
    check_pipeline_args(["--direct_num_workers", "2", "--direct_running_mode=multi_processing",
                              "--runner", "DataflowRunner", "--project", "p", "--temp_location", "gs://b/t",
                              "--save_main_session", "--experiments", "a", "--experiments=b"], prep.OWN_FLAGS)
    cases = [
        (["--num-shard", "3"], prep.OWN_FLAGS, "unknown flag --num-shard: neither speechid nor Beam knows it; "
                                               "did you mean --num-shards?"),
        (["--sample_rate=8000"], prep.OWN_FLAGS, "did you mean --sample-rate?"),
        (["--max_batch_size", "9"], embed.OWN_FLAGS, "did you mean --max-batch-size?"),
        (["--direct-num-workers", "2"], prep.OWN_FLAGS, "did you mean --direct_num_workers?"),
        (["--temp_locaton", "gs://b"], (), "did you mean --temp_location?"),
        (["--save_main_session", "yes"], (), "unexpected argument 'yes'"),
        (["--direct_num_workers", "two"], (), "invalid int value: 'two'"),
    ]
    for args, own, message in cases:
        with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("(", r"\(")):
            check_pipeline_args(args, own)


def _sleeper_tree() -> int:
    """A child shell with a grandchild, as Beam's local workers are started (sh -c python ...)."""
    p = subprocess.Popen(["/bin/sh", "-c", f"{sys.executable} -c 'import time; time.sleep(60)'; true"])
    return p.pid


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_an_interrupt_stops_the_job_and_every_process_it_started():
    class BlockingPipeline:
        """Stands for a local Beam job: starts worker processes, then waits for them."""

        def __init__(self):
            self.started = threading.Event()

        def run(self):
            self.shell = _sleeper_tree()
            self.started.set()
            return self

        def wait_until_finish(self):
            time.sleep(60)

    p, seen = BlockingPipeline(), {}

    def interrupt_once_the_workers_run():
        p.started.wait(10)
        for _ in range(100):  # the shell starts its python child
            found = subprocess.run(["pgrep", "-P", str(p.shell)], capture_output=True, text=True).stdout.split()
            if found:
                seen["worker"] = int(found[0])
                break
            time.sleep(0.05)
        _thread.interrupt_main()  # what Ctrl-C or the CLI's SIGTERM handler does

    threading.Thread(target=interrupt_once_the_workers_run, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_and_wait(p)
    assert time.monotonic() - t0 < 10
    assert "worker" in seen and not _alive(p.shell)
    for _ in range(50):  # the worker is not our child: init reaps it once it is gone
        if not _alive(seen["worker"]):
            break
        time.sleep(0.1)
    assert not _alive(seen["worker"])


def _relay(*entries):
    """Send LogEntry protos through the runner's logging servicer, as a local worker process does."""
    from apache_beam.portability.api import beam_fn_api_pb2
    from apache_beam.runners.portability.local_job_service import BeamFnLoggingServicer

    BeamFnLoggingServicer().Logging([beam_fn_api_pb2.LogEntry.List(log_entries=list(entries))])


def _entry(severity, message, where=""):
    from apache_beam.portability.api import beam_fn_api_pb2

    e = beam_fn_api_pb2.LogEntry(severity=getattr(beam_fn_api_pb2.LogEntry.Severity, severity), message=message,
                                 log_location=where, thread="12")
    e.timestamp.seconds = 1_700_000_000
    return e


def test_relayed_worker_logs_keep_only_errors_and_progress_as_plain_lines(caplog, monkeypatch):
    import logging

    monkeypatch.delenv("SPEECHID_DEBUG", raising=False)
    # An earlier interrupt test silences apache_beam's loggers process-wide (run_and_wait does on Ctrl-C).
    monkeypatch.setattr(logging.getLogger(WORKER_LOG_RELAY), "level", logging.INFO)
    make_pipeline(["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"])  # installs it
    warn = _entry("WARN", "No training configuration found in save file, so the model was *not* compiled.")
    info = _entry("INFO", "Resource module is not available for current platform")
    error = _entry("ERROR", 'decoder failed on "a.mp3"\nTraceback (most recent call last): ...', "embed.py:42")
    progress = _entry("INFO", "speechid prep decode [pid 7, 2 s]: written 101", "metrics.py:40")
    with caplog.at_level(logging.INFO):
        _relay(warn, info, error, progress)
    relayed = [r for r in caplog.records if r.name in (WORKER_LOG_RELAY, "speechid.worker")]
    assert [(r.levelno, r.name) for r in relayed] == [(logging.ERROR, WORKER_LOG_RELAY),
                                                      (logging.INFO, "speechid.worker")]
    text = relayed[0].getMessage()
    assert text == 'worker: decoder failed on "a.mp3" Traceback (most recent call last): ... (embed.py:42)'
    assert "severity" not in text and "timestamp" not in text
    assert relayed[1].getMessage() == "speechid prep decode [pid 7, 2 s]: written 101"

    caplog.clear()
    monkeypatch.setenv("SPEECHID_DEBUG", "1")  # everything, as Beam logs it
    with caplog.at_level(logging.INFO):
        _relay(warn, info, error, progress)
    relayed = [r for r in caplog.records if r.name == WORKER_LOG_RELAY]
    assert len(relayed) == 4 and all(r.getMessage().startswith("Worker: severity:") for r in relayed)


def test_in_process_bundles_keep_the_same_two_warnings_off_the_console(caplog, monkeypatch):
    """The default in-memory mode runs bundles in this process: Beam's and Keras's two warnings that
    ``WorkerLogFilter`` drops for worker processes are dropped here too, and nothing else is."""
    import logging

    monkeypatch.delenv("SPEECHID_DEBUG", raising=False)
    make_pipeline([])  # the in-process runner: installs the filter
    with caplog.at_level(logging.INFO):
        logging.getLogger().warning("Resource module is not available for current platform, memory usage cannot "
                                    "be fetched.")
        logging.getLogger("tensorflow").warning("No training configuration found in save file, so the model was "
                                                "*not* compiled. Compile it manually.")
        logging.getLogger().warning("a warning a user needs")
        logging.getLogger("tensorflow").error("No training configuration found in save file (as an error: kept)")
    assert [r.getMessage() for r in caplog.records] == [
        "a warning a user needs", "No training configuration found in save file (as an error: kept)"]
    caplog.clear()
    monkeypatch.setenv("SPEECHID_DEBUG", "1")
    with caplog.at_level(logging.INFO):
        logging.getLogger().warning("Resource module is not available for current platform")
    assert len(caplog.records) == 1
