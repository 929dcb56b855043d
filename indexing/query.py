"""Nearest clips and speakers for query embeddings: ``SpeakerIndex`` (``speechid query``).

    >>> index = speechid.SpeakerIndex.load("index/cv-en")          # memory-mapped where FAISS allows
    >>> [r] = index.query(vector, k=5)                                # nearest clips
    >>> r.matches[0].clip_id, r.matches[0].distance, r.matches[0].verdict
    >>> index.query(vector, k=3, by="speaker")                       # nearest speaker centroids
    >>> index.query_file(["who.mp3"], speechid.Encoder.load("models/cv-en"))

Distances are Euclidean between unit vectors whatever the index metric; the verdict is "same" when the
distance is below the threshold (``resolve_threshold``: the one given, else the index's default: a threshold
set at build, else the model's operating points in meta.json), and every match's ``explanation`` names that
threshold and what it means ("same: 0.612 < 0.741 (FAR 1.7% point (the original project's specificity): FAR
1.7% / FRR 38.1% on dev speakers)"). Speakers are found by centroid (the mean of the speaker's clip
embeddings, re-normalised); a speaker match is DECIDED at the speaker level: the separation
(``speechid.separation``) of the query clip from the speaker's clips, which weighs the distance by the
speaker's own spread, against the model's speaker-level point for one clip (a clip 0.7 from a loose voice's
centroid can be that voice, 0.4 from a tight voice's need not be). An index without speaker-level points, or
whose speakers.parquet has no ``mean_norm``, or a ``threshold`` given by the caller, decides by the Euclidean
distance to the centroid, and says so.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from speechid import embedding_table as et
from speechid import separation
from speechid.errors import ConfigError, SpeechIdError
from speechid.indexing import store
from speechid.indexing.build import apply_search_params
from speechid.operating_points import (
    OperatingPoints,
    clip_threshold,
    is_same,
    pct,
    point_words,
    verdict_text,
    verdict_word,
)

BY = ("clip", "speaker")
SMALL_BATCH = 16  # queries per call below which FAISS runs on one thread (see _one_thread_if_small)
_THREADS_LOCK = threading.Lock()


@contextmanager
def _one_thread_if_small(nq: int) -> Iterator[None]:
    """Run a handful of queries on one OpenMP thread.

    One query is too little work to share: FAISS's fork/join costs more than it saves, and on a busy machine
    each parallel region waits for a free core (measured: flat 100k, p50 34 ms with 2 threads vs 1.8 ms
    with 1 while other jobs ran). FAISS only has a process-wide thread count, so it is set and restored
    under a lock; large batches keep every thread.
    """
    if nq >= SMALL_BATCH:
        yield
        return
    import faiss

    with _THREADS_LOCK:
        previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(previous)


IDENTICAL_DISTANCE = 1e-3  # closer than this: the same audio (see ClipMatch.identical)


@dataclass(frozen=True)
class ClipMatch:
    """One neighbouring clip. ``distance`` is Euclidean between unit embeddings."""

    rank: int
    row: int
    clip_id: str
    speaker_id: str | None
    source: str
    distance: float
    threshold: float
    meaning: str = ""  # what the threshold means (its dev-speaker error rates), "" when uncalibrated

    @property
    def same(self) -> bool:
        return is_same(self.distance, self.threshold)

    @property
    def verdict(self) -> str:
        return verdict_word(self.distance, self.threshold)

    @property
    def explanation(self) -> str:
        return verdict_text(self.distance, self.threshold, self.meaning or None)

    @property
    def identical(self) -> bool:
        """The query's audio is this clip's (the clip itself, or a byte-for-byte copy): unit embeddings of
        two recordings, even of one voice, are never this close; one file embedded twice is (up to float
        rounding between the batch pipeline and the Encoder)."""
        return self.distance < IDENTICAL_DISTANCE

    def to_dict(self) -> dict:
        return {"rank": self.rank, "clip_id": self.clip_id, "speaker_id": self.speaker_id, "source": self.source,
                "euclidean_distance": round(self.distance, 6), "verdict": self.verdict,
                "explanation": self.explanation, "identical_audio": self.identical}


@dataclass(frozen=True)
class SpeakerMatch:
    """One neighbouring speaker. ``distance`` is Euclidean to the speaker's re-normalised centroid;
    ``separation`` (None when the decision is by distance) is what ``threshold`` is compared with."""

    rank: int
    speaker_id: str
    n_clips: int
    distance: float
    threshold: float
    meaning: str = ""  # what the threshold means (its dev-speaker error rates), "" when uncalibrated
    separation: float | None = None

    @property
    def score(self) -> float:
        return self.distance if self.separation is None else self.separation

    @property
    def same(self) -> bool:
        return is_same(self.score, self.threshold)

    @property
    def verdict(self) -> str:
        return verdict_word(self.score, self.threshold)

    @property
    def explanation(self) -> str:
        text = verdict_text(self.score, self.threshold, self.meaning or None)
        if self.separation is None:
            return text
        word, rest = text.split(": ", 1)
        return f"{word}: separation {rest}; distance to centroid {self.distance:.3f}"

    def to_dict(self) -> dict:
        out = {"rank": self.rank, "speaker_id": self.speaker_id, "n_clips": self.n_clips,
               "euclidean_distance": round(self.distance, 6), "verdict": self.verdict,
               "explanation": self.explanation}
        if self.separation is not None:
            out["separation"] = round(self.separation, 6)
        return out


@dataclass(frozen=True)
class QueryResult:
    """The k nearest clips or speakers of one query (a path, or the query's position for vectors)."""

    query: str
    by: str
    threshold: float
    meaning: str
    matches: tuple[ClipMatch, ...] | tuple[SpeakerMatch, ...]

    @property
    def best(self) -> ClipMatch | SpeakerMatch | None:
        return self.matches[0] if self.matches else None

    def to_dict(self) -> dict:
        return {"query": self.query, "by": self.by, "distance": "euclidean", "threshold": self.threshold,
                "threshold_meaning": self.meaning or "given, not calibrated",
                "matches": [m.to_dict() for m in self.matches]}


def _read_flags(kind: str, mmap: bool) -> int:
    import faiss

    if not mmap:
        return 0
    # IVF: inverted lists mapped from the file (OnDiskInvertedLists). Flat and HNSW: the vector storage
    # (IndexFlatCodes) mapped in place. The two flags do not combine (FAISS refuses IVF with both).
    if kind == "ivf":
        return faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
    return faiss.IO_FLAG_MMAP_IFC


_NOT_YET = object()


class SpeakerIndex:
    """A loaded index directory: the FAISS index, its row metadata and its speaker centroids."""

    def __init__(self, path: str, meta: dict, index, clips, speakers=None):
        self.path = path
        self.meta = meta
        self.index = index
        self.clips = clips  # pyarrow Table: row, clip_id, source, speaker_id, split
        self._speakers = speakers
        self._speaker_index = None
        self._decision = _NOT_YET  # the speaker-level decision's inputs, made on the first query by speaker

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> SpeakerIndex:
        """Open ``path`` (an output of ``build_index``); ``mmap`` maps the index file instead of reading it."""
        import faiss

        path = os.fspath(path)
        meta = store.read_meta(path)
        try:
            index = faiss.read_index(os.path.join(path, store.INDEX_FILE), _read_flags(meta["kind"], mmap))
        except RuntimeError as e:
            raise store.IndexDirError(f"{path}: unreadable {store.INDEX_FILE}: {str(e).splitlines()[-1]}") from None
        store.check_index_file(index, meta, path)
        apply_search_params(index, meta["kind"], meta["params"])
        # One chunk per column: take() on a chunked column costs ~100x more per query (1M rows: 2.5 ms).
        clips = pq.read_table(os.path.join(path, store.CLIPS_FILE), memory_map=True).combine_chunks()
        if clips.num_rows != index.ntotal:
            raise store.IndexDirError(f"{path}: {store.CLIPS_FILE} has {clips.num_rows} rows, the index {index.ntotal}")
        return cls(path, meta, index, clips)

    # -- description ----------------------------------------------------------------------------------
    @property
    def dimension(self) -> int:
        return int(self.meta["dimension"])

    @property
    def count(self) -> int:
        return int(self.meta["count"])

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def metric(self) -> str:
        return self.meta["metric"]

    @property
    def model_id(self) -> str:
        return self.meta["model_id"]

    @property
    def operating_points(self) -> OperatingPoints | None:
        """The model's operating points, carried by the index (None when built without a model)."""
        block = self.meta.get("operating_points")
        return None if block is None else OperatingPoints.from_dict(block, self.path)

    @property
    def threshold(self) -> float:
        """The default clip-level threshold: given at build, else the model's seed operating point."""
        return self.resolve_threshold()[0]

    def resolve_threshold(self, threshold: float | None = None) -> tuple[float, str]:
        """(clip-level threshold, what it means; "" when uncalibrated): the one given, else the index's default."""
        t, meaning = clip_threshold(self.operating_points, threshold, self.meta.get("threshold"))
        if t is None:
            raise ConfigError(f"{self.path}: built without a model's operating points or a threshold; give a "
                              "threshold (--threshold) or rebuild with --model")
        return t, meaning

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return (f"SpeakerIndex({self.path!r}, kind={self.kind}, count={self.count}, dim={self.dimension}, "
                f"model_id={self.model_id})")

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Trade speed for recall at query time (IVF: cells scanned; HNSW: search beam)."""
        params = {}
        if nprobe is not None:
            params["nprobe"] = int(nprobe)
        if ef_search is not None:
            params["ef_search"] = int(ef_search)
        apply_search_params(self.index, self.kind, params)

    # -- vectors --------------------------------------------------------------------------------------
    def check_vectors(self, vectors, where: str = "query") -> np.ndarray:
        """Query vectors as float32 [n, dim], refused with a typed error when the shape or norm is wrong."""
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dimension:
            got = x.shape[-1] if x.ndim else 0
            raise store.DimensionMismatchError(
                f"{where}: vectors of dimension {got} (shape {x.shape}), index {self.path} has dimension "
                f"{self.dimension}"
            )
        et.check_unit_length(x, where)
        return np.ascontiguousarray(x)

    def vectors(self) -> np.ndarray:
        """All indexed vectors, float32 [count, dim], in row order (read back from the index)."""
        return self.index.reconstruct_n(0, self.count)

    def locality_order(self) -> np.ndarray:
        """Row ids ordered so that neighbours are close: IVF rows list by list, others in row order.

        Range-searching every row in this order keeps the probed lists in cache from one query to the next
        (~1.5x less CPU than a random order at 1M vectors)."""
        import faiss

        if self.kind != "ivf":
            return np.arange(self.count, dtype=np.int64)
        from faiss.contrib.inspect_tools import get_invlist

        ivf = faiss.extract_index_ivf(self.index)
        ids = [get_invlist(ivf.invlists, lst)[0] for lst in range(ivf.nlist)]
        return np.concatenate(ids).astype(np.int64)

    # -- search ---------------------------------------------------------------------------------------
    def search(self, vectors, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS-shaped k-NN: (Euclidean distances [n, k], row ids [n, k], -1 where fewer exist)."""
        x = self.check_vectors(vectors)
        with _one_thread_if_small(len(x)):
            scores, rows = self.index.search(x, int(k))
        return store.to_euclidean(self.metric, scores), rows

    def _speaker_search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        if self._speaker_index is None:
            if self._speakers is None:
                self._speakers = pq.read_table(os.path.join(self.path, store.SPEAKERS_FILE))
            if self._speakers.num_rows == 0:
                raise ConfigError(f"{self.path}: no clip has a speaker_id; query by clip instead")
            centroids = et.fixed_list_to_numpy(self._speakers.column("centroid").combine_chunks())
            self._speaker_index = faiss.IndexFlat(self.dimension, store.faiss_metric(self.metric))
            self._speaker_index.add(np.ascontiguousarray(centroids))
        with _one_thread_if_small(len(x)):
            scores, rows = self._speaker_index.search(x, int(k))
        return store.to_euclidean(self.metric, scores), rows

    def query(self, vectors, k: int = 5, by: str = "clip", threshold: float | None = None,
              names: Sequence[str] | None = None) -> list[QueryResult]:
        """The ``k`` nearest clips (``by="clip"``) or speakers (``by="speaker"``) of each vector."""
        if by not in BY:
            raise ConfigError(f"by={by!r}: expected one of {', '.join(BY)}")
        if int(k) < 1:
            raise ConfigError(f"k={k}: must be at least 1")
        x = self.check_vectors(vectors)
        names = [str(i) for i in range(len(x))] if names is None else [str(n) for n in names]
        if by == "clip":
            threshold, meaning = self.resolve_threshold(threshold)
            dist, rows = self.search(x, k)
            return [self._clip_result(name, d, r, threshold, meaning)
                    for name, d, r in zip(names, dist, rows, strict=True)]
        given = threshold is not None
        threshold, meaning = self.resolve_threshold(threshold)
        dist, rows = self._speaker_search(x, k)
        speaker_ids = self._speakers.column("speaker_id")
        n_clips = self._speakers.column("n_clips").to_numpy()
        level = None if given else self._speaker_decision()
        if level is None:
            meaning = (meaning + "; " if meaning else "") + "Euclidean distance to the speaker's centroid" + (
                "" if given else " (no speaker-level operating points in this index)")
        else:
            threshold, meaning, groups, pooled = level
        results = []
        for name, vec, d, r in zip(names, x, dist, rows, strict=True):
            keep = r >= 0
            sep = [None] * int(keep.sum())
            if level is not None:
                sep = separation.clip_separation(groups, r[keep], vec, pooled).tolist()
            matches = tuple(
                SpeakerMatch(rank=i + 1, speaker_id=speaker_ids[int(j)].as_py(), n_clips=int(n_clips[int(j)]),
                             distance=float(dd), threshold=threshold, meaning=meaning, separation=sp)
                for i, (dd, j, sp) in enumerate(zip(d[keep], r[keep], sep, strict=True))
            )
            results.append(QueryResult(query=name, by=by, threshold=threshold, meaning=meaning, matches=matches))
        return results

    def _speaker_decision(self):
        """(threshold, meaning, speaker Groups, pooled spread) for deciding clip-vs-speaker matches at the
        speaker level, or None when this index cannot (no speaker-level points, or no ``mean_norm``).
        Computed once per loaded index."""
        if self._decision is _NOT_YET:
            self._decision = self._make_speaker_decision()
        return self._decision

    def _make_speaker_decision(self):
        ops = self.operating_points
        if ops is None or not ops.speaker or "mean_norm" not in self._speakers.column_names:
            return None
        n = self._speakers.column("n_clips").to_numpy().astype(np.float64)
        norm = self._speakers.column("mean_norm").to_numpy().astype(np.float64)
        centroids = et.fixed_list_to_numpy(self._speakers.column("centroid").combine_chunks()).astype(np.float64)
        groups = separation.Groups.of_sums(centroids * (norm * n)[:, None], n)
        point = ops.clip_to_speaker_point()
        meaning = (f"speaker level: the {point_words(point.name)} for one clip, FAR {pct(point.far, '.2g')} / FRR "
                   f"{pct(point.frr, '.2g')} on dev speakers; the speaker's own spread weighs the distance")
        return point.threshold, meaning, groups, groups.pooled_spread()

    def _clip_result(self, name: str, dist: np.ndarray, rows: np.ndarray, threshold: float,
                     meaning: str) -> QueryResult:
        keep = rows >= 0
        rows, dist = rows[keep], dist[keep]
        meta = self.clips.select(["clip_id", "speaker_id", "source"]).take(rows).to_pydict()
        matches = tuple(
            ClipMatch(rank=i + 1, row=int(rows[i]), clip_id=meta["clip_id"][i], speaker_id=meta["speaker_id"][i],
                      source=meta["source"][i], distance=float(dist[i]), threshold=threshold, meaning=meaning)
            for i in range(len(rows))
        )
        return QueryResult(query=name, by="clip", threshold=threshold, meaning=meaning, matches=matches)

    def query_file(self, paths: str | os.PathLike | Iterable[str | os.PathLike], encoder, k: int = 5,
                   by: str = "clip", threshold: float | None = None,
                   failed: dict[str, str] | None = None) -> list[QueryResult]:
        """Embed each audio file with ``encoder`` (anything with ``.embed(path)``) and query it.

        An encoder that states a model_id (``encoder.config["model_id"]``, as ``speechid.Encoder`` does) must
        match the index's; the vectors of two different models are not comparable. ``failed``: where a file
        that cannot be used (unreadable, not audio, ...) goes, path -> one-line reason, the others still
        answered; without it the first such file raises.
        """
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        if not paths:
            raise ConfigError("query_file: no audio files given")
        check_encoder(self.meta, encoder, self.path)
        vectors, names = [], []
        for p in map(os.fspath, paths):
            try:
                v = np.asarray(encoder.embed(p), dtype=np.float32).reshape(-1)
                vectors.append(self.check_vectors(v, where=p)[0])
                names.append(p)
            except SpeechIdError as e:
                if failed is None:
                    raise
                failed[p] = " ".join(str(e).split())
            except OSError as e:
                if failed is None:
                    raise
                failed[p] = f"{e.filename or p}: {e.strerror or e}"
        if not vectors:
            return []
        return self.query(np.stack(vectors), k=k, by=by, threshold=threshold, names=names)


def encoder_model_id(encoder) -> str | None:
    """The model_id an encoder states (``.config["model_id"]`` or ``.model_id``), or None."""
    cfg = getattr(encoder, "config", None)
    if isinstance(cfg, dict) and cfg.get("model_id") is not None:
        return str(cfg["model_id"])
    mid = getattr(encoder, "model_id", None)
    return None if mid is None else str(mid)


def check_encoder(meta: dict, encoder, where: str = "index") -> None:
    """ModelMismatchError when ``encoder`` states a model_id other than the index's."""
    store.check_model_id(meta["model_id"], encoder_model_id(encoder), where)
