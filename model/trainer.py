"""Train the embedder on prep output: P x K batches, triplet semi-hard loss, best-by-dev-EER export.

    speechid train --data data/cv-en --model-dir models/cv-en --epochs 30
    python -c "import speechid.model.trainer as t; t.train('data/cv-en', 'models/cv-en', epochs=30)"

One epoch is ``steps_per_epoch`` batches of P speakers x K random crops of the train split (model/data.py),
then the dev EER over every pair of (up to ``max_dev_clips``) dev clips, embedded with the inference
windowing. Every epoch writes a checkpoint (weights, optimizer state, epoch, best EER) under
``<model_dir>/checkpoints`` and, when the dev EER improves, the weights under ``checkpoints/best``;
``resume=True`` continues a killed run from its last checkpoint with the optimizer state it had. The end
of the run measures the operating points of the best weights on the dev speakers (model/calibration.py)
and exports both as the serving model (model/export.py). TensorBoard logs go to ``<model_dir>/logs``.

``train`` reads like what it does: resolve and check its inputs (model/train_inputs.py), build the model,
optimizer and checkpoints (model/train_state.py), run the epochs, keep the best, measure and export.

Devices: several GPUs -> MirroredStrategy (the P x K batch is split across replicas by whole speaker
groups, so P should be a multiple of the replica count); any GPU -> mixed float16 with loss scaling;
otherwise plain CPU float32.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from speechid.model.calibration import measure
from speechid.model.data import pk_batches
from speechid.model.evaluation import all_pairs_eer
from speechid.model.export import export_model, serving_model
from speechid.model.features import FeatureConfig
from speechid.model.network import NetworkConfig, trainable_parameters
from speechid.model.train_inputs import TrainInputs, resolve_inputs
from speechid.model.train_state import (
    TrainState,
    build_state,
    claim_model_dir,
    device_strategy,
    restore,
    train_step_fn,
)
from speechid.model.windows import embed_clips
from speechid.operating_points import OperatingPoints, pct
from speechid.progress import Meter, duration_text

CHANCE_EER = 0.4  # a best dev EER at or above this is reported as a model near chance level (50%)
LOG_DIR = "logs"
_strategy = device_strategy  # benchmarks/bench_train.py calls trainer._strategy()


def _scalar(name: str, value: float, step: int) -> None:
    """A TensorBoard scalar, written with TF's own summary op: the ``tensorboard`` package (which
    ``tf.summary.scalar`` needs) is not part of the pinned stack, and the event files are the same."""
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step, metadata=meta.SerializeToString())


@dataclass
class _Run:
    """A run's epochs: their count and size, seeds, stopping, who hears about them, and what they gave."""

    epochs: int
    steps_per_epoch: int
    speakers_per_batch: int
    clips_per_speaker: int
    crop_seconds: float
    shuffle_buffer: int
    seed: int
    start: float  # time.time() at the start of ``train``
    time_budget_s: float | None
    log: Callable[[str], None]
    on_epoch_end: Callable[[int, dict], None] | None
    steps: Meter
    epochs_run: list[int] = field(default_factory=list)
    last_loss: float = float("nan")
    last_eer: float = float("nan")
    train_time: float = 0.0

    @property
    def batch(self) -> int:
        return self.speakers_per_batch * self.clips_per_speaker


def _epoch_loss(state: TrainState, inputs: TrainInputs, train_step: Callable, run: _Run, epoch: int) -> float:
    """Train one epoch of ``steps_per_epoch`` P x K batches (seeded by (seed, epoch)); the mean loss."""
    data = pk_batches(
        inputs.train_files,
        inputs.speakers,
        speakers_per_batch=run.speakers_per_batch,
        clips_per_speaker=run.clips_per_speaker,
        crop_samples=inputs.crop,
        seed=(run.seed, epoch),
        shuffle_buffer=run.shuffle_buffer,
        augment=inputs.augment,
        sample_rate=inputs.features.sample_rate,
        speeds=inputs.speeds,
    )
    losses = []
    for step, (x, y) in zip(range(1, run.steps_per_epoch + 1), state.strategy.experimental_distribute_dataset(data),
                            strict=False):
        losses.append(float(train_step(x, y)))
        if run.steps.add():  # a line every progress_interval seconds: epochs may take many minutes
            run.log(f"epoch {epoch}/{run.epochs} step {step}/{run.steps_per_epoch}  loss {np.mean(losses):.4f}  "
                    f"{run.steps.text('steps of the run')}")
    return float(np.mean(losses))


def _keep(state: TrainState, inputs: TrainInputs, epoch: int, writer, run: _Run, t0: float) -> bool:
    """Checkpoint the epoch (and the weights under ``best/`` when the dev EER improved), write its
    TensorBoard scalars; whether it improved (always, without a dev split: the last epoch is kept)."""
    dev = inputs.dev is not None
    improved = not dev or run.last_eer < float(state.best_eer.numpy())
    if improved:
        state.best_eer.assign(run.last_eer if dev else 2.0)
        state.best_epoch.assign(epoch)
        state.best_manager.save(checkpoint_number=epoch)
    state.epoch.assign(epoch)
    state.manager.save(checkpoint_number=epoch)
    with writer.as_default():
        _scalar("loss", run.last_loss, epoch)
        if dev:
            _scalar("dev_eer", run.last_eer, epoch)
        _scalar("clips_per_s", run.steps_per_epoch * run.batch / max(time.time() - t0, 1e-9), epoch)
    writer.flush()
    return improved


def _log_epoch(state: TrainState, inputs: TrainInputs, epoch: int, run: _Run, run_start: float, t0: float) -> None:
    eer_text = (
        f"dev EER {pct(run.last_eer, '.2f')} (best {pct(float(state.best_eer.numpy()), '.2f')} @ "
        f"{int(state.best_epoch.numpy())})"
        if inputs.dev is not None
        else "no dev split"
    )
    left = (run.epochs - epoch) * (time.time() - run_start) / len(run.epochs_run)
    if run.time_budget_s is not None:
        left = min(left, max(0.0, run.time_budget_s - (time.time() - run.start)))
    run.log(f"epoch {epoch}/{run.epochs}  loss {run.last_loss:.4f}  {eer_text}  {time.time() - t0:.1f} s"
            + (f"  (~{duration_text(left)} left)" if epoch < run.epochs else ""))


def _run_epochs(state: TrainState, inputs: TrainInputs, train_step: Callable, run: _Run, start_epoch: int,
                writer) -> None:
    """Epochs ``start_epoch`` to ``run.epochs`` (fewer when the time budget runs out), recorded in ``run``."""
    rate, hop = inputs.features.sample_rate, inputs.hop_seconds
    predict = tf.function(lambda x: state.model(x, training=False),
                          input_signature=[tf.TensorSpec([None, inputs.crop], tf.float32)])
    run_start = time.time()
    for epoch in range(start_epoch, run.epochs + 1):
        t0 = time.time()
        run.last_loss = _epoch_loss(state, inputs, train_step, run, epoch)
        run.train_time += time.time() - t0
        if inputs.dev is not None:
            emb = embed_clips(lambda w: predict(w).numpy(), inputs.dev[0], rate, run.crop_seconds, hop)
            run.last_eer = all_pairs_eer(emb, inputs.dev[1])
        else:
            run.last_eer = float("nan")
        improved = _keep(state, inputs, epoch, writer, run, t0)
        run.epochs_run.append(epoch)
        _log_epoch(state, inputs, epoch, run, run_start, t0)
        if run.on_epoch_end is not None:
            run.on_epoch_end(epoch, {"loss": run.last_loss, "dev_eer": run.last_eer, "improved": improved})
        if run.time_budget_s is not None and time.time() - run.start >= run.time_budget_s:
            run.log(f"time budget of {run.time_budget_s:.0f} s reached after epoch {epoch}")
            break


def _dev_operating_points(weights: list[np.ndarray], inputs: TrainInputs, network: NetworkConfig, window_s: float,
                          seed: int) -> OperatingPoints | None:
    """The operating points of the serving model (float32, as exported) measured on the dev speakers, which
    it never trained on; None without a dev split."""
    if inputs.dev is None:
        return None
    stats = inputs.stats
    serving = serving_model(weights, stats.mel_mean, stats.mel_var, inputs.features, network)
    emb = embed_clips(lambda x: serving(x, training=False).numpy(), inputs.dev[0], inputs.features.sample_rate,
                      window_s, inputs.hop_seconds)
    return measure(emb, inputs.dev[1], seed=seed, measured_on={"split": "dev", "data_fingerprint": stats.fingerprint})


def _warnings(training: dict, config: dict) -> list[str]:
    """What a person should hear about the exported model: a best dev EER near chance, operating points
    measured on too few dev speakers (recorded in config.json by calibration.measure; said here too)."""
    warnings = []
    if training["best_dev_eer"] is not None and training["best_dev_eer"] >= CHANCE_EER:
        warnings.append(
            f"the best dev EER is {pct(training['best_dev_eer'], '.1f')}, near chance (50%): this model does not "
            "tell these speakers apart yet (train longer, on more speakers, or check the data)"
        )
    dev_warning = config.get("operating_points", {}).get("measured_on", {}).get("warning")
    if dev_warning:
        warnings.append(f"the operating points (the default threshold) were {dev_warning}: run `speechid "
                        "calibrate` on more labelled speakers")
    return warnings


def _run_text(state: TrainState, inputs: TrainInputs, run: _Run) -> str:
    """The line that opens a run: what trains on what, how."""
    speeds = inputs.speeds
    speed_note = f" x {len(speeds)} speeds ({', '.join(f'{f:g}' for f in speeds)})" if len(speeds) > 1 else ""
    return (
        f"training {trainable_parameters(state.model):,} parameters on {len(inputs.speakers)} speakers{speed_note} "
        f"({len(inputs.train_files)} train shards), {run.speakers_per_batch}x{run.clips_per_speaker} clips of "
        f"{run.crop_seconds:g} s per step, {run.steps_per_epoch} steps/epoch, {state.replicas} replica(s)"
        f"{', mixed float16' if state.mixed else ''}"
    )


def _training_record(state: TrainState, inputs: TrainInputs, recipe: dict, augment: str) -> dict:
    """config.json's ``training``: the recipe, the augmentation and speeds, and how the run went."""
    best_epoch = int(state.best_epoch.numpy())
    return {
        "epochs": int(state.epoch.numpy()),
        **recipe,
        "augment": {"preset": augment, **(inputs.augment.to_json() if inputs.augment else {})},
        **({"speed_perturb": list(inputs.speeds[1:])} if len(inputs.speeds) > 1 else {}),
        "best_epoch": best_epoch,
        "best_dev_eer": float(state.best_eer.numpy()) if inputs.dev is not None and best_epoch else None,
        "train_speakers": len(inputs.speakers),
        "optimizer_steps": int(state.optimizer.iterations.numpy()),
    }


def _export_best(state: TrainState, inputs: TrainInputs, model_dir: str, network: NetworkConfig, training: dict,
                 run: _Run) -> dict:
    """Restore the best epoch's weights, measure their operating points on the dev speakers, export both."""
    if state.best_manager.latest_checkpoint:
        state.best_model.restore(state.best_manager.latest_checkpoint).assert_existing_objects_matched()
    weights = state.model.get_weights()
    stats = inputs.stats
    return export_model(
        weights, model_dir, mel_mean=stats.mel_mean, mel_var=stats.mel_var, features=inputs.features,
        network=network, window_s=run.crop_seconds, hop_s=inputs.hop_seconds, data_fingerprint=stats.fingerprint,
        operating_points=_dev_operating_points(weights, inputs, network, run.crop_seconds, run.seed),
        training=training,
    )


def train(
    data_dir: str, model_dir: str, *, epochs: int = 30, steps_per_epoch: int = 200, speakers_per_batch: int = 32,
    clips_per_speaker: int = 4, crop_seconds: float = 3.0, hop_seconds: float | None = None,
    learning_rate: float = 1e-3, margin: float = 1.0, loss: str = "triplet", aam_scale: float = 30.0,
    aam_margin: float = 0.2, clipnorm: float | None = 3.0, resume: bool = False, seed: int = 0,
    network: NetworkConfig = NetworkConfig(), features: FeatureConfig | None = None, shuffle_buffer: int = 2048,
    max_dev_clips: int = 2000, keep_checkpoints: int = 3, augment: str = "none",
    speed_perturb: tuple[float, ...] = (), time_budget_s: float | None = None, stats=None,
    log: Callable[[str], None] = print, progress_interval: float = 30.0,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train (or continue training) a model on ``data_dir`` and export it to ``model_dir``.

    ``stats`` (a ``TransformStats``) defaults to ``speechid.model.stats.load_stats(data_dir)``; label
    i is ``stats.speakers[i]``. ``crop_seconds`` is both the training crop and the inference window
    (``window_s`` in config.json); ``hop_seconds`` (default half of it) is the inference hop.
    ``on_epoch_end(epoch, summary)`` is called after each epoch's checkpoint is written (a seam for
    tests and progress bars). ``epochs=0`` exports the initial weights (an untrained baseline).
    ``loss``: "triplet" (semi-hard, the seed's), "aam" (additive angular margin softmax over the training
    speakers, ``aam_scale``/``aam_margin``) or "triplet+aam" (their sum). The AAM speaker centres are
    training state only (checkpointed, never exported).
    ``augment`` names a preset of ``model.augment`` ("none", "standard"). ``speed_perturb`` (e.g. (0.9, 1.1))
    adds a copy of every training speaker played at each of these speeds, as another speaker.
    ``time_budget_s`` stops after the epoch during which the run's wall time crossed it (the best epoch is
    still the one exported). The end of the run measures the operating points on the dev speakers
    (``speechid.model.calibration.measure``) and exports the best weights with them.

    Returns a dict: model_dir, model_id, start_epoch, epochs_run, final_epoch, best_epoch, best_dev_eer,
    last_dev_eer, last_loss, optimizer_steps, trainable_parameters, wall_s, clips_per_s, warnings (a
    best dev EER near chance). ``model_dir`` is marked as train's (``speechid.outputs.claim``): a folder
    holding other files, another command's output or ``data_dir`` is refused before anything is built.
    """
    start = time.time()
    inputs = resolve_inputs(data_dir, stats, features, epochs=epochs, steps_per_epoch=steps_per_epoch,
                            crop_seconds=crop_seconds, hop_seconds=hop_seconds, loss=loss, augment=augment,
                            speed_perturb=speed_perturb, max_dev_clips=max_dev_clips, seed=seed, log=log)
    has_run = claim_model_dir(model_dir, data_dir, resume)
    state = build_state(model_dir, inputs, network, loss=loss, learning_rate=learning_rate,
                        speakers_per_batch=speakers_per_batch, keep_checkpoints=keep_checkpoints, seed=seed)
    start_epoch = restore(state, model_dir, has_run, resume, log)
    train_step = train_step_fn(state, loss=loss, margin=margin, aam_scale=aam_scale, aam_margin=aam_margin,
                               clipnorm=clipnorm)
    if inputs.dev is None:
        log(f"{data_dir}: no dev split; the last epoch is kept instead of the best dev EER")
    writer = tf.summary.create_file_writer(os.path.join(model_dir, LOG_DIR))
    run = _Run(epochs, steps_per_epoch, speakers_per_batch, clips_per_speaker, crop_seconds, shuffle_buffer,
                    seed, start, time_budget_s, log, on_epoch_end,
                    Meter(max(0, epochs - start_epoch + 1) * steps_per_epoch, progress_interval))
    log(_run_text(state, inputs, run))
    _run_epochs(state, inputs, train_step, run, start_epoch, writer)

    recipe = {"steps_per_epoch": steps_per_epoch, "speakers_per_batch": speakers_per_batch,
              "clips_per_speaker": clips_per_speaker, "crop_seconds": crop_seconds, "learning_rate": learning_rate,
              "margin": margin, "loss": loss, "seed": seed,
              **({"aam_scale": aam_scale, "aam_margin": aam_margin} if state.centres is not None else {})}
    config = _export_best(state, inputs, model_dir, network, _training_record(state, inputs, recipe, augment), run)
    wall = time.time() - start
    log(f"exported {model_dir} (model_id {config['model_id']}) in {wall:.1f} s total")
    warnings = _warnings(config["training"], config)
    for w in warnings:
        log(f"warning: {w}")
    training = config["training"]
    return {
        "model_dir": model_dir, "model_id": config["model_id"], "start_epoch": start_epoch,
        "epochs_run": run.epochs_run, "final_epoch": int(state.epoch.numpy()), "best_epoch": training["best_epoch"],
        "best_dev_eer": training["best_dev_eer"], "last_dev_eer": run.last_eer, "last_loss": run.last_loss,
        "optimizer_steps": training["optimizer_steps"], "trainable_parameters": config["trainable_parameters"],
        "wall_s": wall,
        "clips_per_s": len(run.epochs_run) * steps_per_epoch * run.batch / run.train_time if run.train_time
        else float("nan"),
        "warnings": warnings,
    }
