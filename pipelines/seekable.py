"""Read a tar archive twice without holding it: once front to back to index it, then by ranges from any worker.

A ``.tar.gz`` is one deflate stream: reading member N normally means decompressing everything before it.
Pass 1 (``IndexingReader``) decompresses the archive once and, as it goes, records seek points every
``spacing`` bytes of uncompressed data (``rapidgzip``: each point keeps the 32 KiB window deflate needs to
restart there; its index is the indexed_gzip format). The index is written to a file beside the job's
other temporary output; any worker can then import it and start decompressing at the point just before
the range it was given (``RangeReader``), so the archive is read in parallel and no clip's bytes travel
through a shuffle. Measured on a 10 GB archive: rapidgzip decompresses at ~200 MB/s on one core, against
~29 MB/s for indexed_gzip's zran (which stops at every deflate block to find seek points) and ~120 MB/s
for Python's gzip module.

Plain ``.tar`` needs no index (the member offsets are file offsets). ``.tar.bz2`` and ``.tar.xz`` cannot be
entered midway: they are read as one range from the start.

Every file is opened through Beam's ``FileSystems``, so local paths and ``gs://`` objects alike work; both
are seekable.
"""

from __future__ import annotations

import atexit
import bz2
import hashlib
import io
import lzma
import uuid
import weakref
from dataclasses import dataclass

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

GZIP, PLAIN, STREAM = "gzip", "plain", "stream"  # how an archive is entered at an offset
_MIB = 1 << 20
MIN_RANGE_BYTES, MAX_RANGE_BYTES = 1 * _MIB, 64 * _MIB
RANGES_PER_ARCHIVE = 256  # aim: enough ranges to keep every worker busy, few enough to seek rarely
MIN_SPACING, MAX_SPACING = 1 * _MIB, 32 * _MIB


@dataclass(frozen=True)
class ArchiveIndex:
    """How pass 2 enters an archive: its compression kind and, for gzip, where its seek index lies ("": none,
    decompress from the start)."""

    kind: str
    index_path: str = ""


def compression_kind(head: bytes) -> str:
    """GZIP, PLAIN or STREAM (bz2, xz) from an archive's first bytes."""
    if head.startswith(b"\x1f\x8b"):
        return GZIP
    if head.startswith(b"BZh") or head.startswith(b"\xfd7zXZ\x00"):
        return STREAM
    return PLAIN


def plan(archive_bytes: int, range_bytes: int | None = None) -> tuple[int, int]:
    """(range size, seek-point spacing) in uncompressed bytes for an archive of ``archive_bytes``.

    Ranges are about 1/256 of the archive, between 1 and 64 MiB: a few hundred per release archive, each
    read sequentially after one seek (random seeks into deflate data are slow). The index keeps a point
    every half range, between 1 and 32 MiB, so a range starts at most half a range after the point it
    restarts from; at 32 MiB spacing a 40 GB archive's index holds about 1,200 windows of 32 KiB at most.
    """
    if range_bytes is None:
        range_bytes = min(MAX_RANGE_BYTES, max(MIN_RANGE_BYTES, archive_bytes // RANGES_PER_ARCHIVE))
    spacing = min(MAX_SPACING, max(MIN_SPACING, range_bytes // 2))
    return max(1, range_bytes), spacing


def index_path(index_dir: str, archive: str) -> str:
    """Where pass 1 writes the seek index of ``archive`` (one file per archive, named by its path's hash)."""
    return FileSystems.join(index_dir, hashlib.sha256(archive.encode("utf-8", "surrogateescape")).hexdigest()[:32]
                            + ".gzidx")


def _open_raw(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


# rapidgzip aborts the process if one of its files is still open when Python finalizes (its reader thread
# outlives the interpreter); a DoFn's teardown is not guaranteed to run, so every open reader is closed here.
_OPEN: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_open_readers() -> None:
    for reader in list(_OPEN):
        reader.close()


class IndexingReader:
    """Pass 1: the archive's uncompressed bytes, front to back, recording seek points as it goes.

    Use as a context manager; ``stream`` is what ``tarfile.open(fileobj=..., mode='r|')`` reads.
    ``save_index(dest)`` writes the gzip index (nothing for other kinds) and returns the ArchiveIndex.
    """

    def __init__(self, archive: str, spacing: int):
        self.archive = archive
        self._raw = _open_raw(archive)
        self.kind = compression_kind(self._raw.peek(6)[:6] if hasattr(self._raw, "peek") else b"")
        if self.kind == PLAIN and not hasattr(self._raw, "peek"):  # no peek (some object stores): read and rewind
            head = self._raw.read(6)
            self._raw.seek(0)
            self.kind = compression_kind(head)
        self._gz = None
        if self.kind == GZIP:
            import rapidgzip

            # One decompression thread: pass 1 is also bound by parsing the tar in Python (two threads
            # measured 216 against 202 MB/s).
            self._gz = rapidgzip.RapidgzipFile(self._raw, parallelization=1, chunk_size=spacing)
            # Small reads: rapidgzip drops a read that a broken stream cuts short, so a truncated archive
            # loses at most one buffer before the break.
            self.stream = io.BufferedReader(self._gz, 256 * 1024)
        elif self.kind == STREAM:
            self.stream = _decompressor(self._raw)
        else:
            self.stream = self._raw
        _OPEN.add(self)

    def check_complete(self) -> None:
        """After the tar's end: the compressed stream must end where it says it does, else EOFError.

        A tar reader stops quietly when its input stops at a member boundary, and rapidgzip reports a cut
        only when the cut falls inside a deflate block it decodes; so the rest is read to the end (the
        decompressors of bz2/xz raise there), and a gzip's decompressed size must match the ISIZE field
        of its trailer (the last 4 bytes of the file), which a truncated file does not have.
        """
        while self.stream.read(1 << 20):
            pass
        if self._gz is None:
            return
        total = self._gz.tell()
        raw = _open_raw(self.archive)
        try:
            raw.seek(-4, io.SEEK_END)
            isize = int.from_bytes(raw.read(4), "little")
        finally:
            raw.close()
        if total % (1 << 32) != isize:
            raise EOFError(f"the gzip stream ends after {total:,} bytes, but its trailer says {isize:,} "
                           "(mod 2^32): the archive is cut short")

    def position(self) -> int:
        """Bytes of the archive file read so far (compressed bytes for gzip, bz2 and xz)."""
        try:
            if self._gz is not None:  # rapidgzip moves the file itself; it counts compressed bits
                return self._gz.tell_compressed() // 8
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def save_index(self, dest: str) -> ArchiveIndex:
        if self._gz is None:
            return ArchiveIndex(self.kind)
        buffer = io.BytesIO()  # small: one 32 KiB window (compressed) per seek point
        try:
            self._gz.export_index(buffer)
        except (ValueError, OSError, RuntimeError):
            # A broken stream (truncated, corrupt) has no whole index: pass 2 then decompresses from the
            # start up to each range, which still reaches every member confirmed before the break.
            return ArchiveIndex(GZIP)
        # Written beside and renamed into place: a runner that re-runs pass 1 (a lost worker) must never let a
        # pass-2 reader see a half-written index.
        temp = f"{dest}.tmp-{uuid.uuid4().hex}"
        with FileSystems.create(temp, mime_type="application/octet-stream",
                                compression_type=CompressionTypes.UNCOMPRESSED) as out:
            out.write(buffer.getvalue())
        FileSystems.rename([temp], [dest])
        return ArchiveIndex(GZIP, dest)

    def close(self):
        for f in (self.stream, self._gz, self._raw):  # rapidgzip's thread must stop before Python exits
            if f is not None:
                try:
                    f.close()
                except Exception:  # closing after a broken stream may raise again
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _decompressor(raw):
    head = raw.read(6)
    raw.seek(0)
    return bz2.BZ2File(raw) if head.startswith(b"BZh") else lzma.LZMAFile(raw)


class RangeReader:
    """Pass 2: reads members of one archive's uncompressed tar stream, a range at a time.

    Within a range, offsets increase: the reader seeks once (a gzip restarts at the seek point before the
    offset) and then moves forward, decompressing past the bytes between members; a gap larger than
    ``skip_limit`` or an offset behind the current one is a seek. A bz2/xz stream cannot seek: it only
    moves forward (its archive is one range) and starts again from the top to go back.
    """

    def __init__(self, archive: str, index: ArchiveIndex, skip_limit: int = 4 * _MIB):
        self._raw = _open_raw(archive)
        self._gz = None
        if index.kind == GZIP:
            import rapidgzip

            self._gz = rapidgzip.RapidgzipFile(self._raw, parallelization=1)
            if index.index_path:
                with _open_raw(index.index_path) as f:
                    self._gz.import_index(io.BytesIO(f.read()))
            self._stream = self._gz
        elif index.kind == STREAM:
            self._stream = _decompressor(self._raw)
        else:
            self._stream = self._raw
        _OPEN.add(self)
        self._kind = index.kind
        self._skip_limit = 0 if index.kind == PLAIN else skip_limit
        self._pos = 0

    def read(self, offset: int, size: int) -> bytes:
        gap = offset - self._pos
        if 0 <= gap <= self._skip_limit or (self._kind == STREAM and gap >= 0):
            self._skip(gap)
        elif self._kind == STREAM:  # behind us (a retried range): start the stream again
            self._stream.close()
            self._raw.seek(0)
            self._stream = _decompressor(self._raw)
            self._pos = 0
            self._skip(offset)
        else:
            self._stream.seek(offset)
        data = self._stream.read(size)
        if len(data) != size:
            raise EOFError(f"{size} bytes expected at offset {offset}, {len(data)} read")
        self._pos = offset + size
        return data

    def _skip(self, n: int) -> None:
        while n > 0:
            chunk = self._stream.read(min(n, 4 * _MIB))
            if not chunk:
                raise EOFError("the archive ends before the member")
            n -= len(chunk)

    def close(self):
        for f in (self._stream, self._gz, self._raw):
            if f is not None:
                try:
                    f.close()
                except Exception:
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
