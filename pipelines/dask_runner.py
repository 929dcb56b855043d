"""Beam on a dask.distributed cluster: speechid's ``DaskRunner`` (``--runner DaskRunner``).

Beam 2.77 ships a DaskRunner (``apache_beam.runners.dask``), but it cannot run prep or embed: every
output of a multi-output ParDo lands in one bag, only the last leaf of the graph is computed, what
``finish_bundle`` emits is dropped, ``Read`` has no translation, each use of a side input recomputes its
upstream and ``metrics()`` is not implemented. This subclass keeps Beam's options (``--dask_client_address``,
``--dask_scheduler_file``, ``--dask_connection_timeout``, ``--dask_npartitions``, ...) and replaces how a
pipeline is translated and run.

How a pipeline becomes dask tasks. The Python pipeline graph is cut into fused stages
(``speechid.pipelines.dask_translate``; workers run them with ``speechid.pipelines.dask_worker``): each
stage starts at a root and runs ParDos and Flattens element by element; each of its partitions is one
dask task and one Beam bundle (``start_bundle``, the elements, ``finish_bundle``, whose output is kept). Stage roots:

- ``Create`` and ``Impulse``: the values, split into partitions;
- ``Read`` of a bounded source: the source split on the client (``BoundedSource.split``), one bundle a task;
- ``GroupByKey``: one partition per hash bucket of the key's deterministic encoding;
- ``CombinePerKey``: lifted, as Beam's other runners do: accumulators per key and window are combined in the
  producing stage, only they are shuffled, then merged and extracted;
- ``Reshuffle``: elements dealt round-robin over new partitions;
- a PCollection a ParDo reads while its side inputs depend on that ParDo's own stage (a file sink's
  finalisation): materialised, and the ParDo runs in a new stage after them.

Every PCollection is produced in its stages only; one that is used as a side input is gathered once into one
task (its result is shipped to each worker that needs it, once), one that feeds a shuffle is bucketed by the
producer. Every stage partition reports counts (elements per PCollection) and its Beam metric updates, and
one final task adds them up: that is all that returns to the client, so every leaf (a sink, a ParDo nobody
reads) is computed and no data comes back. The PCollections a stage materialises are dask bags in all but
name: a list per partition, one dask key each.

Supported: ParDo (multiple outputs, side inputs as singleton, iterable, list, dict and multimap, DoFn
setup/start_bundle/finish_bundle/teardown, timestamped and windowed outputs), GroupByKey, CoGroupByKey,
CombinePerKey and CombineGlobally (with their defaults on empty input), Flatten, Create, Impulse, Read of
bounded sources, Reshuffle, WindowInto with non-merging windows (global, fixed, sliding), file sinks,
RunInference, tf.Transform's analyzers, Beam metrics (counters, distributions, gauges; committed =
attempted: a failed attempt's updates never return), and dask's recovery from a lost worker (see
``dask_worker`` on deterministic partitions).

Refused with ``UnsupportedPipeline`` before anything runs: streaming and unbounded PCollections or sources
(TestStream, unbounded-per-element splittable DoFns), stateful DoFns and timers, merging windows
(sessions), and any primitive it does not know (cross-language transforms). Triggers are not run: each
window fires once, when its input is complete, as a batch runner does. A bounded splittable DoFn outside a
Read runs each element's whole restriction in one call; one that checkpoints fails the job.

Cluster: ``--dask_client_address HOST:PORT`` (or ``--dask_scheduler_file``) joins a running cluster; with
neither, a local cluster of one single-threaded worker process per core is started for the job and
closed after it. ``--dask_npartitions`` sets the partitions of every shuffle and the most a Create or
Read is split into (default: 4 per worker thread). The dashboard's address is logged; speechid's worker
log lines (progress) are forwarded to the client's console; ``DaskJobResult.cancel()`` cancels the job's
tasks on the cluster (``runner.run_and_wait`` calls it on Ctrl-C).

    python -m speechid.pipelines.prep --input data/cv.tar.gz --output data/cv \\
        --runner DaskRunner --dask_client_address 127.0.0.1:8786
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import uuid

from apache_beam.internal import pickler
from apache_beam.metrics.metric import MetricResults
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.runners.dask.dask_runner import DaskOptions
from apache_beam.runners.dask.dask_runner import DaskRunner as BeamDaskRunner
from apache_beam.runners.runner import PipelineResult, PipelineState

from speechid.errors import ConfigError
from speechid.pipelines import dask_worker
from speechid.pipelines.dask_translate import Stage, Translator, UnsupportedPipeline, toposort
from speechid.pipelines.dask_worker import StagePlan

__all__ = ["DaskJobResult", "DaskOptions", "DaskRunner", "UnsupportedPipeline"]

_LOG = logging.getLogger("speechid")
PARTITIONS_PER_THREAD = 4
_MIN_BUNDLE_BYTES = 1 << 20


# --- the dask graph ----------------------------------------------------------------------------------------------


class _GraphBuilder:
    """Stages -> dask delayed tasks with named keys; one final key sums every partition's counts and metrics."""

    def __init__(self, job: str, stages: list[Stage], partitions: int, partition_size: int | None):
        self.job = job
        self.stages = stages
        self.partitions = partitions
        self.partition_size = partition_size
        self.parts: dict[int, list] = {}
        self._picks: dict = {}
        self._sides: dict = {}

    def build(self):
        from dask import delayed

        summaries = []
        for stage in toposort(self.stages):
            plan = StagePlan(stage.label, stage.root, stage.ops, stage.forwards, stage.keep, stage.labels)
            tag = _key_label(stage.label)
            plan_ref = delayed(pickler.dumps(plan), name=f"plan-{tag}-s{stage.id}-{self.job}")
            sides = [self._side(pid) for pid in stage.side_pcolls]
            parts = []
            for i, root_input in enumerate(self._root_inputs(stage)):
                part = delayed(dask_worker.run_task, pure=False)(self.job, stage.id, plan_ref, sides, root_input, i,
                                                 dask_key_name=f"{tag}-s{stage.id}p{i}-{self.job}")
                parts.append(part)
                summaries.append(delayed(dask_worker.summary, pure=False)(
                    part, dask_key_name=f"summary-s{stage.id}p{i}-{self.job}"))
            self.parts[stage.id] = parts
        return delayed(dask_worker.summarize, pure=False)(*summaries, dask_key_name=f"beam-job-{self.job}")

    def _pick(self, stage: Stage, i: int, name: str, bucket: int | None = None):
        from dask import delayed

        key = (stage.id, i, name, bucket)
        if key not in self._picks:
            b = "" if bucket is None else f"b{bucket}"
            self._picks[key] = delayed(dask_worker.pick, pure=False)(
                self.parts[stage.id][i], name, bucket, dask_key_name=f"pick-{name}-s{stage.id}p{i}{b}-{self.job}")
        return self._picks[key]

    def _side(self, pid: int):
        from dask import delayed

        if pid not in self._sides:
            producers = [s for s in self.stages if pid in s.keep and ("list", f"p{pid}") in s.keep[pid]]
            refs = [self._pick(s, i, f"p{pid}") for s in producers for i in range(len(self.parts[s.id]))]
            self._sides[pid] = delayed(dask_worker.concat, pure=False)(*refs, dask_key_name=f"side-p{pid}-{self.job}")
        return self._sides[pid]

    def _root_inputs(self, stage: Stage) -> list:
        root = stage.root
        if root.kind == "values":
            return [dask_worker.Payload(chunk) for chunk in self._chunks(stage.values)]
        if root.kind == "read":
            return [dask_worker.Payload([bundle]) for bundle in self._split(stage.source)]
        if root.kind == "concat":
            return [[self._pick(s, i, f"p{root.output}")] for s in stage.upstream for i in range(len(self.parts[s.id]))]
        name = root.shuffle.name
        return [[self._pick(s, i, name, j) for s in stage.upstream for i in range(len(self.parts[s.id]))]
                for j in range(root.shuffle.partitions)]

    def _chunks(self, values: list) -> list[list]:
        if self.partition_size:
            n = math.ceil(len(values) / self.partition_size)
        else:
            n = min(len(values), self.partitions)
        n = max(1, n)
        size = math.ceil(len(values) / n) if values else 0
        return [values[k * size:(k + 1) * size] for k in range(n)]

    def _split(self, source) -> list:
        try:
            estimate = source.estimate_size() or 0
        except Exception:  # a source that cannot tell is split at Beam's usual 64 MiB
            estimate = 0
        desired = max(_MIN_BUNDLE_BYTES, math.ceil(estimate / self.partitions)) if estimate else 64 << 20
        bundles = list(source.split(desired))
        return bundles or list(source.split(1 << 62))


def _key_label(label: str) -> str:
    """A dask key prefix from a step label (the dashboard groups tasks by it)."""
    text = re.sub(r"[^A-Za-z0-9]+", "_", label.split("/")[-1] or label).strip("_")
    return (text or "stage")[:40]


# --- the runner and its result -------------------------------------------------------------------------------------


class DaskRunner(BeamDaskRunner):
    """Runs a bounded pipeline on a dask.distributed cluster (see the module docstring).

    ``client``: an open ``distributed.Client`` to use (tests); otherwise the options say where the cluster is.
    ``worker_env``: environment variables for the workers of a local cluster started for the job.
    """

    def __init__(self, client=None, worker_env: dict | None = None):
        super().__init__()
        self._client = client
        self._worker_env = dict(worker_env or {})

    @staticmethod
    def is_fnapi_compatible():
        # The graph is translated as built in Python: no round trip through the runner API protos.
        return True

    def run_pipeline(self, pipeline, options):
        if options.view_as(StandardOptions).streaming:
            raise UnsupportedPipeline("--streaming: the dask runner runs bounded (batch) pipelines only")
        translator = Translator()
        pipeline.visit(translator)  # refuses what it cannot run before any cluster is reached
        dask_options = options.view_as(DaskOptions)
        client, cluster = self._connect(dask_options)
        try:
            threads = _wait_for_threads(client, dask_options.timeout)
            partitions = dask_options.npartitions or max(2, PARTITIONS_PER_THREAD * threads)
            for shuffle in translator.shuffles:
                shuffle.partitions = shuffle.partitions or partitions
            job = uuid.uuid4().hex[:10]
            final = _GraphBuilder(job, translator.stages, partitions, dask_options.partition_size).build()
            client.forward_logging("speechid", level=logging.INFO)
            future = client.compute(final, optimize_graph=False)
        except BaseException:
            _close(client, cluster, owned=self._client is None)
            raise
        _LOG.info("speechid dask: job %s, %d stages on %d worker threads at %s; dashboard: %s", job,
                  len(translator.stages), threads, client.scheduler.address, _dashboard(client))
        return DaskJobResult(client, future, job, owns_client=self._client is None, cluster=cluster)

    def _connect(self, opts):
        from distributed import Client, LocalCluster

        if self._client is not None:
            return self._client, None
        timeout = opts.timeout if isinstance(opts.timeout, int) else 30
        if opts.address or opts.scheduler_file:
            where = (f"--dask_client_address {opts.address}" if opts.address
                     else f"--dask_scheduler_file {opts.scheduler_file}")
            try:
                client = Client(address=opts.address, scheduler_file=opts.scheduler_file, timeout=timeout,
                                name=opts.name, connection_limit=opts.connection_limit, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as e:
                raise ConfigError(f"{where}: cannot reach a dask scheduler ({e})") from None
            return client, None
        import os

        cluster = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True,
                               host="127.0.0.1", env=self._worker_env)
        _LOG.info("speechid dask: no --dask_client_address; started a local cluster of %d workers for this job",
                  len(cluster.workers))
        return Client(cluster, set_as_default=False), cluster


def _wait_for_threads(client, timeout) -> int:
    threads = sum(client.nthreads().values())
    if threads:
        return threads
    wait = timeout if isinstance(timeout, int) else 60
    _LOG.info("speechid dask: waiting up to %d s for a worker to join %s", wait, client.scheduler.address)
    try:
        client.wait_for_workers(1, timeout=wait)
    except TimeoutError:
        raise ConfigError(f"the dask scheduler at {client.scheduler.address} has no worker (waited {wait} s)") from None
    return sum(client.nthreads().values())


def _dashboard(client) -> str:
    """The scheduler's dashboard address, or why there is none."""
    from distributed.utils import format_dashboard_link

    try:
        port = client.scheduler_info(n_workers=0).get("services", {}).get("dashboard")
    except Exception:  # an old scheduler or a broken connection: the job does not need it
        port = None
    if not port:
        return "none (the scheduler runs without one)"
    host = client.scheduler.address.split("://")[-1].rsplit(":", 1)[0]
    return format_dashboard_link(host, port)


def _close(client, cluster, owned: bool) -> None:
    try:
        client.unforward_logging("speechid")
    except Exception:  # never forwarded, or the connection is gone
        pass
    if owned:
        client.close()
        if cluster is not None:
            cluster.close()


def _teardown(client, job: str, timeout_s: float = 60) -> None:
    """DoFn teardown on every worker thread, as tasks: in the threads that ran the job's bundles."""
    from distributed import wait

    try:
        tasks = [client.submit(dask_worker.teardown_job, job, workers=[address], allow_other_workers=False,
                               pure=False, key=f"teardown-{job}-{address}-{i}")
                 for address, threads in client.nthreads().items() for i in range(threads)]
        wait(tasks, timeout=timeout_s)
        for task in tasks:
            task.release()
    except Exception:  # best effort, as in every Beam runner: the job's outputs are already final
        _LOG.debug("speechid dask: teardown of job %s did not finish on every worker", job, exc_info=True)


class DaskJobResult(PipelineResult):
    """A job on the cluster. ``wait_until_finish`` raises the first task error as the worker raised it;
    ``cancel`` cancels every task of the job; ``metrics()`` are Beam's, summed over all bundles;
    ``element_counts`` holds the number of elements of every PCollection (by producing step and tag)."""

    cancel_on_interrupt = True  # runner.run_and_wait cancels the job on Ctrl-C

    def __init__(self, client, future, job: str, owns_client: bool, cluster=None):
        super().__init__(PipelineState.RUNNING)
        self._client = client
        self._future = future
        self.job = job
        self._owns = owns_client
        self._cluster = cluster
        self._summary: dict | None = None
        self._closed = False

    def wait_until_finish(self, duration=None):
        if self._state != PipelineState.RUNNING:
            return self._state
        try:
            self._summary = self._future.result(timeout=None if duration is None else duration / 1000)
        except TimeoutError:
            if not self._future.done():
                return self._state
            self._state = PipelineState.FAILED
            self._cleanup(wait=False)
            raise
        except BaseException:
            if self._state == PipelineState.RUNNING:
                self._state = PipelineState.FAILED
            self._cleanup(wait=False)
            raise
        self._state = PipelineState.DONE
        self._cleanup(wait=True)
        return self._state

    def cancel(self):
        if self._state == PipelineState.RUNNING:
            self._state = PipelineState.CANCELLING
            try:
                self._client.cancel([self._future], force=True)
            finally:
                self._state = PipelineState.CANCELLED
                self._cleanup(wait=False)
        return self._state

    def _cleanup(self, wait: bool) -> None:
        """Release the job and tear its DoFns down: at once on the idle workers of a finished job; after a
        failure or a cancel, by each worker thread before its next task (tasks still running are not
        waited for: Ctrl-C returns at once)."""
        if self._closed:
            return
        self._closed = True
        self._future.release()  # first: a worker lost from now on must not make dask recompute the job
        try:
            if wait:
                _teardown(self._client, self.job)
            else:
                with contextlib.suppress(Exception):
                    self._client.run(dask_worker.mark_finished, self.job)
        finally:
            _close(self._client, self._cluster, self._owns)

    @property
    def element_counts(self) -> dict[str, int]:
        return dict((self._summary or {}).get("elements", {}))

    def metrics(self):
        return DaskMetrics((self._summary or {}).get("metrics", {}))


class DaskMetrics(MetricResults):
    """Beam metric results from the updates every bundle reported (committed and attempted are the same)."""

    KINDS = ("counters", "distributions", "gauges", "string_sets", "bounded_tries", "histograms")

    def __init__(self, updates: dict):
        self._updates = updates

    def query(self, filter=None):
        from apache_beam.metrics.execution import MetricResult

        out = {kind: [] for kind in self.KINDS}
        for kind in self.KINDS:
            for key, value in self._updates.get(kind, {}).items():
                if self.matches(filter, key):
                    result = value.get_result() if hasattr(value, "get_result") else value
                    out[kind].append(MetricResult(key, result, result))
        return out
