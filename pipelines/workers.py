"""Local worker processes: the environment they start with, their log records on the console, stopping them.

Environment: the local runner's multi_processing workers inherit the driver's environment when they are
spawned, so settings a process reads once at start (TensorFlow's thread pools, glibc's malloc thresholds)
are set while they start (``worker_environment``).

Console: local worker processes' log records reach the console through the runner as protobuf dumps;
``WorkerLogFilter`` keeps only their errors and speechid's own progress lines, as plain lines (all of
them, as Beam logs them, with SPEECHID_DEBUG=1).

Stopping: on Ctrl-C, ``stop_child_processes`` terminates every process the driver started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time

# Local worker processes (multi_processing) send their log records to the runner, which logs each one under
# this logger as "Worker: <the LogEntry proto on one line>" (BeamFnLoggingServicer).
WORKER_LOG_RELAY = "apache_beam.runners.portability.local_job_service"


class WorkerLogFilter(logging.Filter):
    """Keeps a relayed worker record only if it is an error or one of speechid's progress lines, as plain text.

    What workers say below ERROR (Keras's "No training configuration found in save file", "Resource module
    is not available") tells a user nothing and alarms; an error keeps its message and where it came from,
    and a progress line (``Progress``: its text starts with "speechid") is shown as the worker wrote it.
    SPEECHID_DEBUG=1 keeps every record as Beam logs it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "Worker: %s" or len(record.args or ()) != 1 or os.environ.get("SPEECHID_DEBUG"):
            return True
        dump = str(record.args[0])
        if record.levelno >= logging.ERROR:
            record.msg, record.args = "worker: %s", (_worker_message(dump),)
            return True
        text = _worker_message(dump, with_location=False)
        if text.startswith("speechid"):
            record.msg, record.args, record.name = "%s", (text,), "speechid.worker"
            return True
        return False


def _worker_message(dump: str, with_location: bool = True) -> str:
    """The message (and its source location) of a LogEntry printed by text_format on one line."""
    from apache_beam.portability.api import beam_fn_api_pb2
    from google.protobuf import text_format

    try:
        entry = text_format.Parse(dump, beam_fn_api_pb2.LogEntry())
    except text_format.ParseError:
        return " ".join(dump.split())
    message = " ".join(entry.message.split()) or " ".join(entry.trace.split()[-1:])
    return f"{message} ({entry.log_location})" if entry.log_location and with_location else message


class InProcessNoiseFilter(logging.Filter):
    """Drops the two warnings bundles run in this process print (the default in-memory mode) that
    ``WorkerLogFilter`` drops for worker processes: Beam's "Resource module is not available" (logged on the
    root logger) and Keras's "No training configuration found in save file" (RunInference loads the model
    for inference only). Nothing else; SPEECHID_DEBUG=1 keeps them."""

    NOISE = ("Resource module is not available", "No training configuration found in save file")

    def filter(self, record: logging.LogRecord) -> bool:
        if os.environ.get("SPEECHID_DEBUG") or record.levelno >= logging.ERROR:
            return True
        return not (isinstance(record.msg, str) and record.msg.startswith(self.NOISE))


class DiskFullFilter(logging.Filter):
    """Drops Beam's log of a bundle that failed because the disk filled up (a traceback through TensorFlow's
    or Beam's writers): the run then fails with one line naming the output and the space it needed
    (``speechid.outputs.fail``). SPEECHID_DEBUG=1 keeps it."""

    LOGGERS = ("apache_beam.runners.common", "apache_beam.runners.worker.sdk_worker")

    def filter(self, record: logging.LogRecord) -> bool:
        if os.environ.get("SPEECHID_DEBUG"):
            return True
        text = record.getMessage() + (record.exc_text or "")
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1])
        return "No space left on device" not in text and "[Errno 28]" not in text


def quiet_worker_logs() -> None:
    """Install ``WorkerLogFilter`` on the runner's relay logger, ``InProcessNoiseFilter`` on the loggers
    in-process bundles use and ``DiskFullFilter`` on Beam's bundle-failure loggers (once per process)."""
    relay = logging.getLogger(WORKER_LOG_RELAY)
    if not any(isinstance(f, WorkerLogFilter) for f in relay.filters):
        relay.addFilter(WorkerLogFilter())
    for name in (None, "tensorflow"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, InProcessNoiseFilter) for f in logger.filters):
            logger.addFilter(InProcessNoiseFilter())
    for name in DiskFullFilter.LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DiskFullFilter) for f in logger.filters):
            logger.addFilter(DiskFullFilter())


def stop_child_processes(grace_s: float = 3.0) -> list[int]:
    """Terminate every process this one started (local Beam workers and their shells); returns their ids.

    Linux only (it reads /proc); elsewhere the local workers notice the lost driver and exit on their own.
    """
    if not os.path.isdir("/proc"):
        return []
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [os.getpid()]
    while stack:
        for pid in children.get(stack.pop(), []):
            found.append(pid)
            stack.append(pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in found:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in alive if _running(pid)]
        if not alive:
            break
    return found


def _running(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap our own children, or they stay as zombies that look alive
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def worker_environment(env: dict[str, str], enabled: bool = True):
    """Set ``env`` (where a variable is not set already) while local worker processes start, then restore.

    The local runner's multi_processing workers inherit the driver's environment when they are spawned,
    so this is how settings that a process reads once at start (TensorFlow's thread pools, glibc's
    malloc thresholds) reach them. ``enabled=False`` (in_memory mode) changes nothing.
    """
    if not enabled:
        yield
        return
    saved = {n: os.environ.get(n) for n in env}
    for n, v in env.items():
        os.environ.setdefault(n, v)
    try:
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


# One worker per core: TensorFlow would give each worker thread pools as large as the machine, whose
# spinning threads then compete with the other workers for the same cores.
SINGLE_THREADED_TF = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
