"""What every speechid Beam job shares: the runner choice, atomic outputs, counts that reconcile, progress.

Runner: with no ``--runner`` (or ``--runner DirectRunner``) Beam 2.77 first tries the Prism runner, which
downloads a binary on first use. A default run here must never reach the network, so those cases go to
Beam's FnApiRunner directly: the same engine DirectRunner uses for batch, honouring
``--direct_num_workers`` and ``--direct_running_mode`` (in_memory, multi_threading, multi_processing).
Any other runner (Dataflow, Flink, Spark, Prism by name) is passed through untouched.

Atomic outputs: a job writes everything under ``<output>.tmp-<id>`` and ``finish`` moves it into place
after the manifest is written, so a crashed run never leaves a directory that looks complete, and a
rerun into the same output replaces the previous result instead of mixing with it.

Counts: Beam metrics are not reliable on every runner, so manifests are built from the job's own output:
``count_by`` turns labelled PCollections into (group, key, count) lines written beside the data.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

_LOCAL_RUNNERS = (None, "", "DirectRunner", "direct", "directrunner", "FnApiRunner")
COUNTS_DIR = "_counts"


def make_pipeline(beam_args: list[str], test_pipeline=None) -> beam.Pipeline:
    """A Pipeline for ``beam_args``; local runs use FnApiRunner so nothing is downloaded."""
    if test_pipeline is not None:
        return test_pipeline
    options = PipelineOptions(beam_args)
    runner = options.view_as(StandardOptions).runner
    if runner in _LOCAL_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return beam.Pipeline(runner=FnApiRunner(), options=options)
    return beam.Pipeline(options=options)


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


def is_local(path: str) -> bool:
    """A local path (not gs://, s3://, ...)."""
    return "://" not in path


def staging_dir(output: str) -> str:
    """A fresh sibling of ``output`` to write into before the atomic move."""
    return f"{output.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"


def write_json(path: str, obj) -> None:
    with FileSystems.create(path) as f:
        f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path: str):
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


def finish(staging: str, output: str, manifest: dict, manifest_name: str = "manifest.json") -> None:
    """Write the manifest into ``staging`` and move ``staging`` to ``output``, replacing what was there."""
    output = output.rstrip("/")
    write_json(os.path.join(staging, manifest_name), manifest)
    if is_local(output):
        old = None
        if os.path.exists(output):
            old = f"{output}.old-{uuid.uuid4().hex[:8]}"
            os.rename(output, old)
        os.rename(staging, output)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        return
    # Object stores have no directory rename: delete the old result, copy the new one, manifest last.
    existing = [m.path for r in FileSystems.match([output + "/**"]) for m in r.metadata_list]
    if existing:
        FileSystems.delete(existing)
    staged = [m.path for r in FileSystems.match([staging + "/**"]) for m in r.metadata_list]
    staged.sort(key=lambda p: p.endswith(manifest_name))
    for src in staged:
        FileSystems.copy([src], [output + src[len(staging) :]])
    FileSystems.delete([staging + "/"])


def remove_tree(path: str) -> None:
    """Delete a folder on any Beam filesystem, if it exists (object stores delete a folder by prefix)."""
    path = path if is_local(path) else path.rstrip("/") + "/"
    if FileSystems.exists(path):
        FileSystems.delete([path])


def discard(staging: str) -> None:
    """Drop a failed run's staging folder (best effort: the next run writes a new one anyway)."""
    try:
        remove_tree(staging)
    except Exception:  # noqa: BLE001  never mask the error that made us discard
        logging.getLogger("speechid").warning("could not remove %s", staging)


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
    """Logs a worker's running tallies every ``every_s`` seconds while a job runs (metrics on DirectRunner
    are only readable at the end). Create it in ``DoFn.setup``; ``tick`` is cheap."""

    def __init__(self, job: str, every_s: float = 10.0):
        self._job = job
        self._every = every_s
        self._counts: dict[str, int] = {}
        self._last = time.monotonic()
        self._start = self._last

    def tick(self, name: str, n: int = 1) -> None:
        self._counts[name] = self._counts.get(name, 0) + n
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            tallies = ", ".join(f"{k} {v}" for k, v in sorted(self._counts.items()))
            logging.getLogger("speechid").info(
                "%s [pid %d, %.0f s]: %s", self._job, os.getpid(), now - self._start, tallies
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
