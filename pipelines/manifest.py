"""The prep manifest: counts computed by the pipeline itself, and the check that they add up.

Every stage emits small events ``(kind, key, value)`` next to its real output; one global combine turns
them into a counts dict, and ``build_manifest`` turns that into ``manifest.json``. Beam metrics say the
same things while the job runs, but not every runner reports them reliably (or at all once the job is
gone), so the manifest never depends on them.

Event kinds:
    tsv_rows                key "<archive>!<tsv member>", value: data lines read
    clips_seen              key archive, value: clip members (files under .../clips/)
    members_ignored         key archive, value: other files (README, other TSVs)
    rows_skipped_by_policy  key split, value: rows of TSVs not selected by --splits
    clips_not_selected      key archive: a clip that only unselected TSVs list
    clips_unlisted          key archive: a clip that no TSV lists
    decoder_warnings        key split: a written clip whose decoder reported (and recovered from) errors
    written                 key split, value (duration, client_id): one record handed to the writer;
                            counted as records and seconds per split, and distinct speakers per split
    failures                key reason: one failure entry
    inputs_failed           key JSON [archive, member, reason, detail]: an archive or TSV that failed whole
    failed_rows, failed_clips  key "", value: rows / clips a failure entry accounts for

The accounting (``reconciliation`` in the manifest):
    rows read   = records written + rows failed + rows skipped by policy
    clips seen  = records written + clips failed + clips not selected + clips unlisted
"""

from __future__ import annotations

import json
from collections import Counter

import apache_beam as beam

MANIFEST_VERSION = 1


class CountEvents(beam.CombineFn):
    """Events -> {kind: {key: sum}}; ``written`` events become records, seconds and speakers per split."""

    def create_accumulator(self):
        return Counter(), {}

    def add_input(self, acc, event):
        sums, speakers = acc
        kind, key, value = event
        if kind == "written":  # one event per record: the commonest event carries all three counts
            duration, client_id = value
            sums[("records", key)] += 1
            sums[("seconds", key)] += duration
            speakers.setdefault(key, set()).add(client_id)
        else:
            sums[(kind, key)] += value
        return acc

    def merge_accumulators(self, accumulators):
        sums, speakers = Counter(), {}
        for s, sp in accumulators:
            sums.update(s)
            for split, ids in sp.items():
                speakers.setdefault(split, set()).update(ids)
        return sums, speakers

    def extract_output(self, acc):
        sums, speakers = acc
        out: dict[str, dict] = {}
        for (kind, key), value in sorted(sums.items()):
            out.setdefault(kind, {})[key] = value
        out["speakers"] = {split: len(ids) for split, ids in sorted(speakers.items())}
        return out


def _total(counts: dict, kind: str) -> float:
    return sum(counts.get(kind, {}).values())


def build_manifest(counts: dict, run_info: dict) -> dict:
    """The manifest.json document from the combined counts and what the run was asked to do."""
    splits = list(run_info.get("splits", []))
    records = {s: int(counts.get("records", {}).get(s, 0)) for s in splits}
    hours = {s: round(counts.get("seconds", {}).get(s, 0.0) / 3600.0, 6) for s in splits}
    speakers = {s: int(counts.get("speakers", {}).get(s, 0)) for s in splits}

    rows_per_tsv: dict[str, dict[str, int]] = {}
    for key, n in counts.get("tsv_rows", {}).items():
        archive, tsv = key.split("!", 1)
        rows_per_tsv.setdefault(archive, {})[tsv] = int(n)

    written = sum(records.values())
    rows_read = int(_total(counts, "tsv_rows"))
    rows_failed = int(_total(counts, "failed_rows"))
    rows_skipped = int(_total(counts, "rows_skipped_by_policy"))
    clips_seen = int(_total(counts, "clips_seen"))
    clips_failed = int(_total(counts, "failed_clips"))
    not_selected = int(_total(counts, "clips_not_selected"))
    unlisted = int(_total(counts, "clips_unlisted"))
    rows_ok = rows_read == written + rows_failed + rows_skipped
    clips_ok = clips_seen == written + clips_failed + not_selected + unlisted

    return {
        "version": MANIFEST_VERSION,
        **run_info,
        "rows_read_per_tsv": rows_per_tsv,
        "rows": {
            "read": rows_read,
            "written": written,
            "failed": rows_failed,
            "skipped_by_policy": rows_skipped,
            "skipped_by_policy_per_split": {k: int(v) for k, v in counts.get("rows_skipped_by_policy", {}).items()},
        },
        "clips": {
            "seen": clips_seen,
            "written": written,
            "failed": clips_failed,
            "not_selected_by_policy": not_selected,
            "unlisted": unlisted,
            "seen_per_archive": {k: int(v) for k, v in counts.get("clips_seen", {}).items()},
            "other_members_ignored": int(_total(counts, "members_ignored")),
            "written_with_decoder_warnings": int(_total(counts, "decoder_warnings")),
        },
        "records": records,
        "speakers": speakers,
        "hours": hours,
        "failures": {k: int(v) for k, v in sorted(counts.get("failures", {}).items())},
        "inputs_failed": [
            dict(zip(("archive", "member", "reason", "detail"), json.loads(k), strict=True))
            for k in sorted(counts.get("inputs_failed", {}))
        ],
        "reconciliation": {
            "rows": f"{rows_read} read = {written} written + {rows_failed} failed + {rows_skipped} skipped by policy",
            "clips": (
                f"{clips_seen} seen = {written} written + {clips_failed} failed + {not_selected} not selected "
                f"by policy + {unlisted} unlisted"
            ),
            "rows_balanced": rows_ok,
            "clips_balanced": clips_ok,
            "balanced": rows_ok and clips_ok,
        },
    }


class BuildManifest(beam.PTransform):
    """All events -> one manifest dict (a single-element PCollection), whatever the runner."""

    def __init__(self, run_info: dict):
        super().__init__()
        self._run_info = dict(run_info)

    def expand(self, events):
        return (
            events
            | "CountEvents" >> beam.CombineGlobally(CountEvents())
            | "ToManifest" >> beam.Map(build_manifest, self._run_info)
        )


def _more(items: list, shown: int = 1) -> str:
    return f" (and {len(items) - shown} more)" if len(items) > shown else ""


def publish_problem(manifest: dict) -> str | None:
    """Why a finished run must publish nothing, in one line naming the input; None when it may publish.

    Every archive failed whole; a selected TSV lacks a required column; or a selected split ends up with
    no records. Each means the inputs are wrong, and replacing a previous good output with nothing (or
    with a run missing a split) would hide that.
    """
    failed = manifest.get("inputs_failed", [])
    inputs = list(manifest.get("inputs", []))
    broken = {f["archive"]: f for f in failed if f["reason"] in ("archive_unreadable", "archive_truncated")}
    if inputs and all(a in broken for a in inputs):
        f = broken[inputs[0]]
        what = f"{f['reason']} ({f['detail']})"
        return f"{f['archive']}: {what}{_more(inputs)}; every archive failed, nothing was written"
    tsvs = [f for f in failed if f["reason"] == "unusable_tsv"]
    if tsvs:
        f = tsvs[0]
        return f"{f['archive']}: {f['member']}: {f['detail']}{_more(tsvs)}; nothing was written"
    for split in manifest.get("splits", []):
        if manifest.get("records", {}).get(split, 0):
            continue
        rows = sum(n for per_tsv in manifest.get("rows_read_per_tsv", {}).values()
                   for tsv, n in per_tsv.items() if tsv.rsplit("/", 1)[-1] == f"{split}.tsv")
        source = f"{inputs[0] if inputs else 'the input'}{_more(inputs)}"
        if rows:
            reasons = ", ".join(f"{r} {n}" for r, n in manifest.get("failures", {}).items())
            why = f"all {rows} rows of {split}.tsv in {source} failed (failures: {reasons})"
        else:
            why = f"no {split}.tsv rows in {source}"
        return f"--splits {split}: no records ({why}); nothing was written"
    return None
