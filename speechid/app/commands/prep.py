"""`speechid prep`: Common Voice archives -> TFRecords, tf.Transform analysis, failures and manifest.

The flags are ``speechid.pipelines.prep.flag_parser``'s (``speechid prep --help``), the same as
``python -m speechid.pipelines.prep``; every flag it does not define (``--runner``,
``--direct_num_workers``, ``--project``, ...) goes to Beam, and one Beam does not know either is an error
naming the closest valid flag.
"""

import click

from speechid.app.commands import beam_job_command


def _report(result) -> None:
    m = result.manifest
    records = ", ".join(f"{s} {n}" for s, n in m["records"].items())
    failures = ", ".join(f"{r} {n}" for r, n in m["failures"].items()) or "none"
    click.echo(f"wrote {result.output}: records {records}; failures {failures}")
    click.echo(f"rows: {m['reconciliation']['rows']}")
    click.echo(f"clips: {m['reconciliation']['clips']}")
    if not result.balanced:
        raise click.ClickException("the manifest's counts do not reconcile (a bug: please report it)")


prep = beam_job_command(
    "prep", "speechid.pipelines.prep",
    "Prepare Common Voice archives for training. Unknown flags go to Beam, e.g. "
    "`--direct_running_mode multi_processing --direct_num_workers 2` or `--runner DataflowRunner ...`.",
    _report,
)
