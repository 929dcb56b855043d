"""Prep benchmark: pipeline throughput against a plain decode loop, and peak memory against corpus size; prints JSON.

    python benchmarks/bench_prep.py                          # 200- and 2,000-clip synthetic archives
    python benchmarks/bench_prep.py --sizes 200 2000 --workers 2 --repeat 2 --workdir /tmp/bench-prep

Corpora come from ``speechid.synth.make_corpus`` (48 kHz mono MP3, 1.5-4 s, every clip in train/dev/test)
and are cached in ``--workdir``. Each prep run is a fresh ``python -m speechid.pipelines.prep`` process on
the local runner in multi_processing mode (``--direct_num_workers``), so its figures include starting Beam,
the workers and TensorFlow. A process-tree sampler (the driver plus its SDK worker processes) records the
peak summed RSS every 100 ms, the peak summed PSS (shared pages counted once) every second, and the CPU
time of every process as last seen. The plain loop decodes and resamples the same clips
(``speechid.audio.decode`` to 16 kHz) in this process on one core, bytes already in memory.

Runs are interleaved (small, large, plain loop, then again) and the median time of ``--repeat`` rounds is
kept (the plain loop's best), with the worst memory.

Figures:
- ``pipeline_clips_per_s``: clips / wall time of the largest run, start-up included;
- ``pipeline_marginal_clips_per_s``: extra clips / extra wall time between the smallest and largest run:
  the steady rate once start-up (~25 s of imports, tracing and worker start) is paid;
- ``ratio_per_core*``: pipeline clips per second per worker / plain-loop clips per second; the ``_cpu``
  variant divides by CPU seconds instead of wall seconds on both sides, which a busy machine disturbs less.
Targets: marginal per-core ratio >= 0.5; peak tree RSS at the largest size within 20% of the smallest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
    """``pid`` and its descendants, through /proc/<pid>/task/<tid>/children (no scan of all of /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def _field_kb(path: str, name: str) -> int:
    try:
        with open(path) as f:
            return next((int(line.split()[1]) for line in f if line.startswith(name)), 0)
    except OSError:
        return 0


def _cpu_s(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class TreeSampler:
    """Peak summed RSS and PSS of a process tree, and the CPU time of each of its processes.

    CPU is summed per process as last seen rather than read from the parent's rusage: the local runner's
    workers are not always reaped before the driver exits, and their time would then go missing. PSS is
    read once a second only: reading smaps walks page tables and would slow the processes measured.
    """

    def __init__(self, pid: int, interval: float = 0.1, pss_every: float = 1.0):
        self.pid, self.interval, self.pss_every = pid, interval, pss_every
        self.peak_rss_kb = self.peak_pss_kb = self.max_processes = 0
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def cpu_s(self) -> float:
        return sum(self._cpu.values())

    def _run(self):
        last_pss = 0.0
        while not self._stop.is_set():
            pids = _descendants(self.pid)
            self.peak_rss_kb = max(self.peak_rss_kb, sum(_field_kb(f"/proc/{p}/status", "VmRSS:") for p in pids))
            if time.monotonic() - last_pss >= self.pss_every:
                last_pss = time.monotonic()
                pss = sum(_field_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
                self.peak_pss_kb = max(self.peak_pss_kb, pss)
            for p in pids:
                cpu = _cpu_s(p)
                if cpu is not None:
                    self._cpu[p] = cpu
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
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        with TreeSampler(proc.pid) as tree:
            code = proc.wait()
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"prep failed (exit {code}); see {log_path}")
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(tree.cpu_s, 2),
        "records": sum(manifest["records"].values()),
        "balanced": manifest["reconciliation"]["balanced"],
        "peak_tree_rss_mb": round(tree.peak_rss_kb / 1024, 1),
        "peak_tree_pss_mb": round(tree.peak_pss_kb / 1024, 1) if tree.peak_pss_kb else None,
        "processes": tree.max_processes,
    }


def _summary(tries: list[dict]) -> dict:
    return {
        "clips": tries[0]["records"],
        "wall_s": statistics.median(t["wall_s"] for t in tries),
        "cpu_s": statistics.median(t["cpu_s"] for t in tries),
        "peak_tree_rss_mb": max(t["peak_tree_rss_mb"] for t in tries),
        "peak_tree_pss_mb": max((t["peak_tree_pss_mb"] or 0) for t in tries) or None,
        "balanced": all(t["balanced"] for t in tries),
        "processes": max(t["processes"] for t in tries),
        "wall_s_each": [t["wall_s"] for t in tries],
        "cpu_s_each": [t["cpu_s"] for t in tries],
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs=2, default=[200, 2000], metavar=("SMALL", "LARGE"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds (median time, worst memory)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "speechid-bench-prep"))
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    small_n, large_n = sorted(args.sizes)
    tars = {n: corpus(args.workdir, n, args.seed) for n in (small_n, large_n)}
    clips = read_clips(tars[large_n])

    tries: dict[int, list[dict]] = {small_n: [], large_n: []}
    plain_runs = []
    for _ in range(args.repeat):
        for n in (small_n, large_n):
            log = os.path.join(args.workdir, f"prep-{n}.log")
            tries[n].append(run_prep(tars[n], os.path.join(args.workdir, f"out-{n}"), args.workers, log))
        plain_runs.append(plain_loop(clips))
    small, large = _summary(tries[small_n]), _summary(tries[large_n])
    plain = max(r[0] for r in plain_runs)
    plain_cpu = max(r[1] for r in plain_runs)

    extra = large["clips"] - small["clips"]
    e2e = large["clips"] / large["wall_s"]
    marginal = extra / (large["wall_s"] - small["wall_s"])
    marginal_cpu = extra / (large["cpu_s"] - small["cpu_s"])
    rss_growth = large["peak_tree_rss_mb"] / small["peak_tree_rss_mb"] - 1
    result = {
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "runs": {str(small_n): small, str(large_n): large},
        "plain_loop_clips_per_s": round(plain, 1),
        "plain_loop_clips_per_cpu_s": round(plain_cpu, 1),
        "pipeline_clips_per_s": round(e2e, 1),
        "pipeline_marginal_clips_per_s": round(marginal, 1),
        "pipeline_marginal_clips_per_cpu_s": round(marginal_cpu, 1),
        "ratio_per_core": round(e2e / args.workers / plain, 3),
        "ratio_per_core_marginal": round(marginal / args.workers / plain, 3),
        "ratio_per_core_cpu_marginal": round(marginal_cpu / plain_cpu, 3),
        "peak_rss_growth": round(rss_growth, 3),
        "targets_met": {
            "ratio_per_core_marginal>=0.5": marginal / args.workers / plain >= 0.5,
            "ratio_per_core_cpu_marginal>=0.5": marginal_cpu / plain_cpu >= 0.5,
            "peak_rss_growth<=0.2": rss_growth <= 0.2,
        },
    }
    if small["peak_tree_pss_mb"] and large["peak_tree_pss_mb"]:
        result["peak_pss_growth"] = round(large["peak_tree_pss_mb"] / small["peak_tree_pss_mb"] - 1, 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
