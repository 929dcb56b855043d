"""`speechid prep`: Common Voice archives -> TFRecords, tf.Transform analysis, failures and manifest.

Validates what it can see here and forwards keywords to ``speechid.pipelines.prep.prepare``; every flag
it does not know (``--runner``, ``--direct_num_workers``, ``--project``, ...) goes to Beam unchanged, and
one Beam does not know either is an error naming the closest valid flag.
"""

import logging
import re

import click

from speechid import schema

_RELAYED_TEXT = re.compile(r'message: "((?:[^"\\]|\\.)*)"')


class _WorkerProgress(logging.Filter):
    """In multi_processing mode Beam re-logs each worker line through local_job_service; let ours through
    at INFO (the progress lines say "speechid") and Beam's own only from WARNING up, except a warning every
    local worker prints at start and that does not concern us (no custom coders are registered)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "semi_persistent_directory" in message:
            return False
        if "speechid" in message:  # show the worker's own text, not the whole relayed log entry
            found = _RELAYED_TEXT.search(message)
            if found:
                record.msg, record.args = found.group(1).replace('\\"', '"').replace("\\\\", "\\"), ()
            return True
        return record.levelno >= logging.WARNING


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("speechid").setLevel(logging.INFO)
    relay = logging.getLogger("apache_beam.runners.portability.local_job_service")
    relay.setLevel(logging.INFO)
    if not any(isinstance(f, _WorkerProgress) for f in relay.filters):
        relay.addFilter(_WorkerProgress())


def _splits(ctx, param, value: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in value.split(",") if s.strip())
    bad = [s for s in names if s not in schema.ALL_SPLITS]
    if bad or not names:
        raise click.BadParameter(f"{value!r}: choose from {','.join(schema.ALL_SPLITS)}")
    return names


@click.command(context_settings=dict(ignore_unknown_options=True, allow_extra_args=True))
@click.option("--input", "inputs", multiple=True, required=True,
              help="A .tar/.tar.gz release, local or gs://; globs allowed; repeatable.")
@click.option("--output", required=True,
              help="Output folder (local or gs://): new, empty, or an earlier prep output, replaced atomically.")
@click.option("--sample-rate", default=16_000, show_default=True, type=click.IntRange(min=8000))
@click.option("--splits", default=",".join(schema.SPLITS), show_default=True, callback=_splits,
              help="TSVs whose rows become records (train,dev,test,validated,invalidated,other).")
@click.option("--min-duration", default=0.5, show_default=True, type=click.FloatRange(min=0.0))
@click.option("--max-duration", default=30.0, show_default=True, type=click.FloatRange(min=0.0, min_open=True))
@click.option("--max-clip-bytes", default=64 * 1024 * 1024, show_default=True, type=click.IntRange(min=1))
@click.option("--num-shards", default=0, show_default=True, type=click.IntRange(min=0),
              help="Shards per split; 0 lets the runner decide (no extra shuffle of the records).")
@click.option("--progress-interval", default=30.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Seconds between a worker's progress lines.")
@click.pass_context
def prep(ctx, inputs, output, sample_rate, splits, min_duration, max_duration, max_clip_bytes, num_shards,
         progress_interval):
    """Prepare Common Voice archives for training. Unknown flags go to Beam, e.g.
    `--direct_running_mode multi_processing --direct_num_workers 2` or `--runner DataflowRunner ...`."""
    if min_duration >= max_duration:
        raise click.BadParameter(f"{min_duration} >= --max-duration {max_duration}", param_hint="--min-duration")
    if ctx.args and not ctx.args[0].startswith("-"):  # Beam flags come as --flag [value]; this is neither
        raise click.UsageError(f"unexpected argument {ctx.args[0]!r} (archives go after --input)")
    _setup_logging()

    from speechid.pipelines.prep import prepare

    result = prepare(
        inputs,
        output,
        splits=splits,
        sample_rate=sample_rate,
        min_duration=min_duration,
        max_duration=max_duration,
        max_clip_bytes=max_clip_bytes,
        num_shards=num_shards,
        progress_interval=progress_interval,
        pipeline_args=list(ctx.args),
    )
    m = result.manifest
    records = ", ".join(f"{s} {n}" for s, n in m["records"].items())
    failures = ", ".join(f"{r} {n}" for r, n in m["failures"].items()) or "none"
    click.echo(f"wrote {result.output}: records {records}; failures {failures}")
    click.echo(f"rows: {m['reconciliation']['rows']}")
    click.echo(f"clips: {m['reconciliation']['clips']}")
    if not result.balanced:
        raise click.ClickException("the manifest's counts do not reconcile (a bug: please report it)")
