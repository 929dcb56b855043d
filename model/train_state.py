"""A training run's TensorFlow state: the device strategy, the model, its optimizer and bookkeeping variables,
their checkpoints under ``<model_dir>/checkpoints`` (every epoch; the best one under ``checkpoints/best``), and
the distributed optimizer step (``speechid.model.trainer.train`` drives them)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from speechid import outputs
from speechid.errors import ConfigError
from speechid.model.losses import aam_softmax_loss, triplet_semihard_loss
from speechid.model.network import NetworkConfig, build_embedder
from speechid.model.train_inputs import TrainInputs

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"


def device_strategy() -> tuple[tf.distribute.Strategy, bool]:
    """(strategy, mixed precision?) for the visible devices."""
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy(), True
    return tf.distribute.get_strategy(), bool(gpus)


def claim_model_dir(model_dir: str, data_dir: str, resume: bool) -> bool:
    """Whether ``model_dir`` holds a run to resume; a run there without ``resume``, or a folder that is not
    train's, is refused."""
    has_run = tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_DIR)) is not None
    if has_run and not resume:
        raise ConfigError(
            f"{model_dir} already holds a training run ({CHECKPOINT_DIR}/); pass --resume (resume=True) to "
            "continue it or choose a new model directory"
        )
    outputs.claim(model_dir, "train", [data_dir], flag="--model-dir")
    return has_run


@dataclass
class TrainState:
    """The model, its optimizer and the bookkeeping variables, with their checkpoint managers."""

    strategy: tf.distribute.Strategy
    mixed: bool  # mixed float16 with loss scaling
    model: tf.keras.Model
    optimizer: tf.keras.optimizers.Optimizer
    epoch: tf.Variable
    best_eer: tf.Variable
    best_epoch: tf.Variable
    centres: tf.Variable | None  # the AAM speaker centres: training state only, never exported
    manager: tf.train.CheckpointManager
    best_model: tf.train.Checkpoint
    best_manager: tf.train.CheckpointManager

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync


def build_state(model_dir: str, inputs: TrainInputs, network: NetworkConfig, *, loss: str, learning_rate: float,
                speakers_per_batch: int, keep_checkpoints: int, seed: int) -> TrainState:
    """A fresh model (seeded), optimizer and variables on the devices' strategy, with checkpoint managers
    for every epoch (``checkpoints/``) and the best one (``checkpoints/best``)."""
    strategy, mixed = device_strategy()
    replicas = strategy.num_replicas_in_sync
    if speakers_per_batch % replicas:
        raise ConfigError(f"speakers_per_batch={speakers_per_batch} must be a multiple of the {replicas} GPUs")
    tf.keras.utils.set_random_seed(seed)  # initial weights
    policy = tf.keras.mixed_precision.global_policy()
    if mixed:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            model = build_embedder(inputs.stats.mel_mean, inputs.stats.mel_var, inputs.features, network)
            optimizer = tf.keras.optimizers.Adam(learning_rate)
            if mixed:
                optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
            epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            best_eer = tf.Variable(2.0, dtype=tf.float64, trainable=False, name="best_dev_eer")
            best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")
            centres = None
            if "aam" in loss:
                init = tf.keras.initializers.GlorotUniform(seed=seed)
                labels = len(inputs.speakers) * len(inputs.speeds)
                centres = tf.Variable(init([network.embedding_dim, labels]), name="aam_centres")
    finally:
        tf.keras.mixed_precision.set_global_policy(policy)
    ckpt_dir = os.path.join(model_dir, CHECKPOINT_DIR)
    extra = {"aam_centres": centres} if centres is not None else {}
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch, best_dev_eer=best_eer,
                               best_epoch=best_epoch, **extra)
    manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=keep_checkpoints, checkpoint_name="epoch")
    best_model = tf.train.Checkpoint(model=model)
    best_manager = tf.train.CheckpointManager(best_model, os.path.join(ckpt_dir, BEST_DIR), max_to_keep=1,
                                              checkpoint_name="best")
    return TrainState(strategy, mixed, model, optimizer, epoch, best_eer, best_epoch, centres, manager, best_model,
                      best_manager)


def restore(state: TrainState, model_dir: str, has_run: bool, resume: bool, log: Callable[[str], None]) -> int:
    """Restore the last checkpoint of a run being resumed; the first epoch to train."""
    if has_run:
        status = None
        latest = state.manager.latest_checkpoint
        try:
            status = state.manager.checkpoint.restore(latest)
            status.assert_existing_objects_matched()
        except (AssertionError, ValueError) as e:
            if status is not None:
                status.expect_partial()  # we are giving up on it: no "unrestored value" warnings at exit
            raise ConfigError(f"{latest} does not fit this network (sizes or pooling changed?): {e}") from None
        log(f"resuming {model_dir} after epoch {int(state.epoch.numpy())} ({latest})")
    elif resume:
        log(f"nothing to resume in {model_dir}: starting a new run")
    return int(state.epoch.numpy()) + 1


def train_step_fn(state: TrainState, *, loss: str, margin: float, aam_scale: float, aam_margin: float,
                  clipnorm: float | None) -> Callable:
    """One optimizer step on a distributed (waveforms, labels) batch; returns the mean loss over replicas."""
    model, optimizer, centres, mixed, replicas = (state.model, state.optimizer, state.centres, state.mixed,
                                                  state.replicas)
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
        per_replica = state.strategy.run(replica_step, args=(x, y))
        return state.strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    return train_step
