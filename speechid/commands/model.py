"""`speechid train`, `speechid evaluate`, `speechid compare`: thin shells over speechid.model and Encoder.

Options left unset fall through to the library's defaults (``speechid.model.trainer.train`` and
``speechid.model.evaluation.evaluate`` own them; the bracketed defaults in the help repeat them and a test
keeps the two in step).
"""

from __future__ import annotations

import itertools
import os

import click


def _given(**kwargs) -> dict:
    return {k: v for k, v in kwargs.items() if v is not None}


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
@click.option("--epochs", type=click.IntRange(min=0), help="[30]")
@click.option("--steps-per-epoch", type=click.IntRange(min=1), help="[200]")
@click.option("--speakers-per-batch", type=click.IntRange(min=2), help="P speakers per batch [32]")
@click.option("--clips-per-speaker", type=click.IntRange(min=2), help="K clips per speaker [4]")
@click.option("--crop-seconds", type=click.FloatRange(min=0.05), help="Training crop = inference window [3.0]")
@click.option("--learning-rate", type=click.FloatRange(min=0.0, min_open=True), help="Adam [0.001]")
@click.option("--margin", type=click.FloatRange(min=0.0, min_open=True), help="Triplet margin [1.0]")
@click.option("--loss", type=click.Choice(["triplet", "aam", "triplet+aam"]),
              help="Triplet semi-hard (the seed's), additive angular margin softmax, or both [triplet]")
@click.option("--aam-scale", type=click.FloatRange(min=0.0, min_open=True), help="AAM scale s [30]")
@click.option("--aam-margin", type=click.FloatRange(min=0.0), help="AAM angular margin m, radians [0.2]")
@click.option("--augment", type=click.Choice(["none", "standard"]),
              help="On-the-fly noise/babble/reverb/band-limit/gain augmentation preset [none]")
@click.option("--time-budget-minutes", type=click.FloatRange(min=0.0, min_open=True),
              help="Stop after the epoch that crosses this wall time [no limit]")
@click.option("--seed", type=int, help="[0]")
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
    time_budget_minutes,
    seed,
    resume,
):
    """Train the speaker embedder on prepared data and export the best (dev EER) model."""
    data_dir = _data_dir(data_dir)  # before TensorFlow loads: a wrong folder fails at once
    from speechid.model.trainer import train as run_train

    result = run_train(
        data_dir,
        model_dir,
        resume=resume,
        log=click.echo,
        **_given(
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
            time_budget_s=None if time_budget_minutes is None else 60.0 * time_budget_minutes,
            seed=seed,
        ),
    )
    best = result["best_dev_eer"]
    click.echo(
        f"model {result['model_id']} in {model_dir}: "
        + (f"best dev EER {100 * best:.2f}% at epoch {result['best_epoch']}, " if best is not None else "")
        + f"{result['wall_s']:.0f} s"
    )


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="test", show_default=True, help="A split of speakers not trained on.")
@click.option(
    "--threshold",
    type=click.FloatRange(min=0.0, min_open=True),
    help="Euclidean 'same person' threshold [the model's config.json]",
)
@click.option(
    "--target-far",
    type=click.FloatRange(min=0.0, max=1.0, min_open=True, max_open=True),
    help="Report the FRR at this false acceptance rate [0.01]",
)
@click.option("--trials", type=click.IntRange(min=2), help="Balanced same/different trials [20000]")
@click.option("--seed", type=int, help="[0]")
@click.option(
    "--output",
    "output_dir",
    type=click.Path(file_okay=False),
    help="Folder for metrics.json and the PNGs [the model folder]",
)
def evaluate(model_dir, data_dir, split, threshold, target_far, trials, seed, output_dir):
    """EER, minDCF, FRR at a target FAR and pictures, on seeded same/different speaker trials."""
    from speechid.model.evaluation import evaluate as run_evaluate

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
    type=click.FloatRange(min=0.0, min_open=True),
    help="Euclidean 'same person' threshold [the model's config.json]",
)
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def compare(model_dir, threshold, files):
    """Every pair of FILES: "Same person" or "Different people", with the Euclidean distance."""
    if len(files) < 2:
        raise click.BadParameter("give at least two audio files", param_hint="FILES")
    from speechid.encoder import Encoder

    encoder = Encoder.load(model_dir)
    emb = encoder.embed(list(files))
    for (i, a), (j, b) in itertools.combinations(enumerate(files), 2):
        d = float(((emb[i] - emb[j]) ** 2).sum() ** 0.5)
        t = encoder.threshold if threshold is None else threshold
        verdict = "Same person" if d < t else "Different people"
        click.echo(f"{a}  {b}  {verdict}  (Euclidean distance {d:.4f}; {encoder.verdict_for(d, threshold)})")


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A `speechid prep` output with speaker labels (your own domain).")
@click.option("--split", default="dev", show_default=True, help="A split of speakers the model never trained on.")
@click.option("--max-clips", type=click.IntRange(min=4), default=2000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def calibrate(model_dir, data_dir, split, max_clips, seed):
    """Measure the model's operating points on labelled speakers and rewrite its config.json."""
    from speechid.model.calibration import calibrate as run_calibrate

    run_calibrate(model_dir, data_dir, split=split, max_clips=max_clips, seed=seed, log=click.echo)
