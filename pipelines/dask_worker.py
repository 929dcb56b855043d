"""What a dask worker runs for ``speechid.pipelines.dask_runner``: one partition of a fused stage, as one bundle.

A stage is a chain of Beam primitives that needs no shuffle: a root (values of a Create, bundles of a split
source, one partition of a GroupByKey, lifted combine or Reshuffle, or a list materialised by another stage)
feeding ParDos and Flattens, element by element, through Beam's own ``DoFnRunner`` (the engine the direct
runner uses). Nothing between two ParDos of a stage is held in a list, so a stage that reads archive ranges,
decodes clips and writes records keeps one clip in memory at a time. Every ParDo of the stage gets
``start_bundle`` before the partition's first element and ``finish_bundle`` after its last, upstream first,
so what ``finish_bundle`` emits (BatchElements' last batch, a file sink's shard name) flows on downstream
before those finish in turn.

What leaves a stage is only what a later stage needs: a PCollection used as a side input or as the root of
a cut stage (kept as a list), the input of a GroupByKey (split into the consumer's partitions by a hash of
the key's deterministic encoding), of a lifted combine (accumulators per key and window, already combined
within the partition) or of a Reshuffle (dealt round-robin): ``speechid.pipelines.dask_shuffle``. Every
other PCollection is only counted.

A worker thread builds a stage's DoFns once (``setup``) and keeps them for the job's later partitions. When
a job finishes, the runner sends ``teardown_job`` to every worker thread as a task, so DoFns are torn down
in the thread that set them up; after a failure or a cancel it only marks the job finished
(``mark_finished``) and each thread tears its executors down before its next task. Each partition seeds ``random`` (and
NumPy's global generator) from the job, the stage and the partition, so a partition that dask recomputes
after losing a worker puts every element in the same bucket as the first time: a shuffle consumer that
already read the first version and one that reads the second see the same data, and no record is lost
or written twice.
"""

from __future__ import annotations

import logging
import random
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

from apache_beam.internal import pickler
from apache_beam.runners.common import DoFnRunner, DoFnState, Receiver
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindow, GlobalWindows, TimestampedValue
from apache_beam.utils.windowed_value import WindowedValue

from speechid.pipelines.dask_shuffle import (
    CombineBuckets,
    ExecutionError,
    GroupBuckets,
    Shuffle,
    SpreadBuckets,
    combined,
    grouped,
)

# --- the plan a stage is run from (built by the runner on the client, pickled once per stage) ---------------


@dataclass
class Op:
    """One ParDo of a stage: its DoFn, its arguments (side inputs as placeholders) and where its outputs go."""

    label: str
    dofn: Any
    args: list
    kwargs: dict
    side_inputs: list  # (index into the stage's side input values, view class, view options)
    windowing: Any  # the main input's
    main_input: int  # PCollection id
    outputs: dict  # tag -> PCollection id


@dataclass
class Root:
    """Where a stage's partitions come from. ``kind``: "values" (a list of plain values, Create and Impulse),
    "read" (SourceBundles), "group" / "combine" / "spread" (the partition's bucket of every producer
    partition of ``shuffle``) or "concat" (a list of WindowedValues materialised by another stage)."""

    kind: str
    output: int  # PCollection id
    shuffle: Shuffle | None = None


@dataclass
class StagePlan:
    name: str
    root: Root
    ops: list[Op] = field(default_factory=list)
    forwards: dict = field(default_factory=dict)  # PCollection id -> [PCollection ids it flows into (Flatten)]
    keep: dict = field(default_factory=dict)  # PCollection id -> list of ("list", name) or ("shuffle", Shuffle)
    labels: dict = field(default_factory=dict)  # PCollection id -> label, for the element counts


# --- receivers: where an element goes once a DoFn emits it --------------------------------------------------


class _PCollectionReceiver(Receiver):
    """Counts a PCollection's elements in a partition and hands each one to its consumers in the stage."""

    def __init__(self):
        self.targets: list = []
        self.count = 0

    def receive(self, windowed_value):
        self.count += 1
        for target in self.targets:
            target(windowed_value)


class _Discard(Receiver):
    def receive(self, windowed_value):
        pass


class _Receivers(dict):
    """A DoFnRunner's tagged receivers; an output to a tag nobody declared is dropped (as the direct runner does)."""

    def __missing__(self, tag):
        return _Discard()


class _KeepList:
    def __init__(self):
        self.items: list = []

    def __call__(self, wv):
        self.items.append(wv)

    def result(self):
        return self.items


# --- the stage executor -----------------------------------------------------------------------------------


class _Step:
    """A DoFnRunner with the scoped state that attributes its metrics to its step."""

    def __init__(self, op: Op, runner: DoFnRunner, state):
        self.op = op
        self.runner = runner
        self.state = state

    def process(self, wv):
        with self.state:
            residuals = self.runner.process(wv)
        if residuals:
            raise ExecutionError(f"{self.op.label}: a splittable DoFn that checkpoints (returns residual work) "
                                 "is not supported by the dask runner")


class StageExecutor:
    """A stage's DoFns, set up once in one worker thread, run over any number of its partitions."""

    def __init__(self, plan: StagePlan, side_values: list):
        from apache_beam.metrics.execution import MetricsContainer
        from apache_beam.runners.worker import statesampler
        from apache_beam.utils.counters import CounterFactory

        self.plan = plan
        self._sampler = statesampler.StateSampler(plan.name, CounterFactory())
        self._receivers: dict[int, _PCollectionReceiver] = {}
        for pid in self._pcollections():
            self._receivers[pid] = _PCollectionReceiver()
        self._containers = {}
        self.steps: list[_Step] = []
        previous = statesampler.get_current_tracker()
        statesampler.set_current_tracker(self._sampler)
        try:
            for op in plan.ops:
                container = self._containers[op.label] = MetricsContainer(op.label)
                state = self._sampler.scoped_state(op.label, "process", metrics_container=container)
                side = [SideInputMap(view, options, side_values[i]) for i, view, options in op.side_inputs]
                receivers = _Receivers({tag: self._receivers[pid] for tag, pid in op.outputs.items()})
                with state:
                    runner = DoFnRunner(op.dofn, op.args, op.kwargs, side, op.windowing, tagged_receivers=receivers,
                                        step_name=op.label, state=DoFnState(CounterFactory()))
                    runner.setup()
                self.steps.append(_Step(op, runner, state))
            self._combine_fns = []
            for keeps in plan.keep.values():
                for kind, what in keeps:
                    if kind == "shuffle" and what.kind == "combine":
                        what.combine_fn.setup()
                        self._combine_fns.append(what.combine_fn)
            if plan.root.kind == "combine":
                plan.root.shuffle.combine_fn.setup()
                self._combine_fns.append(plan.root.shuffle.combine_fn)
        finally:
            statesampler.set_current_tracker(previous)
        for step in self.steps:
            self._receivers[step.op.main_input].targets.append(step.process)
        for source, targets in plan.forwards.items():
            for target in targets:
                self._receivers[source].targets.append(self._receivers[target].receive)

    def _pcollections(self) -> set[int]:
        plan = self.plan
        ids = {plan.root.output, *plan.keep, *plan.labels}
        for op in plan.ops:
            ids.add(op.main_input)
            ids.update(op.outputs.values())
        for source, targets in plan.forwards.items():
            ids.add(source)
            ids.update(targets)
        return ids

    def run(self, root_input, index: int) -> dict:
        """One partition as one bundle -> {"out": {name: list or buckets}, "summary": counts and metrics}."""
        from apache_beam.runners.worker import statesampler

        keepers = self._attach_keepers(index)
        for receiver in self._receivers.values():
            receiver.count = 0
        previous = statesampler.get_current_tracker()
        statesampler.set_current_tracker(self._sampler)
        try:
            for step in self.steps:
                with step.state:
                    step.runner.start()
            root = self._receivers[self.plan.root.output]
            for wv in root_elements(self.plan.root, root_input):
                root.receive(wv)
            for step in self.steps:  # upstream first: what finish_bundle emits still reaches the steps below
                with step.state:
                    step.runner.finish()
        finally:
            statesampler.set_current_tracker(previous)
            self._detach_keepers(keepers)
        out = {name: keeper.result() for name, keeper, _ in keepers}
        counts = {self.plan.labels.get(pid, str(pid)): r.count for pid, r in self._receivers.items()
                  if pid in self.plan.labels}
        return {"out": out, "summary": {"elements": counts, "metrics": self._take_metrics()}}

    def _attach_keepers(self, index: int) -> list:
        keepers = []
        for pid, keeps in self.plan.keep.items():
            for kind, what in keeps:
                if kind == "list":
                    keeper = _KeepList()
                    name = what
                elif what.kind == "group":
                    keeper, name = GroupBuckets(what), what.name
                elif what.kind == "combine":
                    keeper, name = CombineBuckets(what, what.combine_fn), what.name
                else:
                    keeper, name = SpreadBuckets(what, index), what.name
                self._receivers[pid].targets.append(keeper)
                keepers.append((name, keeper, pid))
        return keepers

    def _detach_keepers(self, keepers: list) -> None:
        for _, keeper, pid in keepers:
            self._receivers[pid].targets.remove(keeper)

    def _take_metrics(self) -> dict:
        merged: dict = {}
        for container in self._containers.values():
            updates = container.get_cumulative()
            container.reset()
            for kind in ("counters", "distributions", "gauges", "string_sets", "bounded_tries", "histograms"):
                values = getattr(updates, kind, {})
                if values:
                    merged.setdefault(kind, {}).update(values)
        return merged

    def teardown(self) -> None:
        for step in self.steps:
            try:
                step.runner.teardown()
            except Exception:  # teardown is best effort, as in every Beam runner
                logging.getLogger(__name__).warning("teardown of %s failed", step.op.label, exc_info=True)
        for fn in self._combine_fns:
            try:
                fn.teardown()
            except Exception:
                pass


def root_elements(root: Root, root_input):
    """The WindowedValues a stage partition starts from."""
    if root.kind == "values":
        for value in root_input:
            yield GlobalWindows.windowed_value(value)
    elif root.kind == "read":
        for bundle in root_input:
            source = bundle.source
            for value in source.read(source.get_range_tracker(bundle.start_position, bundle.stop_position)):
                if isinstance(value, WindowedValue):
                    yield value
                elif isinstance(value, TimestampedValue):
                    yield WindowedValue(value.value, value.timestamp, (GlobalWindow(),))
                else:
                    yield GlobalWindows.windowed_value(value)
    elif root.kind == "group":
        yield from grouped(root.shuffle, root_input)
    elif root.kind == "combine":
        yield from combined(root.shuffle, root_input)
    else:  # "spread" buckets and "concat" lists are lists of WindowedValues
        for part in root_input:
            yield from part


# --- the task functions dask calls ----------------------------------------------------------------------------

_EXECUTORS: dict[tuple, StageExecutor] = {}
_LOCK = threading.Lock()


class Payload:
    """Plain data handed to a task as it is: dask does not look inside it (a tuple could read as a task)."""

    __slots__ = ("items",)

    def __init__(self, items):
        self.items = items


def run_task(job, stage, plan_bytes, side_values, root_input, index):
    """The dask task of one stage partition: ``root_input`` is a ``Payload`` or the results of other tasks."""
    if isinstance(root_input, Payload):
        root_input = root_input.items
    return run_partition(job, stage, plan_bytes, side_values, root_input, index)


def run_partition(job: str, stage: int, plan_bytes: bytes, side_values: list, root_input, index: int) -> dict:
    """Run partition ``index`` of a stage (a dask task). The stage's executor is built by the first
    partition this worker thread runs and kept for the others; one that fails is dropped."""
    _teardown_finished()
    key = (job, stage, threading.get_ident())
    with _LOCK:
        executor = _EXECUTORS.get(key)
    if executor is None:
        logger = logging.getLogger("speechid")
        if logger.level == logging.NOTSET:  # progress lines are INFO; the runner forwards them to the client
            logger.setLevel(logging.INFO)
        executor = StageExecutor(pickler.loads(plan_bytes), side_values)
        with _LOCK:
            _EXECUTORS[key] = executor
    _seed(f"{job}/{stage}/{index}")
    try:
        return executor.run(root_input, index)
    except BaseException:
        with _LOCK:
            _EXECUTORS.pop(key, None)
        executor.teardown()
        raise


def _seed(text: str) -> None:
    seed = zlib.crc32(text.encode("utf-8"))
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover - Beam needs NumPy
        pass


_FINISHED: set[str] = set()


def teardown_job(job: str) -> int:
    """Mark ``job`` finished and tear down this thread's executors of it (a task the runner sends to every
    worker when the job ends). A DoFn is torn down in the thread that set it up: TensorFlow objects that
    tf.Transform's DoFns hold crashed the process when they were released from the worker's event loop.
    Executors of other threads are torn down when those threads run their next task."""
    with _LOCK:
        _FINISHED.add(job)
    return _teardown_finished()


def mark_finished(job: str) -> None:
    """Mark ``job`` finished without tearing anything down here (run on the worker's event loop when a job
    is cancelled or failed, while its threads may still be busy): each thread tears down its executors of
    the job before it runs its next task."""
    with _LOCK:
        _FINISHED.add(job)


def _teardown_finished() -> int:
    """Tear down and release this thread's executors of finished jobs, one at a time.

    Each is released and collected on its own (``gc.collect``): releasing a job's executors together, as one
    list going out of scope, crashed the worker process (SIGSEGV while freeing tf.Transform's TensorFlow
    state, seen on every prep run); released one by one they never did."""
    import gc

    me = threading.get_ident()
    with _LOCK:
        mine = [k for k in _EXECUTORS if k[2] == me and k[0] in _FINISHED]
    for key in mine:
        with _LOCK:
            executor = _EXECUTORS.pop(key, None)
        if executor is not None:
            executor.teardown()
            del executor
            gc.collect()
    return len(mine)


def pick(result: dict, name: str, bucket: int | None = None):
    """One materialised output of a stage partition (one bucket of it for a shuffle)."""
    out = result["out"][name]
    return out if bucket is None else out[bucket]


def summary(result: dict) -> dict:
    return result["summary"]


def concat(*parts) -> list:
    """A side input: every partition's list, in partition order."""
    return [wv for part in parts for wv in part]


def summarize(*summaries) -> dict:
    """The job's result, the only thing that returns to the client: element counts per PCollection and
    merged metric updates."""
    elements: dict[str, int] = {}
    metrics: dict = {}
    for s in summaries:
        for label, n in s["elements"].items():
            elements[label] = elements.get(label, 0) + n
        for kind, values in s["metrics"].items():
            into = metrics.setdefault(kind, {})
            for key, value in values.items():
                into[key] = value if key not in into else _combine_metric(into[key], value)
    return {"elements": elements, "metrics": metrics}


def _combine_metric(a, b):
    if isinstance(a, int | float):
        return a + b
    return a.combine(b) if hasattr(a, "combine") else b
