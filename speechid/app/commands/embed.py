"""`speechid embed`: clips -> unit embeddings in Parquet, with Beam RunInference.

The flags are ``speechid.pipelines.embed.flag_parser``'s (``speechid embed --help``), the same as
``python -m speechid.pipelines.embed``; every flag it does not define (``--runner``,
``--direct_num_workers``, ``--project``, ...) goes to Beam, and one Beam does not know either is an error
naming the closest valid flag.
"""

import click

from speechid.app.commands import beam_job_command


def _report(m: dict) -> None:
    reasons = ", ".join(f"{r} {n}" for r, n in m["failures_by_reason"].items()) or "none"
    skipped = ", ".join(f"{r} {n}" for r, n in m["skipped_by_reason"].items()) or "none"
    click.echo(f"wrote {m['output']}: {m['clips_written']} clips embedded of {m['clips_seen']}; failed: {reasons}; "
               f"skipped by policy: {skipped}")
    click.echo(f"clips: {m['reconciliation']}")


embed = beam_job_command(
    "embed", "speechid.pipelines.embed",
    "Embed clips in bulk. Unknown flags go to Beam, e.g. "
    "`--direct_running_mode multi_processing --direct_num_workers 2` or `--runner DataflowRunner ...`.",
    _report,
)
