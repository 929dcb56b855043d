"""Train the embedder on prep output: P x K batches, triplet semi-hard loss, best-by-dev-EER export.

    speechid train --data data/cv-en --model-dir models/cv-en --epochs 30
    python -c "import speechid.model.trainer as t; t.train('data/cv-en', 'models/cv-en', epochs=30)"

One epoch is ``steps_per_epoch`` batches of P speakers x K random crops of the train split (model/data.py),
then the dev EER over every pair of (up to ``max_dev_clips``) dev clips, embedded with the inference
windowing. Every epoch writes a checkpoint (weights, optimizer state, epoch, best EER) under
``<model_dir>/checkpoints`` and, when the dev EER improves, the weights under ``checkpoints/best``;
``resume=True`` continues a killed run from its last checkpoint with the optimizer state it had. The end
of the run exports the best weights as the serving model (model/export.py). TensorBoard logs go to
``<model_dir>/logs``.

Devices: several GPUs -> MirroredStrategy (the P x K batch is split across replicas by whole speaker
groups, so P should be a multiple of the replica count); any GPU -> mixed float16 with loss scaling;
otherwise plain CPU float32.
"""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from speechid import outputs, schema
from speechid.config import THRESHOLD
from speechid.errors import ConfigError
from speechid.model.augment import preset as augment_preset
from speechid.model.data import load_clips, pk_batches, record_files
from speechid.model.evaluation import all_pairs_eer
from speechid.model.export import export_model
from speechid.model.features import FeatureConfig
from speechid.model.losses import aam_softmax_loss, triplet_semihard_loss
from speechid.model.network import NetworkConfig, build_embedder, trainable_parameters
from speechid.model.windows import embed_clips
from speechid.progress import Meter, duration_text

LOSSES = ("triplet", "aam", "triplet+aam")
CHECKPOINT_DIR = "checkpoints"
CHANCE_EER = 0.4  # a best dev EER at or above this is reported as a model near chance level (50%)
BEST_DIR = "best"
LOG_DIR = "logs"


def _scalar(name: str, value: float, step: int) -> None:
    """A TensorBoard scalar, written with TF's own summary op: the ``tensorboard`` package (which
    ``tf.summary.scalar`` needs) is not part of the pinned stack, and the event files are the same."""
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step, metadata=meta.SerializeToString())


def _strategy() -> tuple[tf.distribute.Strategy, bool]:
    """(strategy, mixed precision?) for the visible devices."""
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy(), True
    return tf.distribute.get_strategy(), bool(gpus)


def _feature_config(data_dir: str, n_mels: int, given: FeatureConfig | None) -> FeatureConfig:
    """The features the data was prepared with: given, else the manifest's, else the default with n_mels."""
    if given is None:
        manifest = os.path.join(data_dir, schema.MANIFEST)
        found = None
        if os.path.exists(manifest):
            try:
                with open(manifest, encoding="utf-8") as f:
                    found = json.load(f).get("features")
            except (OSError, ValueError):
                found = None
        if isinstance(found, dict):
            fields = set(FeatureConfig.__dataclass_fields__)
            given = FeatureConfig(**{k: v for k, v in found.items() if k in fields})
        else:
            given = FeatureConfig(n_mels=n_mels)
    if given.n_mels != n_mels:
        raise ConfigError(
            f"{data_dir}: the statistics have {n_mels} mel bins but the feature config has {given.n_mels}"
        )
    return given


def verification_split_problem(speaker_ids: list[str]) -> str | None:
    """What keeps a split from giving same/different speaker trials, or None: it needs two speakers and
    one speaker with two clips."""
    counts = collections.Counter(speaker_ids)
    if len(counts) < 2:
        return f"has {len(counts)} speaker{'' if len(counts) == 1 else 's'} (no different-speaker pairs)"
    if max(counts.values()) < 2:
        return "has no speaker with two clips (no same-speaker pairs)"
    return None


def _manifest_split_problem(data_dir: str, split: str) -> str | None:
    """``verification_split_problem`` for ``split`` from prep's manifest (records, speakers), if it has one."""
    try:
        with open(os.path.join(data_dir, schema.MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
        records, speakers = int(manifest["records"][split]), int(manifest["speakers"][split])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if speakers < 2:
        return f"has {speakers} speaker{'' if speakers == 1 else 's'} (no different-speaker pairs)"
    if records <= speakers:
        return "has no speaker with two clips (no same-speaker pairs)"
    return None


def train(
    data_dir: str,
    model_dir: str,
    *,
    epochs: int = 30,
    steps_per_epoch: int = 200,
    speakers_per_batch: int = 32,
    clips_per_speaker: int = 4,
    crop_seconds: float = 3.0,
    hop_seconds: float | None = None,
    learning_rate: float = 1e-3,
    margin: float = 1.0,
    loss: str = "triplet",
    aam_scale: float = 30.0,
    aam_margin: float = 0.2,
    clipnorm: float | None = 3.0,
    resume: bool = False,
    seed: int = 0,
    network: NetworkConfig = NetworkConfig(),
    features: FeatureConfig | None = None,
    shuffle_buffer: int = 2048,
    max_dev_clips: int = 2000,
    keep_checkpoints: int = 3,
    augment: str = "none",
    speed_perturb: tuple[float, ...] = (),
    time_budget_s: float | None = None,
    stats=None,
    log: Callable[[str], None] = print,
    progress_interval: float = 30.0,
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
    still the one exported).

    Returns a dict: model_dir, model_id, start_epoch, epochs_run, final_epoch, best_epoch, best_dev_eer,
    last_dev_eer, last_loss, optimizer_steps, trainable_parameters, wall_s, clips_per_s, warnings (a
    best dev EER near chance). ``model_dir`` is marked as train's (``speechid.outputs.claim``): a folder
    holding other files, another command's output or ``data_dir`` is refused before anything is built.
    """
    start = time.time()
    if stats is None:
        from speechid.model.stats import load_stats

        stats = load_stats(data_dir)
    if epochs < 0 or steps_per_epoch < 1:
        raise ConfigError(f"epochs={epochs} must be >= 0 and steps_per_epoch={steps_per_epoch} >= 1")
    if crop_seconds <= 0:
        raise ConfigError(f"crop_seconds={crop_seconds} must be positive")
    hop_seconds = crop_seconds / 2.0 if hop_seconds is None else float(hop_seconds)
    if loss not in LOSSES:
        raise ConfigError(f"loss={loss!r}: choose one of {', '.join(LOSSES)}")
    try:
        augment_config = augment_preset(augment)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    features = _feature_config(data_dir, len(stats.mel_mean), features)
    rate = features.sample_rate
    crop = int(round(crop_seconds * rate))
    if crop < features.frame_length:
        raise ConfigError(f"crop_seconds={crop_seconds} is shorter than one analysis frame")
    train_files = record_files(data_dir, "train")
    dev_files = record_files(data_dir, "dev", required=False)
    speakers = list(stats.speakers)
    speeds = (1.0, *sorted(float(f) for f in speed_perturb if float(f) != 1.0))
    if min(speeds) <= 0.5 or max(speeds) >= 2.0:
        raise ConfigError(f"speed_perturb={speed_perturb}: speeds must lie between 0.5 and 2")
    # Before anything is built: a dev split that cannot give an EER used to fail after the first epoch.
    dev = load_clips(data_dir, "dev", max_clips=max_dev_clips, seed=seed) if dev_files else None
    if dev is not None:
        problem = verification_split_problem(dev[1])
        if problem:
            raise ConfigError(f"{data_dir}: the dev split {problem}; the dev EER needs both (re-split the corpus)")
    test_problem = _manifest_split_problem(data_dir, "test")
    if test_problem:
        log(f"warning: {data_dir}: the test split {test_problem}; `speechid evaluate` will refuse it")

    ckpt_dir = os.path.join(model_dir, CHECKPOINT_DIR)
    best_dir = os.path.join(ckpt_dir, BEST_DIR)
    has_run = tf.train.latest_checkpoint(ckpt_dir) is not None
    if has_run and not resume:
        raise ConfigError(
            f"{model_dir} already holds a training run ({CHECKPOINT_DIR}/); pass --resume (resume=True) to "
            "continue it or choose a new model directory"
        )
    outputs.claim(model_dir, "train", [data_dir], flag="--model-dir")

    strategy, mixed = _strategy()
    replicas = strategy.num_replicas_in_sync
    if speakers_per_batch % replicas:
        raise ConfigError(f"speakers_per_batch={speakers_per_batch} must be a multiple of the {replicas} GPUs")
    tf.keras.utils.set_random_seed(seed)  # initial weights
    policy = tf.keras.mixed_precision.global_policy()
    if mixed:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            model = build_embedder(stats.mel_mean, stats.mel_var, features, network)
            optimizer = tf.keras.optimizers.Adam(learning_rate)
            if mixed:
                optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
            epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            best_eer = tf.Variable(2.0, dtype=tf.float64, trainable=False, name="best_dev_eer")
            best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")
            centres = None
            if "aam" in loss:
                init = tf.keras.initializers.GlorotUniform(seed=seed)
                centres = tf.Variable(init([network.embedding_dim, len(speakers) * len(speeds)]), name="aam_centres")
    finally:
        tf.keras.mixed_precision.set_global_policy(policy)

    state = {"aam_centres": centres} if centres is not None else {}
    ckpt = tf.train.Checkpoint(
        model=model, optimizer=optimizer, epoch=epoch_var, best_dev_eer=best_eer, best_epoch=best_epoch, **state
    )
    manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=keep_checkpoints, checkpoint_name="epoch")
    best_ckpt = tf.train.Checkpoint(model=model)
    best_manager = tf.train.CheckpointManager(best_ckpt, best_dir, max_to_keep=1, checkpoint_name="best")
    if has_run:
        status = None
        try:
            status = ckpt.restore(manager.latest_checkpoint)
            status.assert_existing_objects_matched()
        except (AssertionError, ValueError) as e:
            if status is not None:
                status.expect_partial()  # we are giving up on it: no "unrestored value" warnings at exit
            raise ConfigError(
                f"{manager.latest_checkpoint} does not fit this network (sizes or pooling changed?): {e}"
            ) from None
        log(f"resuming {model_dir} after epoch {int(epoch_var.numpy())} ({manager.latest_checkpoint})")
    elif resume:
        log(f"nothing to resume in {model_dir}: starting a new run")
    start_epoch = int(epoch_var.numpy()) + 1

    variables = model.trainable_variables + ([centres] if centres is not None else [])

    def objective(y, emb):
        total = 0.0
        if loss in ("triplet", "triplet+aam"):
            total += triplet_semihard_loss(y, emb, margin=margin)
        if centres is not None:
            total += aam_softmax_loss(y, emb, centres, scale=aam_scale, margin=aam_margin)
        return total

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            emb = model(x, training=True)
            value = objective(y, emb)
            scaled = value / replicas
            if mixed:
                scaled = optimizer.get_scaled_loss(scaled)
        grads = tape.gradient(scaled, variables)
        if mixed:
            grads = optimizer.get_unscaled_gradients(grads)
        if clipnorm:
            # LSTMs occasionally blow up on a hard batch; clip here (per replica) rather than in the
            # optimizer, whose clipnorm does not combine with every distribution strategy.
            grads, _ = tf.clip_by_global_norm(grads, clipnorm)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return value

    @tf.function
    def train_step(x, y):
        per_replica = strategy.run(replica_step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    if dev is None:
        log(f"{data_dir}: no dev split; the last epoch is kept instead of the best dev EER")
    predict = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec([None, crop], tf.float32)])

    writer = tf.summary.create_file_writer(os.path.join(model_dir, LOG_DIR))
    batch = speakers_per_batch * clips_per_speaker
    speed_note = f" x {len(speeds)} speeds ({', '.join(f'{f:g}' for f in speeds)})" if len(speeds) > 1 else ""
    log(
        f"training {trainable_parameters(model):,} parameters on {len(speakers)} speakers{speed_note} "
        f"({len(train_files)} train shards), {speakers_per_batch}x{clips_per_speaker} clips of {crop_seconds:g} s "
        f"per step, {steps_per_epoch} steps/epoch, {replicas} replica(s){', mixed float16' if mixed else ''}"
    )
    last_loss, last_eer, train_time, epochs_run = float("nan"), float("nan"), 0.0, []
    steps = Meter(max(0, epochs - start_epoch + 1) * steps_per_epoch, progress_interval)
    run_start = time.time()
    for epoch in range(start_epoch, epochs + 1):
        t0 = time.time()
        data = pk_batches(
            train_files,
            speakers,
            speakers_per_batch=speakers_per_batch,
            clips_per_speaker=clips_per_speaker,
            crop_samples=crop,
            seed=(seed, epoch),
            shuffle_buffer=shuffle_buffer,
            augment=augment_config,
            sample_rate=rate,
            speeds=speeds,
        )
        dist = strategy.experimental_distribute_dataset(data)
        losses = []
        for step, (x, y) in zip(range(1, steps_per_epoch + 1), dist, strict=False):
            losses.append(float(train_step(x, y)))
            if steps.add():  # a line every progress_interval seconds: epochs may take many minutes
                log(f"epoch {epoch}/{epochs} step {step}/{steps_per_epoch}  loss {np.mean(losses):.4f}  "
                    f"{steps.text('steps of the run')}")
        train_time += time.time() - t0
        last_loss = float(np.mean(losses))
        if dev is not None:
            emb = embed_clips(lambda w: predict(w).numpy(), dev[0], rate, crop_seconds, hop_seconds)
            last_eer = all_pairs_eer(emb, dev[1])
        else:
            last_eer = float("nan")
        improved = dev is None or last_eer < float(best_eer.numpy())
        if improved:
            best_eer.assign(last_eer if dev is not None else 2.0)
            best_epoch.assign(epoch)
            best_manager.save(checkpoint_number=epoch)
        epoch_var.assign(epoch)
        manager.save(checkpoint_number=epoch)
        with writer.as_default():
            _scalar("loss", last_loss, epoch)
            if dev is not None:
                _scalar("dev_eer", last_eer, epoch)
            _scalar("clips_per_s", steps_per_epoch * batch / max(time.time() - t0, 1e-9), epoch)
        writer.flush()
        epochs_run.append(epoch)
        eer_text = (
            f"dev EER {100 * last_eer:.2f}% (best {100 * float(best_eer.numpy()):.2f}% @ {int(best_epoch.numpy())})"
            if dev is not None
            else "no dev split"
        )
        left = (epochs - epoch) * (time.time() - run_start) / len(epochs_run)
        if time_budget_s is not None:
            left = min(left, max(0.0, time_budget_s - (time.time() - start)))
        log(f"epoch {epoch}/{epochs}  loss {last_loss:.4f}  {eer_text}  {time.time() - t0:.1f} s"
            + (f"  (~{duration_text(left)} left)" if epoch < epochs else ""))
        if on_epoch_end is not None:
            on_epoch_end(epoch, {"loss": last_loss, "dev_eer": last_eer, "improved": improved})
        if time_budget_s is not None and time.time() - start >= time_budget_s:
            log(f"time budget of {time_budget_s:.0f} s reached after epoch {epoch}")
            break

    if best_manager.latest_checkpoint:
        best_ckpt.restore(best_manager.latest_checkpoint).assert_existing_objects_matched()
    training = {
        "epochs": int(epoch_var.numpy()),
        "steps_per_epoch": steps_per_epoch,
        "speakers_per_batch": speakers_per_batch,
        "clips_per_speaker": clips_per_speaker,
        "crop_seconds": crop_seconds,
        "learning_rate": learning_rate,
        "margin": margin,
        "loss": loss,
        **({"aam_scale": aam_scale, "aam_margin": aam_margin} if centres is not None else {}),
        "augment": {"preset": augment, **(augment_config.to_json() if augment_config else {})},
        **({"speed_perturb": list(speeds[1:])} if len(speeds) > 1 else {}),
        "seed": seed,
        "best_epoch": int(best_epoch.numpy()),
        "best_dev_eer": float(best_eer.numpy()) if dev is not None and int(best_epoch.numpy()) else None,
        "train_speakers": len(speakers),
        "optimizer_steps": int(optimizer.iterations.numpy()),
    }
    config = export_model(
        model.get_weights(),
        model_dir,
        mel_mean=stats.mel_mean,
        mel_var=stats.mel_var,
        features=features,
        network=network,
        window_s=crop_seconds,
        hop_s=hop_seconds,
        data_fingerprint=stats.fingerprint,
        threshold=THRESHOLD,
        training=training,
        dev=dev[:2] if dev is not None else None,  # operating points measured on dev speakers
        seed=seed,
    )
    wall = time.time() - start
    log(f"exported {model_dir} (model_id {config['model_id']}) in {wall:.1f} s total")
    warnings = []
    if training["best_dev_eer"] is not None and training["best_dev_eer"] >= CHANCE_EER:
        warnings.append(
            f"the best dev EER is {100 * training['best_dev_eer']:.1f}%, near chance (50%): this model does not "
            "tell these speakers apart yet (train longer, on more speakers, or check the data)"
        )
    dev_warning = config.get("operating_points", {}).get("measured_on", {}).get("warning")
    if dev_warning:  # recorded in config.json by calibration.measure; said here too
        warnings.append(f"the operating points (the default threshold) were {dev_warning}: run `speechid "
                        "calibrate` on more labelled speakers")
    for w in warnings:
        log(f"warning: {w}")
    steps_done = len(epochs_run) * steps_per_epoch
    return {
        "model_dir": model_dir,
        "model_id": config["model_id"],
        "start_epoch": start_epoch,
        "epochs_run": epochs_run,
        "final_epoch": int(epoch_var.numpy()),
        "best_epoch": training["best_epoch"],
        "best_dev_eer": training["best_dev_eer"],
        "last_dev_eer": last_eer,
        "last_loss": last_loss,
        "optimizer_steps": training["optimizer_steps"],
        "trainable_parameters": config["trainable_parameters"],
        "wall_s": wall,
        "clips_per_s": steps_done * batch / train_time if train_time else float("nan"),
        "warnings": warnings,
    }
