"""The embeddings Parquet format: the one definition that the embed pipeline writes and indexing reads.

An embeddings directory holds ``part-*.parquet`` shards (plus whatever else the writer leaves beside them,
such as ``manifest.json`` and ``failures/``). Every shard has this schema (``arrow_schema(dim)``):

    clip_id     string      the clip's path inside its release (Common Voice ``path``) or file name
    source      string      where it came from (archive, glob root or TFRecord file)
    speaker_id  string?     Common Voice client_id; null when unknown (audio globs)
    split       string?     train/dev/test/...; null when unknown
    duration_s  float32     duration embedded: the decoded clip less leading/trailing silence
    n_windows   int32       windows averaged into the embedding
    embedding   fixed_size_list<float32>[dim]   L2-normalised
    model_id    string      fingerprint of the model that embedded it (``config.json``'s model_id)

Row order is the shards sorted by file name, then file order; indexing uses it as the row id. Readers go
through ``iter_blocks`` / ``iter_embeddings``: they stream record batches of a few columns at a time
(pyarrow.dataset, one fragment after another), so a corpus of millions of clips is never loaded whole, and
errors name the shard and the row that is wrong.
"""

from __future__ import annotations

import glob
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from speechid.errors import SpeechIdError

PART_GLOB = "part-*.parquet"
EMBEDDING = "embedding"
COLUMNS = ("clip_id", "source", "speaker_id", "split", "duration_s", "n_windows", EMBEDDING, "model_id")
NULLABLE = ("speaker_id", "split")
DEFAULT_BATCH = 65_536
UNIT_TOLERANCE = 1e-3  # |norm - 1|: float32 averaging + renormalising stays far inside this
SHORT_ID = 16  # characters of a speaker_id (a Common Voice client_id is 128 hex digits) shown to people


def short_id(value: str | None, n: int = SHORT_ID) -> str:
    """An id for a person to read: its first ``n`` characters and "…" when longer ("-" for none).

    Text for people only (console, summary.txt); every file meant for programs keeps the full id."""
    if value is None:
        return "-"
    s = str(value)
    return s if len(s) <= n else s[:n] + "…"


class EmbeddingTableError(SpeechIdError):
    """An embeddings directory or shard that does not follow the format; names the file."""


class NotUnitLengthError(EmbeddingTableError):
    """An embedding whose L2 norm is not 1 (the distances and the threshold assume unit vectors)."""


def arrow_schema(dim: int) -> pa.Schema:
    """The Parquet schema of an embeddings shard for ``dim``-dimensional embeddings."""
    if int(dim) <= 0:
        raise ValueError(f"embedding dimension must be positive, got {dim}")
    return pa.schema(
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("speaker_id", pa.string(), nullable=True),
            pa.field("split", pa.string(), nullable=True),
            pa.field("duration_s", pa.float32(), nullable=False),
            pa.field("n_windows", pa.int32(), nullable=False),
            pa.field(EMBEDDING, pa.list_(pa.float32(), int(dim)), nullable=False),
            pa.field("model_id", pa.string(), nullable=False),
        ]
    )


def part_name(shard: int, num_shards: int | None = None) -> str:
    """``part-00003.parquet`` (or ``part-00003-of-00010.parquet``, Beam's naming): both match PART_GLOB."""
    return f"part-{shard:05d}-of-{num_shards:05d}.parquet" if num_shards else f"part-{shard:05d}.parquet"


# -- writing --------------------------------------------------------------------------------------------


def _embedding_array(values: Any, dim: int | None, where: str) -> pa.FixedSizeListArray:
    if isinstance(values, (pa.Array, pa.ChunkedArray)) and pa.types.is_fixed_size_list(values.type):
        arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        x = fixed_list_to_numpy(arr)
    else:
        x = np.asarray(values, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] == 0:
        raise EmbeddingTableError(f"{where}: embedding must be a [rows, dim] matrix, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise EmbeddingTableError(f"{where}: embedding dimension {x.shape[1]} != {dim}")
    flat = pa.array(np.ascontiguousarray(x, dtype=np.float32).reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, x.shape[1])


def to_table(data: pa.Table | Mapping[str, Any] | Iterable[Mapping[str, Any]], dim: int | None = None,
             where: str = "embeddings") -> pa.Table:
    """Columns (mapping of name -> values), rows (mappings, as the embed pipeline makes) or an Arrow table
    -> a table with exactly ``arrow_schema(dim)``. ``embedding`` may be a float matrix; a ``str`` given
    for a string column applies to every row; the nullable columns may be left out."""
    if isinstance(data, (pa.Table, pa.RecordBatch)):
        columns = {name: data.column(name) for name in data.schema.names}
    elif isinstance(data, Mapping):
        columns = dict(data)
    else:
        rows = list(data)
        columns = {name: [row.get(name) for row in rows] for name in COLUMNS}
        columns[EMBEDDING] = np.asarray(columns[EMBEDDING], dtype=np.float32) if rows else np.zeros((0, dim or 1))
    missing = [c for c in COLUMNS if c not in columns and c not in NULLABLE]
    if missing:
        raise EmbeddingTableError(f"{where}: missing column(s) {', '.join(missing)}")
    emb = _embedding_array(columns[EMBEDDING], dim, where)
    n = len(emb)
    schema = arrow_schema(emb.type.list_size)
    arrays = []
    for field in schema:
        values = columns.get(field.name)
        if field.name == EMBEDDING:
            arrays.append(emb)
            continue
        if values is None or isinstance(values, str):
            values = [values] * n
        try:
            arr = pa.array(values, type=field.type) if not isinstance(values, (pa.Array, pa.ChunkedArray)) \
                else values.cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
            raise EmbeddingTableError(f"{where}: column {field.name}: {e}") from None
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if len(arr) != n:
            raise EmbeddingTableError(f"{where}: column {field.name} has {len(arr)} values, embedding has {n}")
        if not field.nullable and arr.null_count:
            raise EmbeddingTableError(f"{where}: column {field.name} has {arr.null_count} null value(s)")
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=schema)


def write_table(path: str | os.PathLike, data: pa.Table | Mapping[str, Any] | Iterable[Mapping[str, Any]],
                dim: int | None = None, row_group_size: int = DEFAULT_BATCH) -> str:
    """Write one shard atomically (a hidden temp file beside it, then rename); returns the path.

    ``data`` is anything ``to_table`` takes. A crash leaves no half-written ``part-*.parquet``: the temp
    name starts with a dot and does not match PART_GLOB.
    """
    path = os.fspath(path)
    table = to_table(data, dim, where=path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp, row_group_size=row_group_size)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


# -- reading --------------------------------------------------------------------------------------------


def list_parts(embeddings_dir: str | os.PathLike) -> list[str]:
    """The shards of an embeddings directory, sorted (their order is the row order)."""
    embeddings_dir = os.fspath(embeddings_dir)
    if not os.path.isdir(embeddings_dir):
        raise EmbeddingTableError(f"{embeddings_dir}: embeddings directory not found")
    parts = sorted(glob.glob(os.path.join(embeddings_dir, PART_GLOB)))
    if not parts:
        raise EmbeddingTableError(f"{embeddings_dir}: no {PART_GLOB} shards (run `speechid embed` first)")
    return parts


def _check_schema(path: str, schema: pa.Schema, dim: int | None) -> int:
    """The shard's embedding dimension, after checking every column of the format against ``schema``."""
    if EMBEDDING not in schema.names:
        raise EmbeddingTableError(f"{path}: no '{EMBEDDING}' column; columns are {', '.join(schema.names)}")
    etype = schema.field(EMBEDDING).type
    if not (pa.types.is_fixed_size_list(etype) and etype.value_type == pa.float32()):
        raise EmbeddingTableError(f"{path}: '{EMBEDDING}' is {etype}, expected fixed_size_list<float32>[dim]")
    file_dim = etype.list_size
    if dim is not None and file_dim != dim:
        raise EmbeddingTableError(f"{path}: embedding dimension mismatch: {file_dim} here, {dim} in earlier shards")
    expected = arrow_schema(file_dim)
    for field in expected:
        if field.name not in schema.names:
            raise EmbeddingTableError(f"{path}: missing column '{field.name}'")
        if schema.field(field.name).type != field.type:
            raise EmbeddingTableError(
                f"{path}: column '{field.name}' is {schema.field(field.name).type}, expected {field.type}"
            )
    return file_dim


def _dataset(embeddings_dir: str | os.PathLike) -> tuple[pads.Dataset, int]:
    parts = list_parts(embeddings_dir)
    try:
        dataset = pads.dataset(parts, format="parquet")
    except (pa.ArrowInvalid, OSError) as e:
        raise EmbeddingTableError(f"{os.fspath(embeddings_dir)}: unreadable Parquet: {e}") from None
    dim = None
    for fragment in dataset.get_fragments():
        try:
            schema = fragment.physical_schema
        except (pa.ArrowInvalid, OSError) as e:
            raise EmbeddingTableError(f"{fragment.path}: unreadable Parquet: {e}") from None
        dim = _check_schema(fragment.path, schema, dim)
    return dataset, dim


def describe(embeddings_dir: str | os.PathLike) -> tuple[int, int]:
    """(rows, dim) of an embeddings directory, from the shards' footers only (no data is read)."""
    dataset, dim = _dataset(embeddings_dir)
    rows = sum(fragment.metadata.num_rows for fragment in dataset.get_fragments())
    return rows, dim


def iter_file_blocks(embeddings_dir: str | os.PathLike, columns: Sequence[str], batch_size: int = DEFAULT_BATCH
                     ) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    """(shard path, first row within the shard, record batch of ``columns``) in row order."""
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; the format has {COLUMNS}")
    dataset, _ = _dataset(embeddings_dir)
    for fragment in dataset.get_fragments():
        offset = 0
        try:
            # use_threads=False keeps batches in file order; the decode cost is small next to indexing.
            for batch in fragment.to_batches(columns=list(columns), batch_size=batch_size, use_threads=False):
                yield fragment.path, offset, batch
                offset += batch.num_rows
        except (pa.ArrowInvalid, OSError) as e:
            raise EmbeddingTableError(f"{fragment.path}: unreadable Parquet: {e}") from None


def iter_blocks(embeddings_dir: str | os.PathLike, columns: Sequence[str], batch_size: int = DEFAULT_BATCH
                ) -> Iterator[pa.RecordBatch]:
    """Record batches of ``columns`` (never more), in row order, at most ``batch_size`` rows each."""
    for _, _, batch in iter_file_blocks(embeddings_dir, columns, batch_size):
        yield batch


def fixed_list_to_numpy(arr: pa.FixedSizeListArray) -> np.ndarray:
    """fixed_size_list<float32>[dim] -> float32 [rows, dim], zero-copy when the batch allows it."""
    if arr.null_count:
        raise EmbeddingTableError(f"{arr.null_count} null embedding(s)")
    # .flatten() honours the array's offset (a sliced batch), unlike .values.
    values = arr.flatten().to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=False).reshape(len(arr), arr.type.list_size)


def check_unit_length(x: np.ndarray, where: str, first_row: int = 0, tolerance: float = UNIT_TOLERANCE) -> None:
    """Raise NotUnitLengthError naming the first row of ``x`` whose L2 norm is off by more than tolerance."""
    norms = np.linalg.norm(x, axis=1)
    bad = np.flatnonzero(~(np.abs(norms - 1.0) <= tolerance))  # the negation also catches NaN
    if bad.size:
        i = int(bad[0])
        raise NotUnitLengthError(
            f"{where}: row {first_row + i} has L2 norm {norms[i]:.4f} ({bad.size} such row(s) in this block); "
            f"embeddings must be L2-normalised (|norm - 1| <= {tolerance})"
        )


def iter_embeddings(embeddings_dir: str | os.PathLike, batch_size: int = DEFAULT_BATCH, check_unit: bool = True,
                    tolerance: float = UNIT_TOLERANCE) -> Iterator[np.ndarray]:
    """The embedding matrix in float32 blocks ``[<= batch_size, dim]``, in row order, unit length checked."""
    for path, offset, batch in iter_file_blocks(embeddings_dir, [EMBEDDING], batch_size):
        try:
            x = fixed_list_to_numpy(batch.column(0))
        except EmbeddingTableError as e:
            raise EmbeddingTableError(f"{path}: {e}") from None
        if check_unit:
            check_unit_length(x, path, offset, tolerance)
        yield x
