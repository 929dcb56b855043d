"""Embed benchmark: the Beam RunInference pipeline against a plain loop over the same model; prints JSON.

    python benchmarks/bench_embed.py                         # a 200-clip synthetic archive, and the same x10
    python benchmarks/bench_embed.py --clips 200 --times 10 --workers 2 --batch 32 --workdir /tmp/bench-embed

The model is the default-sized network (``NetworkConfig()``, ``FeatureConfig()``) exported with its initial
weights: throughput does not depend on what the weights learned. Corpora come from
``speechid.corpora.synth.make_corpus`` (48 kHz MP3, 1.5-4 s; bench_prep's cache layout); the large archive holds
the same clips ``--times`` times under new names (``bench_prep.repeat_archive``). Each pipeline run is a
fresh ``python -m speechid.pipelines.embed`` process reading the archive (two-pass read, MP3 decode,
resample, window, RunInference, pool, Parquet) on the local runner in multi_processing mode, with
min = max batch size so its batches match the loop's; its peak memory is sampled over the whole process
tree (bench_prep.TreeSampler).

The plain loop decodes the same clips up front, cuts the same windows, and times only
``model(batch)`` on batches of the same size, in this process with TensorFlow limited to one thread: the
best a single core can do with this model. Figures:
- ``pipeline_windows_per_s``: windows / wall time of the largest run, start-up included;
- ``pipeline_marginal_windows_per_s``: extra windows / extra time between the smallest and the largest run
  (the steady rate a million-clip job sees once start-up is paid);
- ``ratio_per_core`` = (pipeline rate / workers) / plain-loop rate, for both. Target >= 0.7 (marginal);
- ``peak_rss_ratio``: peak process-tree RSS of the large run over the 1x run (target <= 1.3).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import speechid  # noqa: F401  (sets the TF environment for the child processes too)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_prep import TreeSampler, corpus, read_clips, repeat_archive


def export_default_model(model_dir: str) -> dict:
    from speechid.model.export import export_model
    from speechid.model.features import FeatureConfig
    from speechid.model.network import NetworkConfig, build_embedder

    features, network = FeatureConfig(), NetworkConfig()
    mean = np.full(features.n_mels, -5.0, np.float32)
    var = np.full(features.n_mels, 6.0, np.float32)
    weights = build_embedder(mean, var, features, network).get_weights()
    return export_model(weights, model_dir, mel_mean=mean, mel_var=var, features=features, network=network,
                        window_s=3.0, hop_s=1.5, data_fingerprint="bench")


def plain_loop(model_dir: str, config: dict, clips: list[bytes], batch: int) -> dict:
    """Windows per second of the exported model alone, one TensorFlow thread, same windows and batch size."""
    from speechid import audio
    from speechid.model.export import load_serving_model
    from speechid.model.windows import window_waveform

    windows = np.concatenate([
        window_waveform(audio.decode(c, config["sample_rate"], audio.NO_LIMITS), config["sample_rate"],
                        config["window_s"], config["hop_s"]) for c in clips
    ])
    model = load_serving_model(model_dir)
    model(windows[:batch])  # trace once, outside the timing
    start = time.perf_counter()
    for s in range(0, len(windows), batch):
        np.asarray(model(windows[s:s + batch]))
    wall = time.perf_counter() - start
    return {"windows": int(len(windows)), "wall_s": round(wall, 2), "windows_per_s": round(len(windows) / wall, 1)}


def run_pipeline(model_dir: str, tar: str, out: str, workers: int, batch: int, log_path: str) -> dict:
    cmd = [sys.executable, "-m", "speechid.pipelines.embed", "--model", model_dir, "--input", tar, "--output", out,
           "--min-batch-size", str(batch), "--max-batch-size", str(batch)]
    if workers > 1:
        cmd += ["--direct_running_mode", "multi_processing", "--direct_num_workers", str(workers)]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        with TreeSampler(proc.pid) as mem:
            code = proc.wait()
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"embed failed (exit {code}); see {log_path}")
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    import pyarrow.parquet as pq

    windows = int(sum(pq.read_table(os.path.join(out, p), columns=["n_windows"]).column(0).to_numpy().sum()
                      for p in os.listdir(out) if p.endswith(".parquet")))
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(mem.cpu_s, 2),
        "clips": manifest["clips_written"],
        "clips_failed": manifest["clips_failed"],
        "windows": windows,
        "reconciles": manifest["reconciles"],
        "clips_per_s": round(manifest["clips_written"] / wall, 2),
        "windows_per_s": round(windows / wall, 1),
        "peak_tree_rss_mb": round(mem.peak_rss_kb / 1024, 1),
        "peak_tree_pss_mb": round(mem.peak_pss_kb / 1024, 1) if mem.peak_pss_kb else None,
        "processes": mem.max_processes,
        "workers_busy": [round(c / wall, 2) for c in mem.worker_cpu_s(workers)],  # CPU s / wall s, each worker
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=200, help="clips in the 1x archive")
    ap.add_argument("--times", type=int, default=10, help="copies of every clip in the large archive")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="Cache for corpora and outputs (default: a temp dir).")
    args = ap.parse_args(argv)
    import tensorflow as tf

    # Before TensorFlow initialises: the plain loop in this process is the one-core reference.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-embed-")
    os.makedirs(workdir, exist_ok=True)
    model_dir = os.path.join(workdir, "model")
    config = export_default_model(model_dir)

    base = corpus(workdir, args.clips, args.seed)
    tars = {"1x": base,
            f"{args.times}x": repeat_archive(base, os.path.join(workdir, f"repeat-{args.clips}x{args.times}.tar.gz"),
                                             args.times)}
    runs = {}
    for name, tar in tars.items():
        out = os.path.join(workdir, f"emb-{name}")
        runs[name] = run_pipeline(model_dir, tar, out, args.workers, args.batch, os.path.join(workdir, f"{name}.log"))
    loop = plain_loop(model_dir, config, read_clips(base), args.batch)

    small, big = (runs[name] for name in tars)
    marginal = None
    if big["wall_s"] > small["wall_s"]:
        marginal = round((big["windows"] - small["windows"]) / (big["wall_s"] - small["wall_s"]), 1)
    per_core = loop["windows_per_s"]
    result = {
        "benchmark": "embed",
        "machine": {"cpus": os.cpu_count()},
        "model": {"trainable_parameters": config["trainable_parameters"], "window_s": config["window_s"],
                  "hop_s": config["hop_s"], "embedding_dim": config["embedding_dim"]},
        "workers": args.workers,
        "batch": args.batch,
        "archive_mb": {k: round(os.path.getsize(t) / 2**20, 1) for k, t in tars.items()},
        "runs": runs,
        "plain_loop_1_thread": loop,
        "pipeline_clips_per_s": big["clips_per_s"],
        "pipeline_windows_per_s": big["windows_per_s"],
        "pipeline_marginal_windows_per_s": marginal,
        "ratio_per_core": round(big["windows_per_s"] / args.workers / per_core, 3),
        "ratio_per_core_marginal": None if marginal is None else round(marginal / args.workers / per_core, 3),
        "target_ratio_per_core": 0.7,
        "peak_rss_ratio": round(big["peak_tree_rss_mb"] / small["peak_tree_rss_mb"], 3),
        "target_peak_rss_ratio": 1.3,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
