"""Training throughput of the default embedder: clips/s and steps/s at the default P x K batch.

    python benchmarks/bench_train.py [--steps 10] [--batch-speakers 32] [--batch-clips 4]
                                     [--crop-seconds 3.0] [--data DIR] [--augment none,standard] [--rounds 2]

Times the trainer's own train step (triplet semi-hard loss, Adam, the default 600k-parameter network) on
batches from the real tf.data P x K pipeline. Without --data, a small prep-like data directory of
generated audio is written to a temp folder first (not timed). The first step (tracing) is reported
apart. With several ``--augment`` presets, their pipelines are timed side by side in interleaved rounds
(the median round counts) and ``augment_ratio`` is each preset's steps/s over the first's. Prints one JSON
object; GPUs are used when visible (then "device" says which).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import shutil
import tempfile
import time

import numpy as np

import speechid  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)


def _write_data(data_dir: str, speakers: int, clips: int, seconds: float) -> list[str]:
    import tensorflow as tf

    from speechid import schema

    rng = np.random.default_rng(0)
    rate = 16_000
    with tf.io.TFRecordWriter(f"{schema.record_prefix(data_dir, 'train')}-00000-of-00001.tfrecord.gz", "GZIP") as w:
        for s in range(speakers):
            f0 = rng.uniform(90, 250)
            for c in range(clips):
                t = np.arange(int(seconds * rate)) / rate
                x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 8))
                x = (0.2 * x / np.abs(x).max() + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
                rec = schema.ClipRecord(f"c{s}_{c}", f"spk{s}", x, rate, "train", "bench", f"c{s}_{c}.mp3")
                w.write(schema.to_example(rec))
    return [f"spk{s}" for s in range(speakers)]


def main() -> None:
    from speechid.model import trainer

    defaults = {k: p.default for k, p in inspect.signature(trainer.train).parameters.items()}
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-speakers", dest="speakers_per_batch", type=int, default=defaults["speakers_per_batch"])
    ap.add_argument("--batch-clips", dest="clips_per_speaker", type=int, default=defaults["clips_per_speaker"])
    ap.add_argument("--crop-seconds", type=float, default=defaults["crop_seconds"])
    ap.add_argument("--data", help="a prep output folder (default: generated audio)")
    ap.add_argument("--augment", default="none,standard", help="comma-separated augmentation presets to compare")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    presets = [a for a in args.augment.split(",") if a]

    import tensorflow as tf

    from speechid.model.data import pk_batches, record_files
    from speechid.model.features import FeatureConfig
    from speechid.model.losses import triplet_semihard_loss
    from speechid.model.network import NetworkConfig, build_embedder, trainable_parameters

    p, k = args.speakers_per_batch, args.clips_per_speaker
    tmp = None
    if args.data:
        from speechid.model.stats import load_stats

        stats = load_stats(args.data)
        speakers, mean, var, data_dir = stats.speakers, stats.mel_mean, stats.mel_var, args.data
    else:
        tmp = data_dir = tempfile.mkdtemp(prefix="bench_train_")
        speakers = _write_data(data_dir, speakers=max(2 * p, 16), clips=2 * k, seconds=args.crop_seconds + 1.0)
        mean, var = np.full(40, -5.0, np.float32), np.full(40, 9.0, np.float32)
    try:
        features = FeatureConfig()
        crop = int(round(args.crop_seconds * features.sample_rate))
        gpus = tf.config.list_physical_devices("GPU")
        strategy, mixed = trainer._strategy()
        if mixed:
            tf.keras.mixed_precision.set_global_policy("mixed_float16")
        with strategy.scope():
            model = build_embedder(mean, var, features, NetworkConfig())
            optimizer = tf.keras.optimizers.Adam(defaults["learning_rate"])
            if mixed:
                optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = triplet_semihard_loss(y, model(x, training=True), margin=defaults["margin"])
                scaled = optimizer.get_scaled_loss(loss) if mixed else loss
            grads = tape.gradient(scaled, model.trainable_variables)
            if mixed:
                grads = optimizer.get_unscaled_gradients(grads)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        from speechid.model.augment import preset

        iterators = {
            name: iter(
                pk_batches(
                    record_files(data_dir, "train"),
                    speakers,
                    speakers_per_batch=p,
                    clips_per_speaker=k,
                    crop_samples=crop,
                    seed=0,
                    shuffle_buffer=256,
                    augment=preset(name),
                    sample_rate=features.sample_rate,
                )
            )
            for name in presets
        }
        t0 = time.perf_counter()
        float(step(*next(iterators[presets[0]])))
        first = time.perf_counter() - t0
        for name in presets[1:]:  # warm each pipeline once
            float(step(*next(iterators[name])))
        walls: dict[str, list[float]] = {name: [] for name in presets}
        for _ in range(args.rounds):
            for name in presets:
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    float(step(*next(iterators[name])))
                walls[name].append(time.perf_counter() - t0)
        wall = float(np.median(walls[presets[0]]))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    print(
        json.dumps(
            {
                "benchmark": "train_step",
                "device": f"GPU x{len(gpus)} ({'mixed_float16' if mixed else 'float32'})"
                if gpus
                else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
                "trainable_parameters": trainable_parameters(model),
                "batch": {"speakers": p, "clips_per_speaker": k, "clips": p * k, "crop_seconds": args.crop_seconds},
                "steps_timed": args.steps,
                "first_step_s": round(first, 2),
                "steps_per_s": round(args.steps / wall, 3),
                "clips_per_s": round(args.steps * p * k / wall, 1),
                "audio_seconds_per_s": round(args.steps * p * k * args.crop_seconds / wall, 1),
                "by_augment": {
                    name: {"steps_per_s": round(args.steps / float(np.median(w)), 3)} for name, w in walls.items()
                },
                "augment_ratio": {
                    name: round(float(np.median(walls[presets[0]])) / float(np.median(w)), 3)
                    for name, w in walls.items()
                },
                "data": "prep output" if args.data else "generated",
                "load_average_1m": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
