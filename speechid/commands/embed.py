"""`speechid embed`: clips -> unit embeddings in Parquet, with Beam RunInference.

Validates paths and forwards keywords to ``speechid.pipelines.embed.embed_corpus``; every flag it does
not know (``--runner``, ``--direct_num_workers``, ``--project``, ...) goes to Beam unchanged, and one Beam
does not know either is an error naming the closest valid flag.
"""

import logging

import click

from speechid.audio import INFERENCE_LIMITS


@click.command(context_settings=dict(ignore_unknown_options=True, allow_extra_args=True))
@click.option("--model", "model_dir", required=True, help="Model directory (config.json + saved_model/).")
@click.option("--input", "inputs", multiple=True, required=True,
              help="Common Voice archive glob, audio file glob, or prep TFRecords / prep output dir; repeatable.")
@click.option("--output", required=True,
              help="Output folder for part-*.parquet, failures/ and manifest.json: new, empty, or an earlier embed "
                   "output, replaced atomically.")
@click.option("--input-kind", type=click.Choice(["auto", "archive", "audio", "tfrecord"]), default="auto",
              show_default=True)
@click.option("--window", type=click.FloatRange(min=0.1), default=None, help="Window seconds [model's].")
@click.option("--hop", type=click.FloatRange(min=0.01), default=None, help="Hop seconds [model's].")
@click.option("--min-batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--max-batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--min-duration", type=click.FloatRange(min=0.0), default=INFERENCE_LIMITS.min_duration,
              show_default=True, help="Refuse shorter clips (the same rule as `speechid compare`).")
@click.option("--max-duration", type=click.FloatRange(min=0.0, min_open=True), default=INFERENCE_LIMITS.max_duration,
              show_default=True, help="Refuse longer clips.")
@click.option("--num-shards", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--inference-accelerator", default=None,
              help="Resource hint for the inference step only, e.g. 'type:nvidia-l4;count:1;install-nvidia-driver'.")
@click.pass_context
def embed(ctx, model_dir, inputs, output, input_kind, window, hop, min_batch_size, max_batch_size, min_duration,
          max_duration, num_shards, inference_accelerator):
    """Embed clips in bulk. Unknown flags go to Beam, e.g.
    `--direct_running_mode multi_processing --direct_num_workers 2` or `--runner DataflowRunner ...`."""
    import os

    if "://" not in model_dir and not os.path.isdir(model_dir):
        raise click.BadParameter(f"{model_dir}: no such directory", param_hint="--model")
    if min_batch_size > max_batch_size:
        raise click.BadParameter(f"{min_batch_size} > --max-batch-size {max_batch_size}", param_hint="--min-batch-size")
    if ctx.args and not ctx.args[0].startswith("-"):
        raise click.UsageError(f"unexpected argument {ctx.args[0]!r} (inputs go after --input)")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("speechid").setLevel(logging.INFO)

    from speechid.pipelines.embed import embed_corpus

    m = embed_corpus(
        model_dir,
        list(inputs),
        output,
        input_kind=input_kind,
        window_s=window,
        hop_s=hop,
        min_batch_size=min_batch_size,
        max_batch_size=max_batch_size,
        min_duration=min_duration,
        max_duration=max_duration,
        num_shards=num_shards,
        inference_accelerator=inference_accelerator,
        pipeline_args=list(ctx.args),
    )
    reasons = ", ".join(f"{r} {n}" for r, n in m["failures_by_reason"].items()) or "none"
    skipped = ", ".join(f"{r} {n}" for r, n in m["skipped_by_reason"].items()) or "none"
    click.echo(f"wrote {output}: {m['clips_written']} clips embedded of {m['clips_seen']}; failed: {reasons}; "
               f"skipped by policy: {skipped}")
    click.echo(f"clips: {m['reconciliation']}")
