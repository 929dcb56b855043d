"""Build a FAISS index over an embeddings directory (``speechid index``).

Which index (``kind="auto"``), and why:

* ``flat`` (IndexFlatL2 / IndexFlatIP) up to ``FLAT_MAX`` = 200k vectors. Exact: every answer is the true
  one, nothing to train or tune, and the file is the raw vectors, which FAISS memory-maps. A query costs
  N x D multiply-adds (~2 ms on one core at 100k x 128, ~4 ms at 200k), and deduplication is an all-pairs
  range search done with BLAS (N^2 x D: ~70 CPU-seconds at 100k, ~4.5 CPU-minutes at 200k). Past that,
  both grow too fast.
* ``ivf`` (IVF-Flat) above it: k-means cells (``nlist`` about 4 sqrt(N), trained on a random sample of
  64 points per cell) and a search that scans ``nprobe`` cells only (16, i.e. 0.4% of them at 1M).
  Vectors are stored uncompressed, so every distance it returns is exact and only neighbours in unscanned
  cells can be missed. Speaker embeddings sit in tight per-voice clusters, which cells follow well: at 1M
  (benchmarks/bench_index.py, against exact search) a query takes ~1 ms and finds the exact nearest clip
  ~97% of the time, and dedup, scanning 8 cells per row, finds ~99% of the pairs under the threshold.
  It suits deduplication best: a range search visits the same cells however many neighbours there are,
  and the inverted lists memory-map (faiss.IO_FLAG_MMAP) for a query service.
* ``hnsw`` (IndexHNSWFlat) on request: the fastest single queries at high recall, but building is slower
  (a graph insertion per vector), the graph adds ~M x 8 bytes per vector, and its range search is bounded
  by the search beam (``efSearch``), so a voice with more clips than the beam loses pairs in dedup.
  Choose it for a query service, not for deduplication.

The build streams the Parquet shards twice (IVF: three times, the first for the training sample): once for
the metadata columns, once for the embeddings, in blocks; it checks every vector is unit length and that
all rows come from one model. The output directory (see ``speechid.indexing.store``) appears atomically.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from speechid import embedding_table as et
from speechid import outputs
from speechid.errors import ConfigError
from speechid.indexing import store
from speechid.operating_points import OperatingPoints, clip_threshold

FLAT_MAX = 200_000
TRAIN_POINTS_PER_CELL = 64
DEFAULT_HNSW_M = 32


@dataclass(frozen=True)
class IndexSummary:
    """What ``build_index`` wrote."""

    path: str
    kind: str
    metric: str
    count: int
    dimension: int
    speakers: int
    model_id: str
    threshold: float | None  # the default "same person" distance (the model's seed point, or the one given)
    calibrated: bool  # the model's operating points travel with the index
    params: dict = field(default_factory=dict)
    seconds: float = 0.0

    def __str__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return (
            f"{self.path}: {self.kind} index{f' ({params})' if params else ''} over {self.count} clips of "
            f"{self.speakers} speakers, "
            f"dim {self.dimension}, metric {self.metric}, model {self.model_id}, built in {self.seconds:.1f} s; "
            + (f"default threshold {self.threshold:.3f}" if self.threshold is not None else "no default threshold")
            + (" (the model's operating points)" if self.calibrated else " (given, not calibrated)"
               if self.threshold is not None else " (give --model or --threshold)")
        )


def choose_kind(count: int, flat_max: int = FLAT_MAX) -> str:
    """``auto``: exact up to ``flat_max`` vectors, IVF-Flat above (see the module docstring)."""
    return "flat" if count <= flat_max else "ivf"


def ivf_nlist(count: int) -> int:
    """About 4 sqrt(N) cells, and at least 39 training points per cell (FAISS warns below that)."""
    return int(max(1, min(round(4 * math.sqrt(count)), count // 39)))


def ivf_nprobe(nlist: int) -> int:
    """Cells scanned per query (and per row in dedup): 16 up to 4096 cells (N ~ 1M), then nlist / 256.

    benchmarks/bench_index.py at 1M: range-search pair recall ~0.98 at 16 (~0.96 at 8), recall@1 > 0.98."""
    return int(min(nlist, max(16, round(nlist / 256))))


def make_index(kind: str, dim: int, metric: str, count: int, *, nlist: int | None = None,
               nprobe: int | None = None, hnsw_m: int = DEFAULT_HNSW_M, ef_construction: int = 64,
               ef_search: int = 128, seed: int = 0):
    """An empty FAISS index of ``kind`` and the parameters that describe it (stored in meta.json)."""
    import faiss

    fmetric = store.faiss_metric(metric)
    if kind == "flat":
        return faiss.IndexFlat(dim, fmetric), {}
    if kind == "ivf":
        nlist = int(nlist or ivf_nlist(count))
        nprobe = int(nprobe or ivf_nprobe(nlist))
        # Dedup range-searches every row, so a pair is found from either end: half the cells per row gives
        # it about the pair recall the full nprobe gives one query (1M: 0.987 at 8 of 4000 cells).
        dedup_nprobe = max(1, (nprobe + 1) // 2)
        quantizer = faiss.IndexFlat(dim, fmetric)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, fmetric)  # the wrapper keeps quantizer alive
        index.cp.seed = int(seed)
        # For inner product, spherical k-means keeps centroids unit length, so "nearest cell" means the
        # same thing as for the vectors.
        index.cp.spherical = metric == "ip"
        return index, {"nlist": nlist, "nprobe": nprobe, "dedup_nprobe": dedup_nprobe}
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(hnsw_m), fmetric)
        index.hnsw.efConstruction = int(ef_construction)
        return index, {"M": int(hnsw_m), "ef_construction": int(ef_construction), "ef_search": int(ef_search)}
    raise ConfigError(f"index kind {kind!r}: expected auto or one of {', '.join(store.KINDS)}")


def apply_search_params(index, kind: str, params: dict) -> None:
    """Set the query-time knobs stored in meta.json (nprobe for IVF, efSearch for HNSW)."""
    import faiss

    if kind == "ivf" and "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
    elif kind == "hnsw" and "ef_search" in params:
        index.hnsw.efSearch = int(params["ef_search"])


def _read_metadata(embeddings_dir: str, batch_size: int) -> tuple[pa.Table, str]:
    """Metadata columns of every row (no embeddings) and the single model_id they share."""
    batches, model_id = [], None
    columns = ["clip_id", "source", "speaker_id", "split", "model_id"]
    for path, offset, batch in et.iter_file_blocks(embeddings_dir, columns, batch_size):
        ids = pc.unique(batch.column("model_id")).to_pylist()
        for mid in ids:
            if model_id is None:
                model_id = mid
            elif mid != model_id:
                raise store.ModelMismatchError(
                    f"{path}: rows from model_id {mid} after rows from model_id {model_id} (from row {offset}); "
                    "an index holds embeddings of one model only"
                )
        batches.append(batch.drop_columns(["model_id"]))
    table = pa.Table.from_batches(batches)
    table = table.add_column(0, "row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    return table, model_id


def _training_sample(embeddings_dir: str, count: int, size: int, batch_size: int, seed: int) -> np.ndarray:
    """``size`` random rows (seeded), gathered in one streaming pass."""
    rows = np.sort(np.random.default_rng(seed).choice(count, size=size, replace=False))
    out, start = [], 0
    for x in et.iter_embeddings(embeddings_dir, batch_size):
        lo, hi = np.searchsorted(rows, [start, start + len(x)])
        out.append(x[rows[lo:hi] - start])
        start += len(x)
    return np.ascontiguousarray(np.concatenate(out))


def _speaker_table(sums: np.ndarray, counts: np.ndarray, speakers: pa.Array) -> pa.Table:
    """Per speaker: its clip count, re-normalised centroid, and the length of its raw mean embedding (which
    gives its spread: mean |x - mean|^2 = 1 - |mean|^2 for unit vectors; ``speechid.separation``)."""
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    centroids = (sums / np.maximum(norms, 1e-12)).astype(np.float32)
    return pa.table(
        {
            "speaker_id": speakers,
            "n_clips": pa.array(counts.astype(np.int64)),
            "centroid": pa.FixedSizeListArray.from_arrays(pa.array(centroids.reshape(-1)), sums.shape[1]),
            "mean_norm": pa.array((norms[:, 0] / np.maximum(counts, 1)).astype(np.float64)),
        }
    )


def speaker_codes(speaker_ids: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """speaker_id column -> (int64 code per row, -1 where null; the distinct speaker ids, by first use)."""
    arr = speaker_ids.combine_chunks() if isinstance(speaker_ids, pa.ChunkedArray) else speaker_ids
    encoded = arr.dictionary_encode()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, encoded.dictionary


def add_by_code(sums: np.ndarray, counts: np.ndarray, codes: np.ndarray, x: np.ndarray) -> None:
    """sums[c] += x rows with code c, counts[c] += their number; code -1 (no speaker) is skipped."""
    keep = codes >= 0
    codes, x = codes[keep], x[keep]
    if not codes.size:
        return
    order = np.argsort(codes, kind="stable")
    codes = codes[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    sums[codes[starts]] += np.add.reduceat(x[order].astype(np.float64), starts, axis=0)
    counts[codes[starts]] += np.diff(np.r_[starts, codes.size])


def build_index(embeddings_dir: str | os.PathLike, output_dir: str | os.PathLike, *, kind: str = "auto",
                metric: str = "l2", operating_points: OperatingPoints | None = None,
                operating_points_model_id: str | None = None, threshold: float | None = None,
                batch_size: int = et.DEFAULT_BATCH,
                nlist: int | None = None, nprobe: int | None = None, hnsw_m: int = DEFAULT_HNSW_M,
                ef_construction: int = 64, ef_search: int = 128, train_size: int | None = None,
                flat_max: int = FLAT_MAX, seed: int = 0) -> IndexSummary:
    """Index every embedding of ``embeddings_dir`` into ``output_dir`` (replaced if it is an index).

    ``kind``: auto | flat | ivf | hnsw. ``metric``: "l2" or "ip" (the same neighbours on unit vectors; the
    threshold is converted). ``operating_points``: the model's (``speechid.model.model_dir.operating_points``),
    stored in meta.json so dedup and query decide as the model does; ``operating_points_model_id`` (the
    model's id) must then match the embeddings'. ``threshold`` (Euclidean), when given, is this index's
    default instead of the model's seed point. With neither, dedup and query need a threshold each time.
    """
    t0 = time.perf_counter()
    import faiss

    embeddings_dir = os.fspath(embeddings_dir)
    read = outputs.snapshot([embeddings_dir])  # publishing refuses if another embed replaces them meanwhile
    store.check_metric(metric)  # both before any work
    if threshold is not None:
        store.check_threshold(threshold)
    count, dim = et.describe(embeddings_dir)
    if count == 0:
        raise et.EmbeddingTableError(f"{embeddings_dir}: the shards hold no rows")
    if kind == "auto":
        kind = choose_kind(count, flat_max)
    index, params = make_index(kind, dim, metric, count, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m,
                               ef_construction=ef_construction, ef_search=ef_search, seed=seed)

    clips, model_id = _read_metadata(embeddings_dir, batch_size)
    if operating_points is not None and operating_points_model_id is not None:
        store.check_model_id(model_id, operating_points_model_id, embeddings_dir)
    codes, speakers = speaker_codes(clips.column("speaker_id"))

    if not index.is_trained:
        size = min(count, int(train_size or TRAIN_POINTS_PER_CELL * params["nlist"]))
        index.train(_training_sample(embeddings_dir, count, size, batch_size, seed))
        params["train_size"] = size

    sums = np.zeros((len(speakers), dim), dtype=np.float64)
    counts = np.zeros(len(speakers), dtype=np.int64)
    start = 0
    for x in et.iter_embeddings(embeddings_dir, batch_size):
        index.add(x)
        add_by_code(sums, counts, codes[start:start + len(x)], x)
        start += len(x)
    apply_search_params(index, kind, params)

    meta = {
        "format": store.FORMAT,
        "version": store.FORMAT_VERSION,
        "dimension": int(dim),
        "count": int(count),
        "kind": kind,
        "params": params,
        "metric": metric,
        "distance": "euclidean",  # what every output states; the threshold is Euclidean too
        "threshold": None if threshold is None else float(threshold),
        "operating_points": None if operating_points is None else operating_points.to_dict(),
        "model_id": model_id,
        "speakers": int(len(speakers)),
        "embeddings": os.path.abspath(embeddings_dir),
        "faiss_version": faiss.__version__,
    }
    # never replaces what it did not write: an index is the folder marked by store.OUTPUT_MARK
    with outputs.staged(os.fspath(output_dir), store.OUTPUT_MARK, [embeddings_dir], read=read) as tmp:
        faiss.write_index(index, os.path.join(tmp, store.INDEX_FILE))
        pq.write_table(clips, os.path.join(tmp, store.CLIPS_FILE))
        pq.write_table(_speaker_table(sums, counts, speakers), os.path.join(tmp, store.SPEAKERS_FILE))
        meta["build_seconds"] = round(time.perf_counter() - t0, 3)
        outputs.write_json(os.path.join(tmp, store.META_FILE), meta)  # last: its presence marks a whole index
    return IndexSummary(
        path=os.path.abspath(os.fspath(output_dir)), kind=kind, metric=metric, count=int(count), dimension=int(dim),
        speakers=int(len(speakers)), model_id=model_id, threshold=clip_threshold(operating_points, threshold)[0],
        calibrated=operating_points is not None and threshold is None, params=dict(params),
        seconds=meta["build_seconds"],
    )
