"""A demo run's record (``<workdir>/demo.json``) and where each of its stages writes.

Both demos (``speechid.app.demo``, ``speechid.app.demo_real``) fill one ``RunRecord`` as their stages
finish and write it last; ``speechid.app.report`` reads it back, so ``speechid demo --report-only`` can
write report.html again from any finished workdir. The record holds what only the run knows: stage
times in pipeline order, the per-epoch training curve, the model's operating points (read once from the
model's config.json, so the report needs no TensorFlow), the dedup and query figures.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields

from speechid.config import THRESHOLD

RUN_RECORD = "demo.json"
REPORT = "report.html"
REAL_MODE = "real"  # the record's ``mode`` for ``speechid demo --real``; the synthetic demo writes none
_STAGE_FOLDERS = ("corpus", "data", "model", "eval", "embeddings", "index", "dedup")
_REAL_FOLDERS = ("corpus_synth", "eval_synth", "eval_cross")


def workdir_paths(workdir: str) -> dict[str, str]:
    """Where each stage of a demo run in ``workdir`` writes (and where the report reads)."""
    workdir = os.path.abspath(workdir)
    paths = {k: os.path.join(workdir, k) for k in _STAGE_FOLDERS}
    paths["dedup_seed"] = os.path.join(workdir, f"dedup-{THRESHOLD:g}")  # 0.83 as the clip threshold
    paths["run"] = os.path.join(workdir, RUN_RECORD)
    return paths


def real_workdir_paths(workdir: str) -> dict[str, str]:
    """Where each stage of a ``--real`` run in ``workdir`` writes: the synthetic demo's keys, and more."""
    paths = workdir_paths(workdir)
    for key in _REAL_FOLDERS:
        paths[key] = os.path.join(os.path.abspath(workdir), key.replace("_", "-"))
    return paths


@dataclass
class RunRecord:
    """demo.json: one field per key, in the order the file lists them. Fields left None are the ones one
    kind of run does not have (``mode``, ``sources``, ``real``, ``optimizer_steps``: ``--real`` only) or
    that a partial record lacks; the report reads whatever is there."""

    mode: str | None = None
    config: dict = field(default_factory=dict)  # the run's size knobs (DemoConfig / RealDemoConfig)
    sources: dict | None = None  # --real: the packages' files read
    real: dict | None = None  # --real: trial lists (cross-corpus first), corpora, aliases planted
    records: dict = field(default_factory=dict)  # prep: split -> clips written
    failures: dict = field(default_factory=dict)  # prep: reason -> clips failed
    prep_balanced: bool | None = None
    training_curve: list[dict] = field(default_factory=list)  # one entry per epoch: loss, dev EER
    train_seconds: float | None = None
    best_dev_eer: float | None = None
    trainable_parameters: int | None = None
    optimizer_steps: int | None = None
    eval: dict | None = None  # the test split's metrics.json
    operating_points: dict | None = None  # the model's, from its config.json
    default_threshold: float | None = None
    model_id: str | None = None
    training: dict = field(default_factory=dict)  # the model config's training settings
    embedded: int | None = None
    index: str | None = None
    dedup: dict = field(default_factory=dict)  # level -> scores, at the model's operating points
    dedup_curve: list[dict] = field(default_factory=list)
    dedup_rule: str | None = None
    dedup_summary: str | None = None  # dedup/summary.txt
    dedup_seed: dict = field(default_factory=dict)  # level -> scores, 0.83 as the clip threshold
    query: dict | None = None
    seconds: dict = field(default_factory=dict)  # stage name -> wall seconds, in pipeline order

    @property
    def is_real(self) -> bool:
        return self.mode == REAL_MODE

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("mode", "sources", "real", "optimizer_steps"):  # absent from a synthetic run's record
            if out[key] is None:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> RunRecord:
        """The record of a demo.json (keys it does not know are ignored; missing ones take the defaults)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, path: str) -> None:
        """Write the record to ``path`` atomically (values JSON cannot hold are written as text)."""
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, default=str)
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: str) -> RunRecord:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))
