"""Click commands, one module per part. They validate paths and forward keywords to the library; the Beam
jobs (prep, embed) forward their arguments to the job's own ``run(argv)`` (``beam_job_command``)."""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Sequence

import click


def format_table(headers: Sequence[str], rows: Sequence[Sequence], right: Sequence[int] = (), indent: str = ""
                 ) -> list[str]:
    """Aligned text columns (two spaces apart) for a terminal; columns whose index is in ``right`` align right."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return [indent + "  ".join(c.rjust(w) if i in right else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in cells]


class Threshold(click.ParamType):
    """The type of every threshold flag (``--threshold``, ``--merge-threshold``): a positive, finite number.
    NaN would call every pair different, infinity every pair the same, and nothing is closer than 0."""

    name = "float"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not (math.isfinite(number) and number > 0):
            self.fail(f"{value} is not a positive, finite number.", param, ctx)
        return number


THRESHOLD = Threshold()


def beam_job_command(name: str, module: str, summary: str, report) -> click.Command:
    """``speechid <name>``: every argument goes to ``<module>.run(argv)``, where the job defines its flags
    once (``<module>.flag_parser``, Beam's split-argv idiom; what it does not know goes to Beam). ``--help``
    prints that parser's help; ``report(result)`` echoes the outcome. The module (and Beam) is imported only
    when the command runs, so ``speechid --help`` stays fast."""

    @click.command(name, help=summary, add_help_option=False,
                   context_settings=dict(ignore_unknown_options=True, allow_extra_args=True))
    @click.argument("argv", nargs=-1, type=click.UNPROCESSED)
    def command(argv):
        job = importlib.import_module(module)
        argv = list(argv)
        if "-h" in argv or "--help" in argv:
            click.echo(job.flag_parser().format_help())
            return
        if argv and not argv[0].startswith("-"):  # Beam flags come as --flag [value]; this is neither
            raise click.UsageError(f"unexpected argument {argv[0]!r} (inputs go after --input)")
        _job_logging()
        report(job.run(argv))

    return command


def _job_logging() -> None:
    """speechid's own lines (progress, summaries) at INFO; Beam's and TensorFlow's from WARNING up. Local
    workers' records are filtered by ``speechid.pipelines.jobs.WorkerLogFilter``."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("speechid").setLevel(logging.INFO)
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.INFO)
