"""Index benchmark: build, query latency/throughput and dedup on seeded clustered unit vectors; prints JSON.

    python benchmarks/bench_index.py                       # N = 100k
    python benchmarks/bench_index.py --n 100000 --n 1000000

Data (speechid.indexing.synthetic): speakers with geometric clip counts (mean 20, at most 400), centres in
8 families, per-speaker noise so within-speaker distances straddle the 0.83 threshold; 1% of speakers
(with 4+ clips) are split under a second client_id (planted aliases, the dedup ground truth). Rows are
shuffled (a corpus is ordered by archive and path, not by voice). Queries are fresh clips of indexed
speakers, not indexed vectors. Wall and process CPU seconds are both reported: on a shared machine
CPU / cores is what a step would take with the cores to itself.

Every approximate figure is measured against exact search (faiss.knn for recall@1, IndexFlat range search
for pair recall, on a random subset of rows when N is large). Targets (2 cores): 1M vectors deduplicated in
<= 5 minutes with pair recall >= 0.95; single-query p50 <= 2 ms at 1M.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

import speechid  # noqa: F401  (environment for TF-free imports below)
from speechid import embedding_table as et
from speechid.config import THRESHOLD, l2_to_squared
from speechid.indexing import SpeakerIndex, build_index, dedup, synthetic


def make_corpus(n: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    sizes = synthetic.heavy_tailed_sizes(n, mean=20.0, max_size=400, seed=seed)
    centres = synthetic.speaker_centres(len(sizes), dim, rng=rng)
    spreads = rng.uniform(0.4, 0.6, size=len(sizes)).astype(np.float32)
    x, labels = synthetic.clips_around(centres, sizes, spreads, rng)
    ids = np.array([f"spk{i:07d}" for i in range(len(sizes))], dtype=object)[labels]
    # Planted aliases: the second half of a few speakers' clips under another client_id.
    eligible = np.flatnonzero(sizes >= 4)
    aliased = rng.choice(eligible, size=max(1, len(sizes) // 100), replace=False)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    for s in aliased:
        half = starts[s] + sizes[s] // 2
        ids[half:starts[s] + sizes[s]] = f"spk{s:07d}-alias"
    truth = {i: i.removesuffix("-alias") for i in set(ids)}
    # A corpus lists clips by archive and path, not by voice: shuffle so row order carries no locality.
    perm = rng.permutation(len(x))
    return x[perm], ids[perm], truth, (centres, spreads, sizes)


def write_shards(x, ids, folder: str, shards: int = 4) -> None:
    n = len(x)
    bounds = np.linspace(0, n, shards + 1).astype(int)
    for s in range(shards):
        a, b = bounds[s], bounds[s + 1]
        et.write_table(os.path.join(folder, et.part_name(s, shards)), {
            "clip_id": [f"clip{i:08d}.mp3" for i in range(a, b)], "source": "bench", "speaker_id": list(ids[a:b]),
            "split": "train", "duration_s": np.full(b - a, 4.0, np.float32), "n_windows": np.full(b - a, 2, np.int32),
            "embedding": x[a:b], "model_id": "bench-model",
        })


def log(msg: str) -> None:
    print(f"[bench_index {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Timer:
    """Wall and process CPU seconds (all threads) of a block: on a shared machine, CPU / cores is what the
    step would take with the cores to itself."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = round(time.perf_counter() - self.wall, 2)
        self.cpu = round(time.process_time() - self.cpu, 2)


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50": round(float(np.percentile(a, 50)), 4), "p99": round(float(np.percentile(a, 99)), 4)}


def run_one(n: int, args, work: str) -> dict:
    import faiss

    t = time.perf_counter()
    x, ids, truth, (centres, spreads, sizes) = make_corpus(n, args.dim, args.seed)
    emb_dir = os.path.join(work, f"emb-{n}")
    write_shards(x, ids, emb_dir)
    out = {"n": n, "dim": args.dim, "speakers": int(len(sizes)), "threads": faiss.omp_get_max_threads(),
           "data_s": round(time.perf_counter() - t, 2)}

    log(f"n={n}: data written ({out['data_s']} s); building")
    with Timer() as t:
        summary = build_index(emb_dir, os.path.join(work, f"index-{n}"), kind=args.kind, nprobe=args.nprobe,
                              threshold=args.threshold)  # seeded vectors: no model, so no operating points
    out.update(kind=summary.kind, params=summary.params, build_s=t.wall, build_cpu_s=t.cpu)
    log(f"n={n}: built {summary.kind} {summary.params} in {t.wall} s; queries")
    shutil.rmtree(emb_dir)

    idx = SpeakerIndex.load(os.path.join(work, f"index-{n}"))
    rng = np.random.default_rng(args.seed + 1)
    who = rng.choice(len(sizes), size=args.queries, p=sizes / sizes.sum())
    xq, _ = synthetic.clips_around(centres[who], np.ones(len(who), np.int64), spreads[who], rng)

    # Single queries: SpeakerIndex.search (FAISS on one thread for small batches, Euclidean distances), the
    # full query API (metadata, typed results), and raw FAISS with every OpenMP thread for comparison.
    def timed(fn):
        ms = []
        for q in xq[: args.single]:
            t = time.perf_counter()
            fn(q[None, :])
            ms.append((time.perf_counter() - t) * 1e3)
        return percentiles(ms)

    out["single_query_ms"] = timed(lambda q: idx.search(q, 10))
    out["api_query_ms"] = timed(lambda q: idx.query(q, k=10))
    out["single_query_ms_faiss_all_threads"] = timed(lambda q: idx.index.search(q, 10))

    t = time.perf_counter()
    _, i_approx = idx.index.search(xq, 10)
    out["batch_qps"] = round(len(xq) / (time.perf_counter() - t), 1)
    _, i_exact = faiss.knn(xq, x, 1)
    out["recall_at_1"] = round(float((i_approx[:, 0] == i_exact[:, 0]).mean()), 4)

    log(f"n={n}: queries done (recall@1 {out['recall_at_1']}); dedup")
    with Timer() as t:
        res = dedup(idx, os.path.join(work, f"dedup-{n}"), truth=truth, nprobe=args.dedup_nprobe,
                    merge_threshold=args.merge_threshold)
    out["dedup_s"], out["dedup_cpu_s"] = t.wall, t.cpu
    log(f"n={n}: dedup {t.wall} s wall, {t.cpu} s CPU; exact pair check")
    s = res.summary
    out["dedup"] = {
        "seconds": s["seconds"], "pairs": s["pairs_under_threshold"], "clip_clusters": s["clip_clusters"],
        "single_linkage_clusters": s["single_linkage_clusters"], "merged_groups": s["merged_groups"],
        "suspicious_clips": s["suspicious_clips"],
        "speaker_merge_precision": s["scores"]["speakers"]["precision"],
        "speaker_merge_recall": s["scores"]["speakers"]["recall"],
        "clip_pair_precision": s["scores"]["clips"]["precision"],
        "clip_pair_recall": s["scores"]["clips"]["recall"],
    }

    # Pair recall of the graph dedup clustered, against exact range search from a random subset of rows.
    rows = np.sort(rng.choice(n, size=min(n, args.exact_subset), replace=False))
    flat = faiss.IndexFlatL2(args.dim)
    flat.add(x)
    lims, _, nbr = flat.range_search(x[rows], l2_to_squared(THRESHOLD))
    q = np.repeat(rows, np.diff(lims.astype(np.int64)))
    keep = nbr != q
    q, nbr = q[keep], nbr[keep]
    exact_keys = np.minimum(q, nbr) * n + np.maximum(q, nbr)
    found = np.isin(exact_keys, res.graph.keys())
    out["dedup"]["exact_subset_rows"] = int(rows.size)
    out["dedup"]["exact_pairs"] = int(exact_keys.size)
    out["dedup"]["pair_recall"] = round(float(found.mean()) if found.size else 1.0, 4)
    shutil.rmtree(os.path.join(work, f"index-{n}"))
    shutil.rmtree(os.path.join(work, f"dedup-{n}"))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, action="append", help="vectors (repeatable; default 100000)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--kind", default="auto", choices=["auto", "flat", "ivf", "hnsw"])
    p.add_argument("--nprobe", type=int, default=None, help="IVF cells per query (default: the build's)")
    p.add_argument("--dedup-nprobe", type=int, default=None, help="IVF cells for dedup's range search")
    p.add_argument("--queries", type=int, default=10_000, help="batch queries (fresh clips)")
    p.add_argument("--single", type=int, default=1000, help="single queries timed one by one")
    p.add_argument("--exact-subset", type=int, default=2000, help="rows whose exact range search checks dedup")
    p.add_argument("--threads", type=int, default=0, help="FAISS OpenMP threads (0: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=0.83,
                   help="clip-level Euclidean threshold (the vectors come from no model, so no operating points)")
    p.add_argument("--merge-threshold", type=float, default=2.0,
                   help="speaker-level separation under which dedup merges two ids (about 1 for one voice)")
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    work = args.workdir or tempfile.mkdtemp(prefix="bench_index-")
    os.makedirs(work, exist_ok=True)
    load = os.getloadavg()
    try:
        results = [run_one(n, args, work) for n in (args.n or [100_000])]
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    json.dump({"benchmark": "index", "faiss": faiss.__version__, "cpus": os.cpu_count(),
               "loadavg_1m_start_end": [round(load[0], 2), round(os.getloadavg()[0], 2)], "results": results},
              sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
