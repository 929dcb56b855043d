"""Shuffles between the stages of ``speechid.pipelines.dask_runner``: what a producing partition keeps of a
shuffle's input, and what a consuming partition makes of it.

A GroupByKey's input is split into the consumer's partitions by a hash of the key's deterministic encoding
(``GroupBuckets``; ``grouped`` rebuilds one partition's groups), a lifted combine's into accumulators per
key and window, already combined within the producing partition (``CombineBuckets``; ``combined`` merges
and extracts them), a Reshuffle's dealt round-robin (``SpreadBuckets``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from apache_beam.transforms.window import TimestampCombiner
from apache_beam.utils.windowed_value import WindowedValue


@dataclass
class Shuffle:
    """A GroupByKey, lifted CombinePerKey or Reshuffle between stages: what producers keep of its input."""

    kind: str  # "group", "combine" or "spread"
    name: str
    partitions: int = 0  # set by the runner once it knows the cluster
    key_coder: Any = None  # group / combine: the key's deterministic coder
    combine_fn: Any = None  # combine
    timestamp_combiner: Any = None  # group: how the output timestamp is chosen
    window_fn: Any = None  # group


class ExecutionError(RuntimeError):
    """Something the runner cannot do came up while running (e.g. a splittable DoFn that checkpoints)."""


def key_and_value(wv, name: str):
    try:
        key, value = wv.value
    except (TypeError, ValueError):
        raise ExecutionError(f"{name}: expects (key, value) pairs, got {type(wv.value).__name__}") from None
    return key, value


class GroupBuckets:
    """(key, value) elements -> one bucket per consumer partition of (encoded key, WindowedValue)."""

    def __init__(self, shuffle: Shuffle):
        self._shuffle = shuffle
        self.buckets = [[] for _ in range(shuffle.partitions)]

    def __call__(self, wv):
        key, _ = key_and_value(wv, self._shuffle.name)
        encoded = self._shuffle.key_coder.encode(key)
        self.buckets[zlib.crc32(encoded) % len(self.buckets)].append((encoded, wv))

    def result(self):
        return self.buckets


class CombineBuckets:
    """(key, value) elements -> accumulators per (key, window), combined within the partition, then bucketed."""

    def __init__(self, shuffle: Shuffle, combine_fn):
        self._shuffle = shuffle
        self._fn = combine_fn
        self._table: dict = {}

    def __call__(self, wv):
        key, value = key_and_value(wv, self._shuffle.name)
        encoded = self._shuffle.key_coder.encode(key)
        for window in wv.windows:
            entry = self._table.get((encoded, window))
            if entry is None:
                entry = self._table[(encoded, window)] = [key, self._fn.create_accumulator()]
            entry[1] = self._fn.add_input(entry[1], value)

    def result(self):
        buckets = [[] for _ in range(self._shuffle.partitions)]
        for (encoded, window), (key, acc) in self._table.items():
            buckets[zlib.crc32(encoded) % len(buckets)].append((encoded, window, key, self._fn.compact(acc)))
        self._table = {}
        return buckets


class SpreadBuckets:
    """Elements dealt round-robin over the consumer's partitions (Reshuffle), from an offset per partition."""

    def __init__(self, shuffle: Shuffle, start: int):
        self.buckets = [[] for _ in range(shuffle.partitions)]
        self._next = start

    def __call__(self, wv):
        self.buckets[self._next % len(self.buckets)].append(wv)
        self._next += 1

    def result(self):
        return self.buckets


def grouped(shuffle: Shuffle, buckets):
    """One GroupByKey partition: (key, [values]) per key and window, in the order keys were first met."""
    impl = TimestampCombiner.get_impl(shuffle.timestamp_combiner, shuffle.window_fn)
    groups: dict = {}
    for bucket in buckets:
        for encoded, wv in bucket:
            key, value = wv.value
            for window in wv.windows:
                entry = groups.get((encoded, window))
                if entry is None:
                    entry = groups[(encoded, window)] = (key, [], [])
                entry[1].append(value)
                entry[2].append(impl.assign_output_time(window, wv.timestamp))
    for (_, window), (key, values, stamps) in groups.items():
        yield WindowedValue((key, values), impl.combine_all(stamps), (window,))


def combined(shuffle: Shuffle, buckets):
    """One lifted-combine partition: partial accumulators merged per key and window, then extracted."""
    fn = shuffle.combine_fn
    groups: dict = {}
    for bucket in buckets:
        for encoded, window, key, acc in bucket:
            entry = groups.get((encoded, window))
            if entry is None:
                groups[(encoded, window)] = [key, acc]
            else:
                entry[1] = fn.merge_accumulators([entry[1], acc])
    for (_, window), (key, acc) in groups.items():
        yield WindowedValue((key, fn.extract_output(acc)), window.max_timestamp(), (window,))

