"""The dead-letter entry both jobs use: ``Failure``, the manifest events it stands for, and its writer.

A row, clip or archive member that cannot be used becomes one ``Failure`` on a job's ``failures`` output
and the job goes on. prep writes every field (``Failure.to_json``); embed writes the clip, its source,
the reason and the detail (``Failure.to_clip_json``). Both land in ``<output>/failures/failures-*.jsonl``
(``WriteFailures``). Reasons besides ``speechid.errors.AUDIO_REASONS``: ``unsafe_path``, ``not_a_file``,
``malformed_row``, ``undecodable_row``, ``duplicate``, ``missing_clip``, ``member_unreadable`` and the
``INPUT_REASONS``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from speechid import schema

FAILURES = "failures"  # the tagged output failures travel on, in every stage of both jobs

# Failures that stand for a whole input rather than a row or a clip: a run refuses to publish over them.
INPUT_REASONS = ("archive_unreadable", "archive_truncated", "unusable_tsv")


def printable(text: str) -> str:
    """``text`` with undecodable bytes shown as ``\\xNN`` (what failures and messages can carry)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Failure:
    """One dead-letter entry. ``rows``/``clips`` say how many TSV rows / clip members it accounts for."""

    archive: str  # the input it came from (embed: the clip's source, an archive or a file)
    path: str  # clip member path (or the archive member that failed); embed: the clip's id
    reason: str
    detail: str = ""
    split: str = ""
    tsv: str = ""
    line: int = 0
    rows: int = 0
    clips: int = 0

    def to_json(self) -> str:
        # Member names and TSV fields may hold bytes that are not UTF-8: shown as \\xNN, never an encode error.
        return printable(json.dumps(asdict(self), ensure_ascii=False, sort_keys=True))

    def to_clip_json(self) -> str:
        """The line embed writes: the clip, its source, the reason and the detail."""
        return json.dumps({"clip_id": self.path, "source": self.archive, "reason": self.reason, "detail": self.detail},
                          sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Failure:
        return Failure(**json.loads(text))


def input_failed_event(f: Failure) -> tuple[str, str, int]:
    """The manifest event naming an input that failed whole (``INPUT_REASONS``)."""
    return ("inputs_failed", json.dumps([f.archive, f.path, f.reason, f.detail]), 1)


def failure_events(f: Failure):
    """The manifest events one failure entry stands for."""
    yield ("failures", f.reason, 1)
    if f.reason in INPUT_REASONS:  # the manifest names these, and a run refuses to publish over them
        yield input_failed_event(f)
    if f.rows:
        yield ("failed_rows", "", f.rows)
    if f.clips:
        yield ("failed_clips", "", f.clips)


class WriteFailures(beam.PTransform):
    """Failures -> ``<output>/failures/failures-SSSSS-of-NNNNN.jsonl``, one JSON line each (``to_json``);
    ``num_shards`` 0 lets the runner decide."""

    def __init__(self, output: str, to_json=Failure.to_json, num_shards: int = 0):
        super().__init__()
        self._prefix = FileSystems.join(output, schema.FAILURES_DIR, "failures")
        self._to_json = to_json
        self._num_shards = num_shards

    def expand(self, failures):
        return (
            failures
            | "ToJson" >> beam.Map(self._to_json)
            | "Write" >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl", num_shards=self._num_shards)
        )
