"""The index directory on disk, its errors, and the one conversion between FAISS scores and distances.

Layout of an index directory (written by ``speechid.indexing.build``)::

    <index>/index.faiss      the FAISS index over clip embeddings, row id = row of clips.parquet
    <index>/clips.parquet    row -> clip_id, speaker_id, source, split
    <index>/speakers.parquet speaker_id, n_clips, centroid (mean of the speaker's clips, re-normalised)
    <index>/meta.json        format, dimension, count, kind, params, metric, model_id, operating_points (the
                             model's, copied at build with its model_id) and/or threshold (given at build)

``read_meta`` type- and range-checks every field of meta.json (``check_meta``) and ``check_index_file`` holds
the FAISS index to it (size and metric), so a directory that contradicts itself is refused with one line
naming the file, never read with a wrong conversion.

Directories appear atomically and never replace what a user put there: ``build`` and ``dedup`` write
through ``speechid.outputs.staged`` (a staging sibling renamed into place; a rebuild replaces only an
index's own files).

Scores: indexes use ``metric`` "l2" (FAISS returns squared Euclidean distances) or "ip" (inner products,
i.e. cosine similarity on unit vectors). Everything we show a person is the Euclidean distance; the
threshold is Euclidean and ``search_radius`` turns it into the metric's own radius with the converters
of ``speechid.config``.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from speechid import config
from speechid.errors import ConfigError, SpeechIdError
from speechid.operating_points import OperatingPoints

INDEX_FILE = "index.faiss"
CLIPS_FILE = "clips.parquet"
SPEAKERS_FILE = "speakers.parquet"
META_FILE = "meta.json"
FORMAT = "speechid-index"
FORMAT_VERSION = 1
METRICS = ("l2", "ip")
KINDS = ("flat", "ivf", "hnsw")
OUTPUT_MARK = "index build"  # the command named in an index's output marker (speechid.outputs.MARKER)


class IndexDirError(ConfigError):
    """A missing, incomplete or unreadable index directory."""


class DimensionMismatchError(SpeechIdError):
    """Vectors whose dimension differs from the index's."""


class ModelMismatchError(SpeechIdError):
    """Embeddings from a model other than the one the index was built with."""


# -- distances ------------------------------------------------------------------------------------------


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ConfigError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")
    return metric


def check_threshold(threshold: float) -> float:
    """A clip-level threshold a range search can take: a positive Euclidean distance."""
    if not threshold > 0:
        raise ConfigError(f"threshold {threshold}: must be a positive Euclidean distance")
    return threshold


def search_radius(metric: str, threshold: float) -> float:
    """Euclidean threshold -> the radius FAISS range search takes for ``metric``.

    "l2": squared distance (FAISS keeps d < radius); "ip": cosine similarity (FAISS keeps s > radius).
    Both select exactly the unit-vector pairs closer than ``threshold``.
    """
    check_threshold(threshold)
    return config.l2_to_squared(threshold) if check_metric(metric) == "l2" else config.l2_to_cosine(threshold)


def to_euclidean(metric: str, scores: np.ndarray) -> np.ndarray:
    """FAISS scores of ``metric`` -> Euclidean distances between unit vectors (float32 array).

    The array forms of |a-b| = sqrt(squared) and ``config.cosine_to_l2`` (clipped at 0 against rounding).
    """
    s = np.asarray(scores, dtype=np.float32)
    if check_metric(metric) == "l2":
        return np.sqrt(np.maximum(s, 0.0))
    return np.sqrt(np.maximum(2.0 - 2.0 * s, 0.0))


def faiss_metric(metric: str) -> int:
    import faiss

    return faiss.METRIC_L2 if check_metric(metric) == "l2" else faiss.METRIC_INNER_PRODUCT


# -- meta.json ------------------------------------------------------------------------------------------


def read_meta(index_dir: str | os.PathLike) -> dict:
    """meta.json of an index directory, with the keys every reader relies on checked."""
    index_dir = os.fspath(index_dir)
    if not os.path.isdir(index_dir):
        raise IndexDirError(f"{index_dir}: index directory not found (build one with `speechid index`)")
    path = os.path.join(index_dir, META_FILE)
    if not os.path.exists(path):
        raise IndexDirError(f"{index_dir}: not a speechid index (no {META_FILE})")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise IndexDirError(f"{path}: unreadable: {e}") from None
    check_meta(meta, path)
    for name in (INDEX_FILE, CLIPS_FILE):
        if not os.path.exists(os.path.join(index_dir, name)):
            raise IndexDirError(f"{index_dir}: incomplete index (no {name})")
    return meta


def _whole(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_meta(meta, path: str) -> dict:
    """Type- and range-check every field of a meta.json its readers use: an IndexDirError naming ``path``
    for the first that is wrong (the one check, so no reader meets a bad value later)."""
    if not isinstance(meta, dict):
        raise IndexDirError(f"{path}: not a {FORMAT} meta file (not a JSON object)")
    missing = [k for k in ("dimension", "count", "kind", "params", "metric", "model_id") if k not in meta]
    if missing or meta.get("format") != FORMAT:
        raise IndexDirError(f"{path}: not a {FORMAT} meta file (missing {', '.join(missing) or 'format'})")
    version = meta.get("version", 0)
    if not _whole(version, 0):
        raise IndexDirError(f"{path}: version {json.dumps(version)} is not a format version")
    if version > FORMAT_VERSION:
        raise IndexDirError(f"{path}: format version {version} is newer than this speechid reads")
    problems = [
        (not _whole(meta["dimension"], 1), "dimension", "a positive whole number"),
        (not _whole(meta["count"], 0), "count", "a whole number"),
        (meta["kind"] not in KINDS, "kind", f"one of {', '.join(KINDS)}"),
        (meta["metric"] not in METRICS, "metric", f"one of {', '.join(METRICS)}"),
        (not isinstance(meta["params"], dict), "params", "an object"),
        (not isinstance(meta["model_id"], str) or not meta["model_id"], "model_id", "a model fingerprint"),
    ]
    threshold = meta.get("threshold")
    if threshold is not None:
        problems.append((isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                         or not (math.isfinite(threshold) and threshold > 0), "threshold",
                         "a positive, finite number (or null: the model's operating point)"))
    for bad, key, expected in problems:
        if bad:
            raise IndexDirError(f"{path}: {key} {json.dumps(meta[key])} is not {expected}")
    for key, value in meta["params"].items():  # nlist, nprobe, M, ef_search, ...: counts, set on the index
        if not _whole(value, 1):
            raise IndexDirError(f"{path}: params.{key} {json.dumps(value)} is not a positive whole number")
    if meta.get("operating_points") is not None:
        OperatingPoints.from_dict(meta["operating_points"], path)  # refuse a malformed block at load
    return meta


def check_index_file(index, meta: dict, index_dir: str) -> None:
    """A FAISS index read from ``index_dir`` against its meta.json: size and metric. A metric that differs
    would turn every score into a wrong distance (inner products read as squared distances: neighbours in
    reverse order), so it is refused, not converted."""
    import faiss

    path = os.path.join(index_dir, INDEX_FILE)
    if index.d != meta["dimension"] or index.ntotal != meta["count"]:
        raise IndexDirError(f"{index_dir}: {INDEX_FILE} holds {index.ntotal} x {index.d}, {META_FILE} says "
                            f"{meta['count']} x {meta['dimension']}")
    names = {faiss.METRIC_L2: "l2", faiss.METRIC_INNER_PRODUCT: "ip"}
    actual = names.get(index.metric_type, f"FAISS metric {index.metric_type}")
    if actual != meta["metric"]:
        raise IndexDirError(f"{os.path.join(index_dir, META_FILE)}: metric {meta['metric']!r}, but {path} is an "
                            f"index of metric {actual!r}; rebuild the index with `speechid index`")


def check_model_id(index_model_id: str, model_id: str | None, where: str = "index") -> None:
    """Refuse embeddings of another model: distances between two models' vectors mean nothing."""
    if model_id is not None and model_id != index_model_id:
        raise ModelMismatchError(
            f"{where}: built from model_id {index_model_id}, but the model gives model_id {model_id}; "
            "rebuild the index with this model's embeddings or query with the index's model"
        )
