"""Both jobs' manifests: counts computed by the pipeline itself, the check that they add up, and whether a
run may publish.

Every stage emits small events ``(kind, key, value)`` next to its real output; one global combine
(``CountEvents``) turns them into a counts dict, a job's document function (``prep_manifest``,
``embed_manifest``) turns that into its ``manifest.json`` (``BuildManifest``), and ``WriteManifest``
writes it into the run's staging folder. Beam metrics say the same things while the job runs, but not
every runner reports them reliably (or at all once the job is gone), so a manifest never depends on them.
After the run the job reads the manifest back (``read_manifest``) and asks ``publish_problem`` whether the
output may replace what ``--output`` held.

Event kinds:
    tsv_rows                key "<archive>!<tsv member>", value: data lines read
    clips_seen              key archive, value: clip members (files under .../clips/)
    members_ignored         key archive, value: other files (README, other TSVs)
    rows_skipped_by_policy  key split, value: rows of TSVs not selected by --splits
    clips_not_selected      key archive: a clip that only unselected TSVs list
    clips_unlisted          key archive: a clip that no TSV lists
    decoder_warnings        key split: a written clip whose decoder reported (and recovered from) errors
    written                 key split, value (duration, client_id): one record handed to the writer (prep);
                            counted as records and seconds per split, and distinct speakers per split
    failures                key reason: one failure entry (``failures.failure_events``)
    inputs_failed           key JSON [archive, member, reason, detail]: an archive or TSV that failed whole
    failed_rows, failed_clips  key "", value: rows / clips a failure entry accounts for
    clips_read, clips_refused, clips_written  key "": embed's clips read, refused by its reader, embedded

The accounting (``reconciliation`` in the manifest):
    prep   rows read   = records written + rows failed + rows skipped by policy
           clips seen  = records written + clips failed + clips not selected + clips unlisted
    embed  clips seen  = clips written + clips failed + clips skipped by policy (not selected, unlisted),
           where clips seen = clips read + clips refused + clips skipped
"""

from __future__ import annotations

import json
from collections import Counter

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from speechid import schema

MANIFEST_VERSION = 1
EVENTS = "events"  # the tagged output events travel on
MANIFEST = "manifest"  # a job composite's output holding its one manifest dict

Event = tuple[str, str, object]  # (kind, key, value)
# embed's skipped clips, by the join events that stand for them and the names its manifest gives them.
_SKIPPED = {"clips_not_selected": "not_selected", "clips_unlisted": "unlisted"}


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



def prep_manifest(counts: dict, run_info: dict) -> dict:
    """prep's manifest.json document from the combined counts and what the run was asked to do."""
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
        "inputs_failed": _inputs_failed(counts),
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



def _inputs_failed(counts: dict) -> list[dict]:
    return [dict(zip(("archive", "member", "reason", "detail"), json.loads(k), strict=True))
            for k in sorted(counts.get("inputs_failed", {}))]


def embed_manifest(counts: dict, run_info: dict) -> dict:
    """embed's manifest.json document from the combined counts and what the run was asked to do."""
    failed = {k: int(v) for k, v in sorted(counts.get("failures", {}).items())}
    skipped = {name: int(_total(counts, kind)) for kind, name in _SKIPPED.items() if _total(counts, kind)}
    written = int(_total(counts, "clips_written"))
    seen = int(_total(counts, "clips_read") + _total(counts, "clips_refused")) + sum(skipped.values())
    n_failed, n_skipped = sum(failed.values()), sum(skipped.values())
    return {
        **run_info,
        "clips_seen": seen,
        "clips_written": written,
        "clips_failed": n_failed,
        "failures_by_reason": failed,
        "clips_skipped": n_skipped,
        "skipped_by_reason": skipped,
        "other_members_ignored": int(_total(counts, "members_ignored")),
        "inputs_failed": _inputs_failed(counts),
        "reconciliation": f"{seen} seen = {written} written + {n_failed} failed + {n_skipped} skipped by policy",
        "reconciles": seen == written + n_failed + n_skipped,
    }


class BuildManifest(beam.PTransform):
    """All events -> one manifest dict (a single-element PCollection), whatever the runner: the events'
    counts (``CountEvents``) handed to ``document(counts, run_info)``."""

    def __init__(self, document, run_info: dict):
        super().__init__()
        self._document = document
        self._run_info = dict(run_info)

    def expand(self, events):
        return (
            events
            | "CountEvents" >> beam.CombineGlobally(CountEvents())
            | "ToManifest" >> beam.Map(self._document, self._run_info)
        )


class WriteManifest(beam.PTransform):
    """The one manifest dict -> ``<output>/manifest.json`` (indented, keys sorted)."""

    def __init__(self, output: str):
        super().__init__()
        self._path = FileSystems.join(output, schema.MANIFEST)

    def expand(self, manifest):
        return (
            manifest
            | "ToJson" >> beam.Map(lambda m: json.dumps(m, indent=2, sort_keys=True))
            | "Write" >> beam.io.WriteToText(self._path, shard_name_template="")
        )


def read_manifest(output: str) -> dict:
    """The manifest ``WriteManifest`` wrote into ``output`` (a run's staging folder)."""
    with FileSystems.open(FileSystems.join(output, schema.MANIFEST)) as f:
        return json.loads(f.read().decode("utf-8"))


def _more(items: list, shown: int = 1) -> str:
    return f" (and {len(items) - shown} more)" if len(items) > shown else ""


def publish_problem(manifest: dict) -> str | None:
    """Why a finished run must publish nothing, in one line naming the input; None when it may publish.

    The inputs are wrong when a selected TSV lacks a required column, when every input failed whole, or
    when nothing came out (prep: a selected split with no records; embed: no clip embedded). Replacing a
    previous good output with nothing (or with a run missing a split) would hide that. ``manifest`` is
    either job's document (embed's is the one that counts ``clips_written``).
    """
    return _embed_problem(manifest) if "clips_written" in manifest else _prep_problem(manifest)


def _unusable_tsv(manifest: dict, name_the_rest: bool) -> str | None:
    tsvs = [f for f in manifest.get("inputs_failed", []) if f["reason"] == "unusable_tsv"]
    if not tsvs:
        return None
    f = tsvs[0]
    return f"{f['archive']}: {f['member']}: {f['detail']}{_more(tsvs) if name_the_rest else ''}; nothing was written"


def _prep_problem(manifest: dict) -> str | None:
    """Every archive failed whole; a selected TSV lacks a required column; or a selected split ends up with
    no records."""
    failed = manifest.get("inputs_failed", [])
    inputs = list(manifest.get("inputs", []))
    broken = {f["archive"]: f for f in failed if f["reason"] in ("archive_unreadable", "archive_truncated")}
    if inputs and all(a in broken for a in inputs):
        f = broken[inputs[0]]
        what = f"{f['reason']} ({f['detail']})"
        return f"{f['archive']}: {what}{_more(inputs)}; every archive failed, nothing was written"
    unusable = _unusable_tsv(manifest, name_the_rest=True)
    if unusable:
        return unusable
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


def _embed_problem(manifest: dict) -> str | None:
    """A selected TSV lacks a required column; or no clip was embedded (every input failed whole, none held
    a clip, or every clip failed or was skipped)."""
    unusable = _unusable_tsv(manifest, name_the_rest=False)
    if unusable:
        return unusable
    if manifest["clips_written"]:
        return None
    patterns = [i["pattern"] for i in manifest["inputs"]]
    source = f"{patterns[0]}{_more(patterns)}"
    whole = manifest["inputs_failed"]
    if whole:
        f = whole[0]
        return f"{f['archive']}: {f['reason']} ({f['detail']}); no clip was embedded, nothing was written"
    if not manifest["clips_seen"]:
        return f"--input {source}: no clips in it; nothing was written"
    why = ", ".join(f"{r} {n}" for r, n in {**manifest["failures_by_reason"], **manifest["skipped_by_reason"]}.items())
    return f"--input {source}: none of its {manifest['clips_seen']} clips was embedded ({why}); nothing was written"
