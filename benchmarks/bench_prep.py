"""Prep benchmark: pipeline throughput against a plain decode loop, and peak memory against corpus size; prints JSON.

    python benchmarks/bench_prep.py                          # 200- and 2,000-clip synthetic archives
    python benchmarks/bench_prep.py --sizes 200 2000 --workers 2 --workdir /tmp/bench-prep

Corpora come from ``speechid.synth.make_corpus`` (48 kHz mono MP3, 1.5-4 s, every clip in train/dev/test) and
are cached in ``--workdir``. Each prep run is a fresh ``python -m speechid.pipelines.prep`` process on the
local runner in multi_processing mode (``--direct_num_workers``), so its figures include starting Beam, the
workers and TensorFlow. Peak memory is sampled every 50 ms over the whole process tree (the driver plus
its SDK worker processes): the sum of RSS and, where the kernel reports it, the sum of PSS (shared pages
counted once). The plain loop decodes and resamples the same clips (``speechid.audio.decode``, 16 kHz) in
this process, one core, bytes already in memory.

Throughput figures:
- ``pipeline_clips_per_s``: clips / wall time of the largest run, start-up included;
- ``pipeline_marginal_clips_per_s``: extra clips / extra wall time between the smallest and largest run,
  i.e. the steady rate once start-up is paid (what a real corpus of a million clips sees);
- ``ratio_per_core`` = (pipeline rate / workers) / plain-loop rate, both ways. Target >= 0.5 (marginal).
Memory target: peak RSS at the largest size within 20% of the smallest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

import speechid  # noqa: F401  (sets the TF environment for the child processes too)
from speechid import audio, synth


def corpus(workdir: str, clips: int, seed: int) -> str:
    per_speaker = 20
    speakers = max(3, clips // per_speaker)
    out = os.path.join(workdir, f"corpus-{speakers * per_speaker}")
    tar = os.path.join(out, f"{synth.RELEASE}-en.tar.gz")
    if not os.path.exists(tar):
        synth.make_corpus(out, speakers=speakers, clips_per_speaker=per_speaker, seed=seed, extra_fraction=0.0)
    return tar


def read_clips(tar_path: str) -> list[bytes]:
    with tarfile.open(tar_path, "r|*") as tar:
        return [tar.extractfile(m).read() for m in tar if "/clips/" in m.name and m.isfile()]


def plain_loop(clips: list[bytes], sample_rate: int = 16_000) -> tuple[float, float]:
    """(clips per wall second, clips per CPU second) of decode + resample alone, one process."""
    start, cpu = time.perf_counter(), time.process_time()
    for data in clips:
        audio.decode(data, sample_rate)
    return len(clips) / (time.perf_counter() - start), len(clips) / (time.process_time() - cpu)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; PSS is 0 where smaps_rollup is not readable."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        with open(f"/proc/{pid}/smaps_rollup") as f:
            pss = next((int(line.split()[1]) for line in f if line.startswith("Pss:")), 0)
    except OSError:
        pass
    return rss, pss


class TreeMemory:
    """Samples the summed memory of a process and all its descendants until stopped."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.peak_rss_kb = self.peak_pss_kb = self.max_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            pids = _descendants(self.pid)
            mem = [_memory_kb(p) for p in pids]
            self.peak_rss_kb = max(self.peak_rss_kb, sum(m[0] for m in mem))
            self.peak_pss_kb = max(self.peak_pss_kb, sum(m[1] for m in mem))
            self.max_processes = max(self.max_processes, len(pids))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_prep(tar: str, out: str, workers: int, log_path: str) -> dict:
    cmd = [sys.executable, "-m", "speechid.pipelines.prep", "--input", tar, "--output", out]
    if workers > 1:
        cmd += ["--direct_running_mode", "multi_processing", "--direct_num_workers", str(workers)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        with TreeMemory(proc.pid) as mem:
            code = proc.wait()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU of the whole tree (workers are reaped by the driver, so their time rolls up into its children's).
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if code != 0:
        raise SystemExit(f"prep failed (exit {code}); see {log_path}")
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "max_process_rss_mb": round((after.ru_maxrss) / 1024, 1),
        "records": sum(manifest["records"].values()),
        "balanced": manifest["reconciliation"]["balanced"],
        "peak_tree_rss_mb": round(mem.peak_rss_kb / 1024, 1),
        "peak_tree_pss_mb": round(mem.peak_pss_kb / 1024, 1) if mem.peak_pss_kb else None,
        "processes": mem.max_processes,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 2000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "speechid-bench-prep"))
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    sizes = sorted(args.sizes)

    runs = {}
    for n in sizes:
        tar = corpus(args.workdir, n, args.seed)
        out = os.path.join(args.workdir, f"out-{n}")
        runs[n] = {"clips": None, **run_prep(tar, out, args.workers, os.path.join(args.workdir, f"prep-{n}.log"))}
        runs[n]["clips"] = runs[n]["records"]

    big, small = runs[sizes[-1]], runs[sizes[0]]
    clips = read_clips(corpus(args.workdir, sizes[-1], args.seed))
    plain, plain_cpu = plain_loop(clips)
    e2e = big["clips"] / big["wall_s"]
    marginal = (big["clips"] - small["clips"]) / (big["wall_s"] - small["wall_s"]) if len(sizes) > 1 else None
    # Per CPU-second: what a core achieves whatever else the machine is doing (wall times on a shared
    # machine are not), start-up excluded by taking the difference of the two runs.
    marginal_cpu = (big["clips"] - small["clips"]) / (big["cpu_s"] - small["cpu_s"]) if len(sizes) > 1 else None
    rss_growth = big["peak_tree_rss_mb"] / small["peak_tree_rss_mb"] - 1
    result = {
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "runs": {str(n): r for n, r in runs.items()},
        "plain_loop_clips_per_s": round(plain, 1),
        "plain_loop_clips_per_cpu_s": round(plain_cpu, 1),
        "pipeline_marginal_clips_per_cpu_s": round(marginal_cpu, 1) if marginal_cpu else None,
        "ratio_per_core_cpu_marginal": round(marginal_cpu / plain_cpu, 3) if marginal_cpu else None,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "pipeline_clips_per_s": round(e2e, 1),
        "pipeline_marginal_clips_per_s": round(marginal, 1) if marginal else None,
        "ratio_per_core": round(e2e / args.workers / plain, 3),
        "ratio_per_core_marginal": round(marginal / args.workers / plain, 3) if marginal else None,
        "peak_rss_growth": round(rss_growth, 3),
        "targets": {
            "ratio_per_core_marginal>=0.5": bool(marginal and marginal / args.workers / plain >= 0.5),
            "ratio_per_core_cpu_marginal>=0.5": bool(marginal_cpu and marginal_cpu / plain_cpu >= 0.5),
            "peak_rss_growth<=0.2": rss_growth <= 0.2,
        },
    }
    if small["peak_tree_pss_mb"] and big["peak_tree_pss_mb"]:
        result["peak_pss_growth"] = round(big["peak_tree_pss_mb"] / small["peak_tree_pss_mb"] - 1, 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
