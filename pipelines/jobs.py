"""What every speechid Beam job shares: the runner choice, atomic outputs, counts that reconcile, progress.

Runner: with no ``--runner`` (or ``--runner DirectRunner``) Beam 2.77 first tries the Prism runner, which
downloads a binary on first use. A default run here must never reach the network, so those cases go to
Beam's FnApiRunner directly: the same engine DirectRunner uses for batch, honouring
``--direct_num_workers`` and ``--direct_running_mode`` (in_memory, multi_threading, multi_processing).
``--runner DaskRunner`` runs on a dask.distributed cluster with speechid's runner
(``speechid.pipelines.dask_runner``: ``--dask_client_address HOST:PORT`` names the scheduler). Any other
runner (Dataflow, Flink, Spark, Prism by name) is passed through untouched.

Flags: each job defines its own flags once, with ``JobFlags`` (Beam's idiom: ``run(argv)`` parses them
with ``parse_known_args``; the ``speechid`` command forwards its arguments to the same ``run``). What is
left goes to Beam, and ``check_pipeline_args`` refuses it unless Beam's ``PipelineOptions`` know it, so a
typo (``--num-shard``) is an error naming the closest valid flag instead of a warning Beam logs while it
runs with defaults.

Outputs: a job writes everything into a staging folder and publishes it at the end, both through
``speechid.outputs`` (the one guard every command that writes a folder uses).

Console: local worker processes' log records reach the console through the runner as protobuf dumps;
``WorkerLogFilter`` keeps only their errors and speechid's own progress lines, as plain lines (all of
them, as Beam logs them, with SPEECHID_DEBUG=1).

Counts: Beam metrics are not reliable on every runner, so manifests are built from the job's own output:
``count_by`` turns labelled PCollections into (group, key, count) lines written beside the data.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from speechid.errors import ConfigError

_LOCAL_RUNNERS = (None, "", "DirectRunner", "direct", "directrunner", "FnApiRunner")
_DASK_RUNNERS = ("daskrunner", "dask")
COUNTS_DIR = "_counts"


@functools.cache
def beam_flags() -> tuple[str, ...]:
    """Every flag Beam's PipelineOptions classes define (Dataflow, Flink, Spark, portable, ...)."""
    return tuple(a for action in _beam_parser()._actions for a in action.option_strings)


def _beam_parser():
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    try:  # registers Beam's DaskOptions (--dask_client_address, ...), which the dask runner reads
        import speechid.pipelines.dask_runner  # noqa: F401
    except ImportError:  # dask not installed: its flags stay unknown
        pass

    class Parser(_BeamArgumentParser):
        def error(self, message):  # argparse would print usage and exit; we want one typed error
            raise ConfigError(message)

    parser = Parser(allow_abbrev=False, add_help=False, conflict_handler="resolve")
    pending, adders = list(PipelineOptions.__subclasses__()), {}
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if "_add_argparse_args" in vars(cls):  # a subclass that does not override it would add its parent's
            adders[f"{cls.__module__}.{cls.__qualname__}"] = cls
    for cls in adders.values():
        cls._add_argparse_args(parser)
    return parser


class _DefaultsShown(argparse.HelpFormatter):
    """``(default: X)`` after a flag's help, where it has a default to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, argparse.SUPPRESS, False) and not action.required and action.option_strings:
            text += f" (default: {action.default})"
        return text


class JobFlags(argparse.ArgumentParser):
    """A Beam job's own flags, defined once: ``python -m speechid.pipelines.<job>`` and ``speechid <job>``
    both parse them here. Defaults are shown in ``--help``; a bad value is a ``ConfigError`` (one line on
    the console), and every flag not defined here is left for Beam (``parse_known_args``)."""

    def __init__(self, prog: str, description: str):
        super().__init__(prog=prog, description=description, allow_abbrev=False,
                         formatter_class=_DefaultsShown,
                         epilog="Every other flag goes to Beam (e.g. --direct_running_mode multi_processing "
                                "--direct_num_workers 2, --runner DaskRunner --dask_client_address HOST:PORT, "
                                "or --runner DataflowRunner --project ... --region ... "
                                "--temp_location gs://...); one Beam does not know either is an error.")

    def error(self, message: str):
        raise ConfigError(message)

    def own_flags(self) -> tuple[str, ...]:
        return tuple(f for action in self._actions for f in action.option_strings if f.startswith("--"))


def check_pipeline_args(args: Sequence[str], own_flags: Sequence[str] = ()) -> None:
    """Refuse arguments that neither the job (``own_flags``, already parsed out) nor Beam knows.

    Beam itself only logs "Unparseable argument" and runs with its defaults, so ``--num-shard 3`` or
    ``--sample_rate 8000`` would change nothing without a word. The error names the closest valid flag.
    """
    _, unknown = _beam_parser().parse_known_args(list(args))
    for token in unknown:
        if not token.startswith("-"):
            raise ConfigError(f"unexpected argument {token!r} (flags take the form --name value)")
        name = token.split("=", 1)[0]
        known = {f.lstrip("-").replace("_", "-"): f for f in beam_flags() if f.startswith("--")}
        known.update({f.lstrip("-").replace("_", "-"): f for f in own_flags})  # ours win a tie
        close = difflib.get_close_matches(name.lstrip("-").replace("_", "-"), list(known), n=1)
        hint = f"; did you mean {known[close[0]]}?" if close else ""
        raise ConfigError(f"unknown flag {name}: neither speechid nor Beam knows it{hint}")


def make_pipeline(beam_args: list[str], test_pipeline=None) -> beam.Pipeline:
    """A Pipeline for ``beam_args``; local runs use FnApiRunner so nothing is downloaded."""
    if test_pipeline is not None:
        return test_pipeline
    options = PipelineOptions(beam_args)
    runner = options.view_as(StandardOptions).runner
    if runner in _LOCAL_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        quiet_worker_logs()
        return beam.Pipeline(runner=FnApiRunner(), options=options)
    if str(runner).lower() in _DASK_RUNNERS:
        from speechid.pipelines.dask_runner import DaskRunner

        # A local cluster started for the job gets one TensorFlow thread per worker (one worker per core).
        return beam.Pipeline(runner=DaskRunner(worker_env=SINGLE_THREADED_TF), options=options)
    return beam.Pipeline(options=options)


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


def run_and_wait(p: beam.Pipeline):
    """``p.run()`` then ``wait_until_finish()``, in a helper thread so Ctrl-C and SIGTERM reach us; returns
    (result, final state).

    Beam's local runner waits for bundle results in a blocking wait that a signal delivered to one of
    its gRPC threads never interrupts: Ctrl-C was ignored and the job (worker processes included) ran
    on to its end. Here the main thread waits in short slices; on an interrupt this process's worker
    processes are terminated and the KeyboardInterrupt goes on to the caller, which drops its staging. A
    job on a cluster (``DaskJobResult``) is cancelled there first.
    """
    box: dict = {}

    def target():
        try:
            box["result"] = p.run()
            box["state"] = box["result"].wait_until_finish()
        except BaseException as e:  # handed to the waiting thread as it is
            box["error"] = e

    if threading.current_thread() is not threading.main_thread():
        target()  # signals only ever reach the main thread: nothing to gain from another hop
    else:
        thread = threading.Thread(target=target, name="speechid-pipeline", daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                thread.join(0.5)
        except KeyboardInterrupt:
            # The runner's threads go on until their workers vanish, and log each broken connection with a
            # traceback: the user asked to stop, so the one line the CLI prints is all they should see.
            for name in ["apache_beam", *logging.root.manager.loggerDict]:
                if name.startswith("apache_beam"):
                    logging.getLogger(name).setLevel(logging.CRITICAL + 1)
            threading.excepthook = _quiet_about_lost_workers(threading.excepthook)
            result = box.get("result")
            if result is not None and getattr(result, "cancel_on_interrupt", False):
                with contextlib.suppress(Exception):  # the interrupt matters more than a cancel that failed
                    result.cancel()
            stop_child_processes()
            raise
    if "error" in box:
        raise box["error"]
    return box["result"], box["state"]


def _quiet_about_lost_workers(hook):
    """A threading.excepthook that drops what Beam's threads raise once their workers are gone."""
    import traceback

    def quiet(args):
        frames = traceback.extract_tb(args.exc_traceback) if args.exc_traceback else []
        if any(f"{os.sep}apache_beam{os.sep}" in f.filename or f"{os.sep}grpc{os.sep}" in f.filename for f in frames):
            return
        hook(args)

    return quiet


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


def local_worker_count(beam_args: list[str]) -> int | None:
    """How many workers a local run uses (for progress lines); None for other runners (their own UI shows it)."""
    from apache_beam.options.pipeline_options import DirectOptions

    options = PipelineOptions(beam_args)
    if options.view_as(StandardOptions).runner not in _LOCAL_RUNNERS:
        return None
    direct = options.view_as(DirectOptions)
    return max(1, direct.direct_num_workers or 1) if direct.direct_running_mode != "in_memory" else 1


def local_worker_processes(beam_args: list[str]) -> bool:
    """True when the local runner will start separate worker processes (multi_processing mode)."""
    from apache_beam.options.pipeline_options import DirectOptions

    options = PipelineOptions(beam_args)
    return (options.view_as(StandardOptions).runner in _LOCAL_RUNNERS
            and options.view_as(DirectOptions).direct_running_mode == "multi_processing")


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


def single_threaded_tf_workers(enabled: bool = True):
    """Local worker processes started meanwhile run TensorFlow on one thread each (see worker_environment)."""
    return worker_environment(SINGLE_THREADED_TF, enabled)


def read_json(path: str):
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


class WriteJsonLines(beam.PTransform):
    """dicts -> ``<prefix>-SSSSS-of-NNNNN.jsonl`` (one shard at least, even when empty)."""

    def __init__(self, prefix: str, num_shards: int = 1):
        super().__init__()
        self._prefix = prefix
        self._num_shards = num_shards

    def expand(self, pcoll):
        return (
            pcoll
            | "ToJson" >> beam.Map(lambda d: json.dumps(d, sort_keys=True))
            | "Write" >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl", num_shards=self._num_shards)
        )


def read_json_lines(pattern: str) -> list[dict]:
    out = []
    for result in FileSystems.match([pattern]):
        for meta in sorted(result.metadata_list, key=lambda m: m.path):
            with FileSystems.open(meta.path) as f:
                out.extend(json.loads(line) for line in f.read().decode("utf-8").splitlines() if line.strip())
    return out


class CountBy(beam.PTransform):
    """{group: PCollection of keys} -> PCollection of {'group', 'key', 'count'} dicts."""

    def __init__(self, groups: dict):
        super().__init__()
        self._groups = groups

    def expand(self, pbegin):
        labelled = [
            pcoll | f"Label{name.title().replace('_', '')}" >> beam.Map(lambda k, g=name: (g, str(k)))
            for name, pcoll in self._groups.items()
        ]
        return (
            labelled
            | "FlattenLabels" >> beam.Flatten()
            | "CountLabels" >> beam.combiners.Count.PerElement()
            | "ToDict" >> beam.MapTuple(lambda gk, n: {"group": gk[0], "key": gk[1], "count": n})
        )


def read_counts(directory: str) -> dict[tuple[str, str], int]:
    """(group, key) -> count from the lines CountBy wrote under ``directory``."""
    counts: dict[tuple[str, str], int] = {}
    for d in read_json_lines(os.path.join(directory, "*.jsonl")):
        counts[(d["group"], d["key"])] = counts.get((d["group"], d["key"]), 0) + int(d["count"])
    return counts


class Progress:
    """A worker's progress lines, every ``every_s`` seconds while a job runs (metrics on the local runner are
    only readable at the end): ``<job> [pid N]: 1,312 of ~1,500 clips (65.6/s, ~2 s left); written 1,309,
    failed 3``. ``total`` is this worker's expected share when known (the job's count over the local
    workers), else only the count and rate are shown. Create it in ``DoFn.setup``; ``tick`` is cheap."""

    def __init__(self, job: str, every_s: float = 10.0, unit: str = "clips", total: float | None = None):
        from speechid.progress import Meter

        self._job = job
        self._unit = unit
        self._counts: dict[str, int] = {}
        self._meter = Meter(total, every_s)

    def set_total(self, total: float | None) -> None:
        self._meter.total = total

    def tick(self, name: str, n: int = 1) -> None:
        self._counts[name] = self._counts.get(name, 0) + n
        if self._meter.add(n):
            tallies = ", ".join(f"{k} {v:,}" for k, v in sorted(self._counts.items()))
            logging.getLogger("speechid").info(
                "%s [pid %d]: %s; %s", self._job, os.getpid(), self._meter.text(self._unit), tallies
            )


def log_metrics(job: str, result) -> dict[str, int]:
    """Final Beam counters of ``job``'s namespace, logged and returned (empty where the runner has none)."""
    try:
        counters = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(job))["counters"]
    except Exception:  # some runners do not report metrics; the manifest does not depend on them
        return {}
    values = {c.key.metric.name: c.committed or c.attempted or 0 for c in counters}
    if values:
        logging.getLogger("speechid").info("%s counters: %s", job, values)
    return values
