"""Prep benchmark: memory against archive size, throughput against a plain decode loop; prints JSON.

    python benchmarks/bench_prep.py                       # a 300-clip synthetic archive, and the same x10
    python benchmarks/bench_prep.py --clips 300 --times 10 --workers 2 --repeat 2 --workdir /tmp/bench-prep
    python benchmarks/bench_prep.py --big-gb 10           # one-off: one archive of >= 10 GB (48 kHz stereo WAV)
    python benchmarks/bench_prep.py --runner dask         # the local runner and a 2-worker dask cluster, side by side

The base corpus comes from ``speechid.corpora.synth.make_corpus`` (48 kHz mono MP3, 1.5-4 s, every clip in
train/dev/test) and is cached in ``--workdir``; the large archive holds the same clips ``--times`` times
under new names, with their TSV rows repeated (``repeat_archive``), so both runs decode the same audio
and only the archive's size differs. Each prep run is a fresh ``python -m speechid.pipelines.prep`` process
on the local runner in multi_processing mode (``--direct_num_workers``), so its figures include starting
Beam, the workers and TensorFlow. A process-tree sampler (the driver plus its SDK worker processes)
records the peak summed RSS every 100 ms, the peak summed PSS (shared pages counted once) every second,
and the CPU time of every process as last seen. The plain loop decodes and resamples the same clips
(``speechid.audio.decode`` to 16 kHz) in this process on one core, bytes already in memory.

Runs are interleaved (1x, large, plain loop, then again) and the median time of ``--repeat`` rounds is
kept (the plain loop's best), with the worst memory.

Figures:
- ``peak_rss_ratio``: peak process-tree RSS of the large run over the 1x run (target <= 1.3);
- ``pipeline_marginal_clips_per_s``: extra clips / extra wall time between the 1x and the large run: the
  steady rate once start-up (~25 s of imports, tracing and worker start) is paid;
- ``ratio_per_core*``: pipeline clips per second per worker / plain-loop clips per second (target >= 0.5);
  the ``_cpu`` variant divides by CPU seconds on both sides, which a busy machine disturbs less;
- ``workers_busy``: each SDK worker process's CPU seconds over the large run's wall time: every worker
  decodes clips of the ONE archive (two-pass reading), so each should be well above zero.

``--runner dask`` runs every archive twice per round: on the local runner as above, and through
``--runner DaskRunner`` on a dask.distributed cluster of ``--workers`` single-threaded worker processes
(``dask scheduler`` and ``dask worker --nworkers N --nthreads 1``, 127.0.0.1 only, TensorFlow on one thread
per worker, as the local runner's workers get), started fresh for each run and stopped after it. The prep
command's wall time is measured from its start with the cluster already up (the workers import Beam and
TensorFlow during the job, as the local runner's do); ``cluster_start_s`` says what starting it took. Memory
is the peak summed RSS of the whole tree: the prep process, the scheduler, the nanny and worker processes.
Figures: ``dask_vs_local_marginal`` (dask marginal clips/s over the local runner's; target >= 0.7),
``dask_vs_local`` (end to end, large run), and the dask runs' own ``peak_rss_ratio`` (target <= 1.3).
"""

from __future__ import annotations

import argparse
import io
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
from speechid import audio
from speechid.corpora import synth


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


def repeat_archive(src: str, dest: str, times: int, target_bytes: int = 0, wav: bool = False) -> str:
    """Write ``dest``: the clips of ``src`` ``times`` times under new names (``<stem>-rK<ext>``), clips first
    and TSVs after (the current Common Voice bundler's order), each TSV row repeated for every copy.

    With ``target_bytes``, copies are added until the archive file is at least that large;
    ``wav`` re-encodes each clip once as 48 kHz 16-bit stereo WAV first (large clips: a 10 GB archive in
    a few thousand clips). Written with gzip level 1, cached by name.
    """
    if os.path.exists(dest):
        return dest
    from speechid.pipelines.archives import is_clip_member, tsv_split

    clips, tsvs = {}, {}
    with tarfile.open(src, "r|*") as tar:
        for m in tar:
            if not m.isfile():
                continue
            data = tar.extractfile(m).read()
            if is_clip_member(m.name):
                clips[m.name] = data
            elif tsv_split(m.name) is not None:
                tsvs[m.name] = data.decode("utf-8").splitlines()
    if wav:
        import numpy as np

        clips = {name.rsplit(".", 1)[0] + ".wav": audio.encode(np.stack([w, w], 1), 48_000, "WAV")
                 for name, data in clips.items()
                 for w in [audio.decode(data, 48_000, audio.NO_LIMITS)]}
        to_wav = lambda p: p.rsplit(".", 1)[0] + ".wav"  # noqa: E731
        tsvs = {n: [lines[0]] + [_rename_row(lines[0], row, to_wav) for row in lines[1:]] for n, lines in tsvs.items()}

    def copy_name(path: str, k: int) -> str:
        stem, dot, ext = path.rpartition(".")
        return f"{stem}-r{k}{dot}{ext}"

    tmp = dest + ".tmp"
    with open(tmp, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz", compresslevel=1) as out:
        k = 0
        while k < times or raw.tell() < target_bytes:  # the archive's own size, compressed
            for name, data in clips.items():
                info = tarfile.TarInfo(copy_name(name, k))
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
            k += 1
        times = k
        for name, lines in tsvs.items():
            body = [lines[0]] + [_rename_row(lines[0], row, lambda p, k=k: copy_name(p, k))
                                 for k in range(times) for row in lines[1:]]
            data = ("\n".join(body) + "\n").encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    os.replace(tmp, dest)
    return dest


def _rename_row(header: str, row: str, rename) -> str:
    fields = row.split("\t")
    col = header.split("\t").index("path")
    if col < len(fields) and fields[col]:
        fields[col] = rename(fields[col])
    return "\t".join(fields)


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

    def __init__(self, pid: int | list[int], interval: float = 0.1, pss_every: float = 1.0,
                 worker_mark: bytes = b"sdk_worker"):
        self.roots = [pid] if isinstance(pid, int) else list(pid)
        self.pid, self.interval, self.pss_every = self.roots[0], interval, pss_every
        self.worker_mark = worker_mark
        self.peak_rss_kb = self.peak_pss_kb = self.max_processes = 0
        self._cpu: dict[int, float] = {}
        self.workers: set[int] = set()  # worker processes (their command line holds worker_mark)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def cpu_s(self) -> float:
        return sum(self._cpu.values())

    def worker_cpu_s(self, n: int) -> list[float]:
        """CPU seconds of the ``n`` busiest SDK worker processes (a launcher may also name sdk_worker)."""
        return sorted((round(self._cpu[p], 1) for p in self.workers if p in self._cpu), reverse=True)[:n]

    def _run(self):
        last_pss = 0.0
        while not self._stop.is_set():
            pids = [p for root in self.roots for p in _descendants(root)]
            self.peak_rss_kb = max(self.peak_rss_kb, sum(_field_kb(f"/proc/{p}/status", "VmRSS:") for p in pids))
            if time.monotonic() - last_pss >= self.pss_every:
                last_pss = time.monotonic()
                pss = sum(_field_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
                self.peak_pss_kb = max(self.peak_pss_kb, pss)
            for p in pids:
                cpu = _cpu_s(p)
                if cpu is not None:
                    self._cpu[p] = cpu
                if p not in self._cpu or p in self.workers or p in self.roots:
                    continue
                try:
                    with open(f"/proc/{p}/cmdline", "rb") as f:
                        if self.worker_mark in f.read():
                            self.workers.add(p)
                except OSError:
                    pass
            self.max_processes = max(self.max_processes, len(pids))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_prep(tar: str, out: str, workers: int, log_path: str, cluster: DaskCluster | None = None) -> dict:
    """One prep process on the local runner, or on ``cluster`` (already started): its figures."""
    cmd = [sys.executable, "-m", "speechid.pipelines.prep", "--input", tar, "--output", out]
    if cluster is not None:
        cmd += ["--runner", "DaskRunner", "--dask_scheduler_file", cluster.scheduler_file]
    elif workers > 1:
        cmd += ["--direct_running_mode", "multi_processing", "--direct_num_workers", str(workers)]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        roots = [proc.pid] + (cluster.pids if cluster is not None else [])
        # dask's worker processes are started by its nannies through multiprocessing (spawn)
        with TreeSampler(roots, worker_mark=b"spawn_main" if cluster is not None else b"sdk_worker") as tree:
            code = proc.wait()
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"prep failed (exit {code}); see {log_path}")
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    figures = {
        "wall_s": round(wall, 2),
        "cpu_s": round(tree.cpu_s, 2),
        "records": sum(manifest["records"].values()),
        "balanced": manifest["reconciliation"]["balanced"],
        "peak_tree_rss_mb": round(tree.peak_rss_kb / 1024, 1),
        "peak_tree_pss_mb": round(tree.peak_pss_kb / 1024, 1) if tree.peak_pss_kb else None,
        "processes": tree.max_processes,
        "worker_cpu_s": tree.worker_cpu_s(workers),
        "workers_busy": [round(c / wall, 2) for c in tree.worker_cpu_s(workers)],
    }
    if cluster is not None:
        figures["cluster_start_s"] = cluster.start_s
    return figures


class DaskCluster:
    """A loopback dask cluster for one run: ``dask scheduler`` and ``dask worker --nworkers N --nthreads 1``
    from this Python environment, 127.0.0.1 only, no dashboard; stopped (scheduler and workers) on exit."""

    def __init__(self, workdir: str, workers: int, log_path: str):
        self.scheduler_file = os.path.join(workdir, "dask-scheduler.json")
        self._workers = workers
        self._log_path = log_path
        self._procs: list[subprocess.Popen] = []
        self.start_s = 0.0

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def __enter__(self):
        from distributed import Client

        if os.path.exists(self.scheduler_file):
            os.remove(self.scheduler_file)
        # One TensorFlow thread per single-threaded worker, glibc's malloc thresholds fixed: what the local
        # runner's worker processes get (speechid.pipelines.jobs, prep's _MALLOC_ENV).
        env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
               "MALLOC_MMAP_THRESHOLD_": str(128 * 1024), "MALLOC_TRIM_THRESHOLD_": str(256 * 1024)}
        dask = [sys.executable, "-m", "dask"]  # the `dask` command of this environment
        start = time.perf_counter()
        with open(self._log_path, "w") as log:
            self._procs.append(subprocess.Popen(
                [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                 "--scheduler-file", self.scheduler_file], stdout=log, stderr=subprocess.STDOUT, env=env))
            while not os.path.exists(self.scheduler_file):
                if self._procs[0].poll() is not None:
                    raise SystemExit(f"dask scheduler failed; see {self._log_path}")
                time.sleep(0.1)
            self._procs.append(subprocess.Popen(
                [*dask, "worker", "--scheduler-file", self.scheduler_file, "--nworkers", str(self._workers),
                 "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                stdout=log, stderr=subprocess.STDOUT, env=env))
        with Client(scheduler_file=self.scheduler_file, timeout=60) as client:
            client.wait_for_workers(self._workers, timeout=120)
        self.start_s = round(time.perf_counter() - start, 2)
        return self

    def __exit__(self, *exc):
        for proc in reversed(self._procs):  # workers first: the nannies stop their workers on SIGTERM
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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
        "workers_busy": tries[-1]["workers_busy"],
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=300, help="clips in the 1x archive")
    ap.add_argument("--times", type=int, default=10, help="copies of every clip in the large archive")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="interleaved rounds (median time, worst memory)")
    ap.add_argument("--big-gb", type=float, default=0, help="instead: one run over an archive of at least this size")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "speechid-bench-prep"))
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--runner", choices=("local", "dask"), default="local",
                    help="dask: the local runner and a dask cluster of --workers workers, side by side")
    args = ap.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    base = corpus(args.workdir, args.clips, args.seed)
    if args.big_gb:
        print(json.dumps(big_run(args, base), indent=2))
        return
    if args.runner == "dask":
        print(json.dumps(dask_side_by_side(args, base), indent=2))
        return
    large_tar = repeat_archive(base, os.path.join(args.workdir, f"repeat-{args.clips}x{args.times}.tar.gz"), args.times)
    tars = {"1x": base, f"{args.times}x": large_tar}
    clips = read_clips(base)

    tries: dict[str, list[dict]] = {k: [] for k in tars}
    plain_runs = []
    for _ in range(args.repeat):
        for k, tar in tars.items():
            log = os.path.join(args.workdir, f"prep-{k}.log")
            tries[k].append(run_prep(tar, os.path.join(args.workdir, f"out-{k}"), args.workers, log))
        plain_runs.append(plain_loop(clips))
    small, large = (_summary(tries[k]) for k in tars)
    plain = max(r[0] for r in plain_runs)
    plain_cpu = max(r[1] for r in plain_runs)

    extra = large["clips"] - small["clips"]
    e2e = large["clips"] / large["wall_s"]
    marginal = extra / (large["wall_s"] - small["wall_s"])
    marginal_cpu = extra / (large["cpu_s"] - small["cpu_s"])
    rss_ratio = large["peak_tree_rss_mb"] / small["peak_tree_rss_mb"]
    result = {
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "archive_mb": {k: round(os.path.getsize(t) / 2**20, 1) for k, t in tars.items()},
        "runs": {k: v for k, v in zip(tars, (small, large), strict=True)},
        "plain_loop_clips_per_s": round(plain, 1),
        "plain_loop_clips_per_cpu_s": round(plain_cpu, 1),
        "pipeline_clips_per_s": round(e2e, 1),
        "pipeline_marginal_clips_per_s": round(marginal, 1),
        "pipeline_marginal_clips_per_cpu_s": round(marginal_cpu, 1),
        "ratio_per_core": round(e2e / args.workers / plain, 3),
        "ratio_per_core_marginal": round(marginal / args.workers / plain, 3),
        "ratio_per_core_cpu_marginal": round(marginal_cpu / plain_cpu, 3),
        "peak_rss_ratio": round(rss_ratio, 3),
        "targets_met": {
            "peak_rss_ratio<=1.3": rss_ratio <= 1.3,
            "ratio_per_core_marginal>=0.5": marginal / args.workers / plain >= 0.5,
            "ratio_per_core_cpu_marginal>=0.5": marginal_cpu / plain_cpu >= 0.5,
            "every_worker_busy": len(large["workers_busy"]) == args.workers and min(large["workers_busy"]) >= 0.3,
        },
    }
    if small["peak_tree_pss_mb"] and large["peak_tree_pss_mb"]:
        result["peak_pss_ratio"] = round(large["peak_tree_pss_mb"] / small["peak_tree_pss_mb"], 3)
    print(json.dumps(result, indent=2))


def dask_side_by_side(args, base: str) -> dict:
    """The same archives (1x and --times x) prepared on the local runner and on a dask cluster, interleaved."""
    large_tar = repeat_archive(base, os.path.join(args.workdir, f"repeat-{args.clips}x{args.times}.tar.gz"), args.times)
    tars = {"1x": base, f"{args.times}x": large_tar}
    tries: dict[str, dict[str, list[dict]]] = {r: {k: [] for k in tars} for r in ("local", "dask")}
    for _ in range(args.repeat):
        for k, tar in tars.items():
            out = os.path.join(args.workdir, f"out-{k}")
            tries["local"][k].append(run_prep(tar, out, args.workers, os.path.join(args.workdir, f"prep-{k}.log")))
            with DaskCluster(args.workdir, args.workers, os.path.join(args.workdir, f"dask-cluster-{k}.log")) as c:
                tries["dask"][k].append(run_prep(tar, out + "-dask", args.workers,
                                                 os.path.join(args.workdir, f"prep-dask-{k}.log"), c))
    runs = {r: {k: _summary(t) | ({"cluster_start_s": max(x["cluster_start_s"] for x in t)} if r == "dask" else {})
                for k, t in by_tar.items()} for r, by_tar in tries.items()}

    def rates(by_tar: dict) -> dict:
        small, large = (by_tar[k] for k in tars)
        marginal = (large["clips"] - small["clips"]) / (large["wall_s"] - small["wall_s"])
        return {"clips_per_s": round(large["clips"] / large["wall_s"], 1),
                "marginal_clips_per_s": round(marginal, 1),
                "peak_tree_rss_mb": {k: by_tar[k]["peak_tree_rss_mb"] for k in tars},
                "peak_rss_ratio": round(large["peak_tree_rss_mb"] / small["peak_tree_rss_mb"], 3)}

    local, dask = rates(runs["local"]), rates(runs["dask"])
    marginal = dask["marginal_clips_per_s"] / local["marginal_clips_per_s"]
    return {
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "archive_mb": {k: round(os.path.getsize(t) / 2**20, 1) for k, t in tars.items()},
        "runs": runs,
        "local": local,
        "dask": dask,
        "dask_vs_local": round(dask["clips_per_s"] / local["clips_per_s"], 3),
        "dask_vs_local_marginal": round(marginal, 3),
        "targets_met": {
            "dask_vs_local_marginal>=0.7": marginal >= 0.7,
            "dask_peak_rss_ratio<=1.3": dask["peak_rss_ratio"] <= 1.3,
            "both_balanced": all(v["balanced"] for by_tar in runs.values() for v in by_tar.values()),
        },
    }


def big_run(args, base: str) -> dict:
    """One prep over an archive of at least ``--big-gb`` GB: the base clips as 48 kHz stereo WAV, repeated."""
    target = int(args.big_gb * 1e9)
    tar = repeat_archive(base, os.path.join(args.workdir, f"big-{args.big_gb:g}gb.tar.gz"), 1, target, wav=True)
    out = os.path.join(args.workdir, "out-big")
    run = run_prep(tar, out, args.workers, os.path.join(args.workdir, "prep-big.log"))
    return {
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "archive_gb": round(os.path.getsize(tar) / 1e9, 2),
        "run": run,
        "clips_per_s": round(run["records"] / run["wall_s"], 1),
        "machine_memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
    }


if __name__ == "__main__":
    main()
