"""`speechid train`, `evaluate`, `compare` and `calibrate`: thin shells over speechid.model and the Encoder.

Options left unset fall through to the library's defaults (``speechid.model.trainer.train`` and
``speechid.model.evaluation.evaluate`` own them; the defaults the help shows repeat them and a test keeps
the two in step). ``compare`` only formats what ``Encoder.compare`` finds.
"""

from __future__ import annotations

import json
import os
import sys

import click

from speechid.app.commands import THRESHOLD, format_table
from speechid.model.calibration import MIN_SAME_PAIRS, MIN_SPEAKERS
from speechid.model.calibration import calibrate as run_calibrate
from speechid.model.encoder import Encoder
from speechid.model.evaluation import evaluate as run_evaluate
from speechid.operating_points import pct


def _given(**kwargs) -> dict:
    """The options the user gave: the library applies its own defaults to the rest (the ones shown in the
    help repeat them; a test keeps the two in step)."""
    ctx = click.get_current_context()
    return {k: v for k, v in kwargs.items()
            if v is not None and ctx.get_parameter_source(k) is not click.core.ParameterSource.DEFAULT}


def _network(**given):
    from speechid.model.network import NetworkConfig

    return NetworkConfig(**given)


def _speeds(value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: give speeds as numbers, e.g. 0.9,1.1",
                                 param_hint="--speed-perturb") from None


def _data_dir(path: str) -> str:
    from speechid import schema

    if not any(f.startswith("train-") and f.endswith(schema.RECORD_SUFFIX) for f in os.listdir(path)):
        raise click.BadParameter(f"{path}: no train-*{schema.RECORD_SUFFIX} records (run `speechid prep`)")
    return path


@click.command()
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="A `speechid prep` output folder (records + transform_fn/).",
)
@click.option(
    "--model-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Where checkpoints, logs, saved_model/ and config.json go.",
)
@click.option("--epochs", type=click.IntRange(min=0), default=30, show_default=True)
@click.option("--steps-per-epoch", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--batch-speakers", "speakers_per_batch", type=click.IntRange(min=2), default=32, show_default=True,
              help="P: speakers drawn into each training batch of P x K crops.")
@click.option("--batch-clips", "clips_per_speaker", type=click.IntRange(min=2), default=4, show_default=True,
              help="K: clips of each drawn speaker in one batch, one random crop each (triplets are mined among "
                   "them).")
@click.option("--crop-seconds", type=click.FloatRange(min=0.05), help="Training crop = inference window",
              default=3.0, show_default=True)
@click.option("--learning-rate", type=click.FloatRange(min=0.0, min_open=True), default=0.001, show_default=True,
              help="Adam")
@click.option("--margin", type=click.FloatRange(min=0.0, min_open=True), default=1.0, show_default=True,
              help="Triplet margin")
@click.option("--loss", type=click.Choice(["triplet", "aam", "triplet+aam"]),
              default="triplet", show_default=True,
              help="Triplet semi-hard (the seed's), additive angular margin softmax, or both")
@click.option("--aam-scale", type=click.FloatRange(min=0.0, min_open=True), default=30.0, show_default=True,
              help="AAM scale s")
@click.option("--aam-margin", type=click.FloatRange(min=0.0), default=0.2, show_default=True,
              help="AAM angular margin m, radians")
@click.option("--augment", type=click.Choice(["none", "standard"]),
              default="none", show_default=True,
              help="On-the-fly noise/babble/reverb/band-limit/gain augmentation preset")
@click.option("--pooling", type=click.Choice(["mean", "stats", "last"]), default="mean", show_default=True,
              help="Over frames of the last LSTM: mean, mean and standard deviation (stats), or its final state")
@click.option("--speed-perturb", default=None, show_default="none",
              help="Comma-separated speeds, e.g. 0.9,1.1: each training speaker played at each speed is one more "
                   "speaker.")
@click.option("--utterance-norm", is_flag=True, default=None,
              help="Subtract each clip's own mean log-mel (channel normalisation) before the LSTMs.")
@click.option("--time-budget-minutes", type=click.FloatRange(min=0.0, min_open=True),
              help="Stop after the epoch that crosses this wall time", show_default="no limit")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run checkpointed in --model-dir.")
def train(
    data_dir,
    model_dir,
    epochs,
    steps_per_epoch,
    speakers_per_batch,
    clips_per_speaker,
    crop_seconds,
    learning_rate,
    margin,
    loss,
    aam_scale,
    aam_margin,
    augment,
    pooling,
    speed_perturb,
    utterance_norm,
    time_budget_minutes,
    seed,
    resume,
):
    """Train the speaker embedder on prepared data and export the best (dev EER) model."""
    data_dir = _data_dir(data_dir)  # before TensorFlow loads: a wrong folder fails at once
    from speechid.model.trainer import train as run_train

    given = _given(
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        speakers_per_batch=speakers_per_batch,
        clips_per_speaker=clips_per_speaker,
        crop_seconds=crop_seconds,
        learning_rate=learning_rate,
        margin=margin,
        loss=loss,
        aam_scale=aam_scale,
        aam_margin=aam_margin,
        augment=augment,
        pooling=pooling,
        utterance_norm=utterance_norm,
        speed_perturb=_speeds(speed_perturb),
        time_budget_s=None if time_budget_minutes is None else 60.0 * time_budget_minutes,
        seed=seed,
    )
    chosen = {k: given.pop(k) for k in ("pooling", "utterance_norm") if k in given}
    if chosen:  # the network choices a user makes here; the sizes stay the seed's
        given["network"] = _network(**chosen)
    result = run_train(data_dir, model_dir, resume=resume, log=click.echo, **given)
    best = result["best_dev_eer"]
    click.echo(
        f"model {result['model_id']} in {model_dir}: "
        + (f"best dev EER {pct(best, '.2f')} at epoch {result['best_epoch']}, " if best is not None else "")
        + f"{result['wall_s']:.0f} s"
    )


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="test", show_default=True, help="A split of speakers not trained on.")
@click.option(
    "--threshold",
    type=THRESHOLD,
    help="Euclidean 'same person' threshold", show_default="the model's config.json",
)
@click.option(
    "--target-far",
    type=click.FloatRange(min=0.0, max=1.0, min_open=True, max_open=True),
    help="Report the FRR at this false acceptance rate", default=0.01, show_default=True,
)
@click.option("--trials", type=click.IntRange(min=2), default=20_000, show_default=True,
              help="Balanced same/different trials")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--output",
    "output_dir",
    type=click.Path(file_okay=False),
    help="Folder for metrics.json and the PNGs", show_default="the model folder",
)
def evaluate(model_dir, data_dir, split, threshold, target_far, trials, seed, output_dir):
    """EER, minDCF, FRR at a target FAR and pictures, on seeded same/different speaker trials."""
    run_evaluate(
        model_dir,
        data_dir,
        split=split,
        log=click.echo,
        **_given(threshold=threshold, target_far=target_far, trials=trials, seed=seed, output_dir=output_dir),
    )


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option(
    "--threshold",
    type=THRESHOLD,
    help="Euclidean 'same person' threshold", show_default="the model's config.json",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document (pairs and failed files) instead of a table.")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def compare(model_dir, threshold, as_json, files):
    """Every pair of FILES: Euclidean distance and verdict (same / different), one row per pair.

    A file that cannot be used (corrupt, no speech, too long) is reported on its own line on stderr and
    left out of the pairs; the other pairs are still compared, and the exit code is then 2."""
    if len(files) < 2:
        raise click.BadParameter("give at least two audio files", param_hint="FILES")
    encoder = Encoder.load(model_dir)
    failed: dict[str, str] = {}  # a file that cannot be used is reported on its own line; the others are compared
    result = encoder.compare(files, threshold, failed=failed)
    pairs = [p.to_dict() for p in result.pairs]
    if as_json:
        click.echo(json.dumps({
            "model": model_dir, "model_id": encoder.config.get("model_id"), "distance": "euclidean",
            "threshold": result.threshold, "threshold_meaning": result.meaning,
            "pairs": pairs,
            "failed": [{"file": f, "error": why} for f, why in failed.items()]}, indent=2))
    elif pairs:
        click.echo(f"Euclidean distance; same person below {result.threshold:.3f} ({result.meaning})")
        rows = [(p["a"], p["b"], f"{p['euclidean_distance']:.4f}", p["verdict"]) for p in pairs]
        click.echo("\n".join(format_table(("a", "b", "distance", "verdict"), rows, right=(2,))))
    for why in failed.values():
        click.echo(f"speechid compare: error: {why}", err=True)
    if failed:
        sys.exit(2)  # the CLI's exit code for bad input (click's ctx.exit returns it unseen outside standalone mode)


@click.command(help=(
    "Measure the model's operating points on labelled speakers and rewrite its config.json.\n\n"
    f"Refused unless the split holds at least {MIN_SPEAKERS} speakers and {MIN_SAME_PAIRS} same-speaker clip pairs "
    f"(so one misjudged pair moves the FRR by at most {100 / MIN_SAME_PAIRS:g} points): fewer measure nothing. "
    "--force writes them anyway, with the warning recorded in config.json."))
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A `speechid prep` output with speaker labels (your own domain).")
@click.option("--split", default="dev", show_default=True, help="A split of speakers the model never trained on.")
@click.option("--max-clips", type=click.IntRange(min=4), default=2000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True,
              help="Write operating points measured on too few speakers or pairs anyway, with a warning recorded "
                   "in config.json.")
def calibrate(model_dir, data_dir, split, max_clips, seed, force):
    run_calibrate(model_dir, data_dir, split=split, max_clips=max_clips, seed=seed, force=force, log=click.echo)
