"""tf.data input for training: prep TFRecords -> random crops -> batches of P speakers x K clips.

Semi-hard triplet mining needs several clips of each speaker in every batch, so batches are built as
P groups of K crops, each group one speaker, the P speakers distinct:

    files (shuffled, repeated) -> interleave -> shuffle -> parse + label + seeded random crop
      -> group_by_window(speaker, K) -> drop a group whose speaker is already in the batch being filled
      -> batch(P) -> flatten to [P*K, crop_samples] float32, labels [P*K] int32 -> prefetch

Determinism: file order and the shuffle use ``seed``; each crop's offset is drawn with a stateless RNG keyed
by (seed, element index), so the same seed gives the same batches whatever the parallelism. The trainer
builds one pipeline per epoch with seed (seed, epoch), so a resumed run sees exactly the batches an
uninterrupted run would have seen.

Memory: ``group_by_window`` holds up to K-1 pending crops per speaker (int16, 96 KB for 3 s at 16 kHz);
with tens of thousands of train speakers budget a few GB, or lower K / the crop. A speaker with fewer than
K clips in the whole split fills its group from the repeated stream (different random crops of the same
clips).
"""

from __future__ import annotations

import glob
import os

import numpy as np
import tensorflow as tf

from speechid import schema
from speechid.errors import ConfigError
from speechid.model.augment import AugmentConfig, augment_batch


def record_files(data_dir: str, split: str, required: bool = True) -> list[str]:
    """Sorted TFRecord shards of ``split`` in ``data_dir`` (local or gs://)."""
    pattern = schema.record_pattern(data_dir, split)
    files = sorted(tf.io.gfile.glob(pattern) if "://" in pattern else glob.glob(pattern))
    if not files and required:
        raise ConfigError(f"{data_dir}: no {split} records ({os.path.basename(pattern)}); run `speechid prep` first")
    return files


def speaker_table(speakers: list[str]) -> tf.lookup.StaticHashTable:
    """client_id -> label (its index in the tf.Transform vocabulary); unknown ids map to -1."""
    init = tf.lookup.KeyValueTensorInitializer(
        tf.constant(list(speakers), tf.string), tf.range(len(speakers), dtype=tf.int64)
    )
    return tf.lookup.StaticHashTable(init, default_value=-1)


def random_crop(pcm: tf.Tensor, crop_samples: int, seed: tf.Tensor) -> tf.Tensor:
    """int16 ``[n]`` -> int16 ``[crop_samples]``: a random window, or the clip zero-padded at the end."""
    n = tf.shape(pcm)[0]
    span = tf.maximum(n - crop_samples, 0)
    offset = tf.random.stateless_uniform([], seed=seed, minval=0, maxval=span + 1, dtype=tf.int32)
    piece = pcm[offset : offset + crop_samples]
    piece = tf.pad(piece, [[0, crop_samples - tf.shape(piece)[0]]])
    return tf.ensure_shape(piece, [crop_samples])


def speed_copy(pcm: tf.Tensor, crop_samples: int, factor: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """int16 ``[n]`` -> int16 ``[crop_samples]`` played ``factor`` times as fast: a random window of
    ``factor * crop_samples`` samples linearly resampled to ``crop_samples`` (tempo and pitch both move, as
    in Kaldi's speed perturbation)."""
    span = tf.cast(tf.round(tf.cast(crop_samples, tf.float32) * factor), tf.int32)
    n = tf.shape(pcm)[0]
    offset = tf.random.stateless_uniform([], seed=seed, minval=0, maxval=tf.maximum(n - span, 0) + 1, dtype=tf.int32)
    piece = pcm[offset : offset + span]
    piece = tf.pad(piece, [[0, span - tf.shape(piece)[0]]])
    image = tf.reshape(tf.cast(piece, tf.float32), [1, span, 1, 1])
    out = tf.reshape(tf.image.resize(image, [crop_samples, 1], method="bilinear"), [crop_samples])
    return tf.cast(tf.round(tf.clip_by_value(out, -32768.0, 32767.0)), tf.int16)


def _distinct_speakers(p: int):
    """A scan step that keeps a K-group only if its speaker is not yet in the batch being filled."""

    def step(state, group):
        seen, count = state
        label = group[1][0]
        dup = tf.reduce_any(tf.equal(seen, label))

        def add():
            new_seen = tf.tensor_scatter_nd_update(seen, [[count]], [label])
            full = tf.equal(count + 1, p)
            return (
                tf.where(full, tf.fill([p], tf.constant(-1, tf.int64)), new_seen),
                tf.where(full, 0, count + 1),
            )

        new_state = tf.cond(dup, lambda: (seen, count), add)
        return new_state, (group, tf.logical_not(dup))

    return (tf.fill([p], tf.constant(-1, tf.int64)), tf.constant(0, tf.int32)), step


def pk_batches(
    files: list[str],
    speakers: list[str],
    *,
    speakers_per_batch: int,
    clips_per_speaker: int,
    crop_samples: int,
    seed: int | tuple[int, ...] = 0,
    shuffle_buffer: int = 2048,
    cycle_length: int = 8,
    augment: AugmentConfig | None = None,
    sample_rate: int = 16_000,
    speeds: tuple[float, ...] = (1.0,),
) -> tf.data.Dataset:
    """Infinite dataset of (waveforms float32 [P*K, crop_samples], labels int32 [P*K]) (module docstring).

    With ``augment`` each batch goes through ``model.augment.augment_batch``, seeded by the batch index.
    With several ``speeds`` each clip is played at one of them, drawn per clip, and speed i of speaker s is
    another speaker, label ``s + i * len(speakers)``: a voice sped up by 10% is not the same voice to the
    model (pitch and formants move), so the copies multiply the speakers it learns from."""
    p, k = int(speakers_per_batch), int(clips_per_speaker)
    if p < 2 or k < 2:
        raise ConfigError(f"P x K batches need P >= 2 speakers and K >= 2 clips each, got {p} x {k}")
    if len(speakers) < p:
        raise ConfigError(f"speakers_per_batch={p} but the training vocabulary has only {len(speakers)} speakers")
    if not files:
        raise ConfigError("no training record files")
    seeds = np.random.SeedSequence(seed if isinstance(seed, int) else list(seed)).generate_state(4)
    file_seed, shuffle_seed, crop_seed, augment_seed = (int(s) for s in seeds)
    table = speaker_table(speakers)

    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.shuffle(len(files), seed=file_seed, reshuffle_each_iteration=True).repeat()
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
        cycle_length=min(cycle_length, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed)

    factors = tf.constant([float(f) for f in speeds], tf.float32)
    n_vocab = tf.constant(len(speakers), tf.int64)

    def parse(index, serialized):
        ex = tf.io.parse_single_example(serialized, {k_: schema.feature_spec()[k_] for k_ in ("audio", "client_id")})
        pcm = tf.io.decode_raw(ex["audio"], tf.int16, little_endian=True)
        crop_seed_i = tf.stack([tf.constant(crop_seed, tf.int64), index])
        label = table.lookup(ex["client_id"])
        if len(speeds) == 1 and speeds[0] == 1.0:
            return random_crop(pcm, crop_samples, crop_seed_i), label
        copy = tf.random.stateless_uniform([], seed=crop_seed_i + 1, minval=0, maxval=len(speeds), dtype=tf.int32)
        crop = speed_copy(pcm, crop_samples, tf.gather(factors, copy), crop_seed_i)
        return crop, tf.where(label >= 0, label + tf.cast(copy, tf.int64) * n_vocab, label)

    ds = ds.enumerate().map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.filter(lambda crop, label: label >= 0)  # clips of speakers outside the vocabulary (OOV)
    ds = ds.group_by_window(
        key_func=lambda crop, label: label,
        reduce_func=lambda key, window: window.batch(k, drop_remainder=True),
        window_size=k,
    )
    init, step = _distinct_speakers(p)

    def kept(group, keep):
        return keep

    def drop_flag(group, keep):
        return group

    ds = ds.scan(init, step).filter(kept).map(drop_flag)
    ds = ds.batch(p, drop_remainder=True)

    def flatten(crops, labels):
        waves = tf.cast(tf.reshape(crops, [p * k, crop_samples]), tf.float32) / 32767.0
        return waves, tf.cast(tf.reshape(labels, [p * k]), tf.int32)

    ds = ds.map(flatten, num_parallel_calls=tf.data.AUTOTUNE)
    if augment is not None:

        def augmented(index, batch):
            waves, labels = batch
            seed = tf.stack([tf.constant(augment_seed, tf.int64), index])
            return augment_batch(waves, seed, sample_rate, augment, group=k), labels

        ds = ds.enumerate().map(augmented, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def load_clips(
    data_dir: str, split: str, max_clips: int | None = None, seed: int = 0
) -> tuple[list[np.ndarray], list[str], list[str]]:
    """All clips of a split as (float32 waveforms, client_ids, clip_ids), in file order.

    With ``max_clips`` a seeded uniform sample (reservoir sampling) of that many clips is kept, so a big
    split never has to fit in memory.
    """
    files = record_files(data_dir, split)
    rng = np.random.default_rng(seed)
    kept: list = []
    for i, rec in enumerate(r for f in files for r in schema.read_records(f)):
        item = (rec.audio, rec.client_id, rec.clip_id)
        if max_clips is None or len(kept) < max_clips:
            kept.append((i, item))
        else:
            j = int(rng.integers(0, i + 1))
            if j < max_clips:
                kept[j] = (i, item)
    kept.sort(key=lambda t: t[0])
    return [t[1][0] for t in kept], [t[1][1] for t in kept], [t[1][2] for t in kept]
