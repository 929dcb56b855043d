"""JSON lines and counts beside a job's data (embed's failures and counts), and the old home of
``Progress`` (``speechid.pipelines.metrics``), still imported from here by tests/speechid/test_progress.py."""

from __future__ import annotations

import json
import os

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from speechid.pipelines.metrics import Progress

__all__ = ["COUNTS_DIR", "CountBy", "Progress", "WriteJsonLines", "read_counts", "read_json", "read_json_lines"]


COUNTS_DIR = "_counts"


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
