"""The first half of ``speechid.pipelines.dask_runner``: a Beam pipeline graph cut into fused stages.

``Translator`` walks the Python pipeline graph once, in application order, and places every primitive in a
``Stage`` (see ``dask_runner`` for what a stage is and which roots start one): a ParDo or Flatten goes into
every stage its main input flows in, unless one of its side inputs needs that stage finished first (a file
sink's finalisation), in which case its input is materialised and it starts a new stage. What the runner
cannot run is refused here, before any cluster is reached (``UnsupportedPipeline``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from apache_beam import pvalue
from apache_beam.io import iobase
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.common import DoFnSignature
from apache_beam.transforms import core, util
from apache_beam.transforms.combiners import curry_combine_fn
from apache_beam.transforms.window import TimestampCombiner
from apache_beam.typehints import typehints

from speechid.errors import ConfigError
from speechid.pipelines.dask_shuffle import Shuffle
from speechid.pipelines.dask_worker import Op, Root


class UnsupportedPipeline(ConfigError):
    """The pipeline uses a Beam feature this runner does not run (the message names the step and the feature)."""


@dataclass(eq=False)
class Stage:
    id: int
    root: Root
    label: str
    deps: set = field(default_factory=set)  # stages whose output this one reads (shuffles, side inputs, cuts)
    ops: list = field(default_factory=list)
    forwards: dict = field(default_factory=dict)
    keep: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)
    side_pcolls: list = field(default_factory=list)  # PCollection ids, in the order ops index them
    values: list | None = None  # root "values"
    source: object = None  # root "read"
    upstream: list = field(default_factory=list)  # shuffle and concat roots: the producer stages

    def request(self, pid: int, what) -> None:
        if what not in self.keep.setdefault(pid, []):
            self.keep[pid].append(what)


class Translator(PipelineVisitor):
    """Walks the pipeline once, in application order, and places every primitive in a stage."""

    def __init__(self):
        self.stages: list[Stage] = []
        self.shuffles: list[Shuffle] = []
        self._ids: dict = {}
        self.producers: dict[int, list[Stage]] = {}  # PCollection id -> the stages its elements flow in
        self._cuts: dict[int, list[Stage]] = {}
        self._inside = None  # a composite translated whole: its parts are skipped

    # PCollection ids and labels
    def pid(self, pcoll) -> int:
        if pcoll not in self._ids:
            self._ids[pcoll] = len(self._ids)
        return self._ids[pcoll]

    def _produced(self, stage: Stage, pcoll) -> int:
        pid = self.pid(pcoll)
        label = pcoll.producer.full_label if pcoll.producer else "?"
        stage.labels[pid] = label if pcoll.tag is None else f"{label}[{pcoll.tag}]"
        if stage not in self.producers.setdefault(pid, []):
            self.producers[pid].append(stage)
        return pid

    def _new_stage(self, root: Root, label: str, **kwargs) -> Stage:
        stage = Stage(len(self.stages), root, label, **kwargs)
        self.stages.append(stage)
        return stage

    # the visitor
    def enter_composite_transform(self, node) -> None:
        if self._inside is not None or node.transform is None:
            return
        t = node.transform
        if isinstance(t, core.Create):
            self._root(node, Root("values", -1), values=list(t.values))
        elif isinstance(t, iobase.Read) and isinstance(t.source, iobase.BoundedSource):
            self._root(node, Root("read", -1), source=t.source)
        elif isinstance(t, util.Reshuffle):
            self._shuffle(node, Shuffle("spread", self._name("reshuffle")))
        elif type(t) is core.CombinePerKey and self._liftable(node):
            fn = curry_combine_fn(t.fn, t.args, t.kwargs)
            self._shuffle(node, Shuffle("combine", self._name("combine"), key_coder=self._key_coder(node),
                                        combine_fn=fn))
        else:
            return
        self._inside = node

    def leave_composite_transform(self, node) -> None:
        if self._inside is node:
            self._inside = None

    def visit_transform(self, node) -> None:
        if self._inside is not None:
            return
        self._check_bounded(node)
        t = node.transform
        if isinstance(t, core.Impulse):
            self._root(node, Root("values", -1), values=[b""])
        elif isinstance(t, core.ParDo):
            self._pardo(node)
        elif isinstance(t, core.GroupByKey):
            self._group(node)
        elif isinstance(t, core.Flatten):
            self._flatten(node)
        elif isinstance(t, iobase.Read) and isinstance(t.source, iobase.BoundedSource):
            self._root(node, Root("read", -1), source=t.source)
        elif isinstance(t, iobase.Read):
            raise UnsupportedPipeline(f"{node.full_label}: reads an unbounded source; the dask runner runs "
                                      "bounded (batch) pipelines only")
        else:
            raise UnsupportedPipeline(f"{node.full_label}: {type(t).__name__} is a primitive the dask runner "
                                      "does not run (it runs ParDo, GroupByKey, Flatten, Impulse, Create, Read "
                                      "of bounded sources, Reshuffle and CombinePerKey)")

    # roots
    def _root(self, node, root: Root, **payload) -> None:
        stage = self._new_stage(root, node.full_label, **payload)
        root.output = self._produced(stage, node.outputs[None])

    def _shuffle(self, node, shuffle: Shuffle) -> None:
        (inp,) = node.inputs
        self._check_windowing(node, inp)
        src = self.pid(inp)
        upstream = list(self.producers.get(src, []))
        for stage in upstream:
            stage.request(src, ("shuffle", shuffle))
        if shuffle.kind != "spread" and self._key_type(node) is type(None):
            shuffle.partitions = 1  # one key (CombineGlobally, a sink's shard list): one partition, not N empty
        self.shuffles.append(shuffle)
        stage = self._new_stage(Root(shuffle.kind, -1, shuffle), node.full_label, deps=set(upstream),
                                upstream=upstream)
        stage.root.output = self._produced(stage, node.outputs[None])

    def _group(self, node) -> None:
        (inp,) = node.inputs
        windowing = inp.windowing
        self._shuffle(node, Shuffle("group", self._name("group"), key_coder=self._key_coder(node),
                                    timestamp_combiner=windowing.timestamp_combiner, window_fn=windowing.windowfn))

    def _name(self, kind: str) -> str:
        return f"{kind}{len(self.shuffles)}"

    # ParDo and Flatten
    def _pardo(self, node) -> None:
        t = node.transform
        self._check_dofn(node, t.fn)
        (main,) = node.main_inputs.values()
        src = self.pid(main)
        side_pids = [self.pid(si.pvalue) for si in node.side_inputs]
        side_stages = {s for p in side_pids for s in self.producers.get(p, [])}
        targets = list(self.producers.get(src, []))
        if any(self._depends(side, stage) for stage in targets for side in side_stages):
            targets = [self._cut(src, side_stages)]
        for stage in targets:
            side = []
            for si, p in zip(node.side_inputs, side_pids, strict=True):
                if p not in stage.side_pcolls:
                    stage.side_pcolls.append(p)
                side.append((stage.side_pcolls.index(p), type(si), si._view_options()))
            stage.deps |= side_stages
            outputs = {tag: self._produced(stage, pcoll) for tag, pcoll in node.outputs.items()}
            stage.ops.append(Op(node.full_label, t.fn, list(t.args), dict(t.kwargs), side, main.windowing, src,
                                outputs))
        for p in side_pids:
            for producer in self.producers.get(p, []):
                producer.request(p, ("list", f"p{p}"))

    def _cut(self, src: int, side_stages: set) -> Stage:
        """A stage rooted at ``src`` materialised, for a ParDo whose side inputs need ``src``'s own stage done."""
        for stage in self._cuts.get(src, []):
            if not any(self._depends(side, stage) for side in side_stages):
                return stage
        upstream = list(self.producers.get(src, []))
        for producer in upstream:
            producer.request(src, ("list", f"p{src}"))
        stage = self._new_stage(Root("concat", src), f"after {upstream[0].label}" if upstream else "empty",
                                deps=set(upstream), upstream=upstream)
        self._cuts.setdefault(src, []).append(stage)
        return stage

    def _flatten(self, node) -> None:
        out = node.outputs[None]
        for inp in node.inputs:
            if not isinstance(inp, pvalue.PCollection):
                continue
            src = self.pid(inp)
            for stage in list(self.producers.get(src, [])):
                dst = self._produced(stage, out)
                stage.forwards.setdefault(src, []).append(dst)
        self.pid(out)

    def _depends(self, stage: Stage, on: Stage) -> bool:
        seen, todo = set(), [stage]
        while todo:
            s = todo.pop()
            if s is on:
                return True
            if s.id not in seen:
                seen.add(s.id)
                todo.extend(s.deps)
        return False

    # checks
    def _check_bounded(self, node) -> None:
        for pcoll in node.outputs.values():
            if isinstance(pcoll, pvalue.PCollection) and not pcoll.is_bounded:
                raise UnsupportedPipeline(f"{node.full_label}: produces an unbounded PCollection; the dask runner "
                                          "runs bounded (batch) pipelines only")

    def _check_dofn(self, node, fn) -> None:
        signature = DoFnSignature(fn)
        if signature.is_stateful_dofn() or signature.has_timers():
            raise UnsupportedPipeline(f"{node.full_label}: {type(fn).__name__} uses state or timers, which the dask "
                                      "runner does not support")
        if signature.is_splittable_dofn() and signature.is_unbounded_per_element():
            raise UnsupportedPipeline(f"{node.full_label}: an unbounded splittable DoFn; the dask runner runs "
                                      "bounded (batch) pipelines only")

    def _check_windowing(self, node, pcoll) -> None:
        if pcoll.windowing.windowfn.is_merging():
            raise UnsupportedPipeline(f"{node.full_label}: merging windows ({type(pcoll.windowing.windowfn).__name__})"
                                      " are not supported by the dask runner")

    def _liftable(self, node) -> bool:
        (inp,) = node.inputs
        windowing = inp.windowing
        return (not windowing.windowfn.is_merging()
                and windowing.timestamp_combiner == TimestampCombiner.OUTPUT_AT_EOW)

    def _key_type(self, node):
        (inp,) = node.inputs
        try:
            return typehints.coerce_to_kv_type(inp.element_type, node.full_label).tuple_types[0]
        except Exception:  # no usable type hint: Beam's default coder for any key
            return typehints.Any

    def _key_coder(self, node):
        from apache_beam import coders

        key_type = self._key_type(node)
        coder = coders.registry.get_coder(key_type)
        try:
            return coder.as_deterministic_coder(node.full_label)
        except ValueError:
            return coders.registry.get_coder(typehints.Any).as_deterministic_coder(node.full_label)


def toposort(stages: list[Stage]) -> list[Stage]:
    done: set[int] = set()
    order: list[Stage] = []

    def visit(stage: Stage, path: tuple):
        if stage.id in done:
            return
        if stage.id in path:
            raise UnsupportedPipeline(f"{stage.label}: the pipeline's stages depend on each other in a cycle")
        for dep in sorted(stage.deps, key=lambda s: s.id):
            visit(dep, path + (stage.id,))
        done.add(stage.id)
        order.append(stage)

    for stage in stages:
        visit(stage, ())
    return order
