"""What a job says while it runs and at its end: progress lines and Beam counters, in one namespace per job.

A job's counters live in the namespace ``speechid.<job>`` (``PREP``, ``EMBED``); a stage shared by both
jobs (the archive reader) counts in the namespace of the job that runs it. Counters are for watching a
job: not every runner reports them reliably, so the manifests are computed from the jobs' own output
(``speechid.pipelines.manifest``), never from these.
"""

from __future__ import annotations

import logging
import os

import apache_beam as beam

from speechid.progress import Meter

PREP, EMBED = "speechid.prep", "speechid.embed"


class Progress:
    """A worker's progress lines, every ``every_s`` seconds while a job runs (metrics on the local runner are
    only readable at the end): ``<job> [pid N]: 1,312 of ~1,500 clips (65.6/s, ~2 s left); written 1,309,
    failed 3``. ``total`` is this worker's expected share when known (the job's count over the local
    workers), else only the count and rate are shown. Create it in ``DoFn.setup``; ``tick`` is cheap."""

    def __init__(self, job: str, every_s: float = 10.0, unit: str = "clips", total: float | None = None):
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
