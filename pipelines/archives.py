"""Read Common Voice archives in two passes, without extracting them and without shuffling audio.

Pass 1 (``ReadArchives``: one element per archive) streams the archive once, front to back, with
``tarfile`` in stream mode through Beam's ``FileSystems`` (local or ``gs://``; plain, gzip, bz2 or xz). It
parses the TSVs wherever they sit (older releases put them before ``clips/``, the current bundler after),
records each clip member's place (``MemberRef``: range, ordinal, data offset, size) without keeping its
bytes, and builds a gzip seek index (``seekable``) that it writes to a temporary folder.

Between the passes, the prep pipeline joins rows to member places by key (small elements only). Pass 2
(``ReadClipRanges``) groups the joined pairs by (archive, range): contiguous runs of members of 1-64 MiB,
a few hundred per large archive. Each range is read by one worker straight from the archive (one seek,
then forward reads), so every worker reads the same archive at once and decodes its clips where it read
them. Memory stays flat however large the archive: no PCollection holds audio.

Elements, all keyed by ``ClipKey = (archive, clip member path)``:

- ``TsvRow``: one data line of train/dev/test/validated/invalidated/other.tsv (read with
  ``csv.QUOTE_NONE``: Common Voice sentences hold unbalanced quotes). Rows of TSVs not selected by
  ``--splits`` keep only their key and position: they are needed to count clips "not selected by
  policy", not to write records.
- ``MemberRef`` (pass 1) and ``Clip`` (pass 2: the bytes; ``data`` is None when the member is larger than
  the byte limit, so a hostile archive cannot make a worker allocate gigabytes).
- ``Failure``: a dead-letter entry (unsafe member names, malformed rows, unreadable archives, ...).
- events ``(kind, key, value)``: small counts the manifest is computed from (see ``manifest.py``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import posixpath
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from speechid import schema
from speechid.pipelines import seekable
from speechid.progress import Meter

_LOG = logging.getLogger(__name__)
NAMESPACE = "speechid.prep"

ClipKey = tuple[str, str]  # (archive path, member path of the clip inside it)
Event = tuple[str, str, object]  # (kind, key, value): see manifest.CountEvents

# Tagged outputs shared by the stages.
ROWS, CLIPS, FAILURES, EVENTS, INDEXES, PAIRS = "rows", "clips", "failures", "events", "indexes", "pairs"

# Reasons a row, clip or member goes to failures/ besides speechid.errors.AUDIO_REASONS.
READ_REASONS = (
    "unsafe_path",  # absolute member name or one with '..' (also for a TSV 'path' field)
    "not_a_file",  # link, device or fifo member: nothing to read in stream mode
    "malformed_row",  # wrong field count, empty client_id/path, bad vote count, header without them, a line the
    # csv module refuses (a field over 128 KiB)
    "undecodable_row",  # bytes that are not UTF-8 (an identity must not change by replacement characters)
    "unusable_tsv",  # a selected TSV whose header lacks client_id or path (its rows fail as malformed_row)
    "archive_unreadable",  # not a tar archive (or an unknown compression)
    "archive_truncated",  # the stream ended or broke before the end-of-archive marker
    "member_unreadable",  # a clip indexed in pass 1 could not be read again in pass 2 (archive changed?)
)
# Failures that stand for a whole input rather than a row or a clip: a run refuses to publish over them.
INPUT_REASONS = ("archive_unreadable", "archive_truncated", "unusable_tsv")
REQUIRED_COLUMNS = ("client_id", "path")
_INT_COLUMNS = ("up_votes", "down_votes")


@dataclass(frozen=True)
class TsvRow:
    """One data line of a Common Voice TSV. ``line`` is the 1-based line in the file (the header is 1)."""

    archive: str
    tsv: str  # member path of the TSV
    split: str  # the TSV's name: train, dev, test, validated, invalidated or other
    line: int
    selected: bool  # the TSV is one of --splits; unselected rows carry no fields
    fields: tuple[tuple[str, str], ...] = ()

    def get(self, name: str, default: str = "") -> str:
        for k, v in self.fields:
            if k == name:
                return v
        return default

    @property
    def locale(self) -> str:
        """The row's locale column, else the folder the TSV sits in (``<release>/<locale>/train.tsv``)."""
        return self.get("locale") or posixpath.basename(posixpath.dirname(self.tsv))


@dataclass(frozen=True)
class Clip:
    """A clip member's bytes; ``ordinal`` is its position in the archive (a later duplicate wins, as in tar)."""

    data: bytes | None  # None: larger than the byte limit, not read
    size: int
    ordinal: int


@dataclass(frozen=True)
class Failure:
    """One dead-letter entry. ``rows``/``clips`` say how many TSV rows / clip members it accounts for."""

    archive: str
    path: str  # clip member path (or the archive member that failed)
    reason: str
    detail: str = ""
    split: str = ""
    tsv: str = ""
    line: int = 0
    rows: int = 0
    clips: int = 0

    def to_json(self) -> str:
        # Member names and TSV fields may hold bytes that are not UTF-8: shown as \\xNN, never an encode error.
        return printable(json.dumps(asdict(self), ensure_ascii=False, sort_keys=True))

    @staticmethod
    def from_json(text: str) -> Failure:
        return Failure(**json.loads(text))


def unsafe_reason(name: str) -> str | None:
    """Why a member name (or a TSV path field) must not be used, or None when it is a plain relative path."""
    if not name:
        return "empty name"
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        return "absolute path"
    if ".." in unified.split("/"):
        return "'..' component"
    return None


def clip_member_path(tsv_member: str, clip_path: str) -> str:
    """Where a TSV's ``path`` field lives in the archive: ``<tsv folder>/clips/<path>``."""
    return posixpath.join(posixpath.dirname(tsv_member), "clips", clip_path)


def tsv_split(member: str) -> str | None:
    """The split a member describes (``train`` for ``.../train.tsv``), or None if it is not a split TSV."""
    base = posixpath.basename(member)
    if not base.endswith(".tsv"):
        return None
    stem = base[: -len(".tsv")]
    return stem if stem in schema.ALL_SPLITS else None


def is_clip_member(member: str) -> bool:
    """True for a member anywhere under a ``clips/`` folder: a TSV path may name a subfolder
    (``sub dir/x.mp3`` is ``<tsv folder>/clips/sub dir/x.mp3``, see ``clip_member_path``)."""
    return "clips" in member.split("/")[:-1]


_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz


def archive_problem(path: str) -> str | None:
    """Why ``path`` cannot be a release archive at all, from its first member; None when it starts well.

    Cheap (one block is read), so a run checks every input before it starts: an empty file, a file that
    is not a tar (plain, gzip, bz2 or xz), or a tar with no members is a wrong input, not a failure to
    record. Truncation past the first member is only found by reading on (``archive_truncated``).
    """
    head = b""
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            head = raw.read(6)
            if not head:
                return "an empty file (0 bytes), not an archive"
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            with tarfile.open(fileobj=raw, mode="r|*") as tar:
                if tar.next() is None:
                    return "an archive with no members"
    except tarfile.ReadError as e:
        if head.startswith(_COMPRESSED_MAGIC):
            return f"compressed, but no whole tar archive inside ({e})"
        return f"not a tar archive (plain, .gz, .bz2 or .xz): {e}"
    except (EOFError, zlib.error) as e:
        return f"truncated: {e or 'the stream ends early'}"
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    return None


class _ForwardOnly(io.RawIOBase):
    """A member of a streamed tar is read front to back only; its file object even fails ``seekable()``,
    which ``io.TextIOWrapper`` calls. This says "not seekable" and forwards reads."""

    def __init__(self, f):
        self._f = f

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, b) -> int:
        data = self._f.read(len(b))
        b[: len(data)] = data
        return len(data)


def parse_tsv(
    stream: io.BufferedIOBase, archive: str, tsv: str, split: str, selected: bool
) -> Iterator[tuple[ClipKey, TsvRow] | Failure | None]:
    """Rows of one TSV as ``(key, TsvRow)``; malformed rows of a selected TSV as ``Failure``.

    Rows of unselected TSVs are not validated (the policy says they are not written), only keyed; one
    without a usable path yields None (still a row read, and skipped by policy). A selected TSV whose
    header lacks a required column also yields one ``unusable_tsv`` Failure for the file itself.

    A line the csv module cannot read (a field over its 128 KiB limit) fails as ``malformed_row`` with its
    line number (in an unselected TSV: None), and the rows after it are still read.

    Bytes that are not UTF-8 are kept as they are (``surrogateescape``) so that a clip path still
    matches its member name, and a selected row holding any fails as ``undecodable_row``: replacing
    them would silently turn one client_id into another.
    """
    text = io.TextIOWrapper(
        io.BufferedReader(_ForwardOnly(stream)), encoding="utf-8-sig", errors="surrogateescape", newline=""
    )
    reader = csv.reader(text, delimiter="\t", quoting=csv.QUOTE_NONE)
    header, unreadable = _next_row(reader)
    header = header or []
    path_col = header.index("path") if "path" in header else None
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if selected and missing:
        found = ", ".join(printable(c) for c in header) or "none"
        detail = f"header: {unreadable}" if unreadable else f"header lacks {', '.join(missing)} (columns: {found})"
        yield Failure(archive, tsv, "unusable_tsv", detail, split, tsv, 1)
    while True:
        fields, unreadable = _next_row(reader)
        line = reader.line_num
        if unreadable:  # its fields, path included, are unknown: the row fails, the next rows are still read
            yield Failure(archive, "", "malformed_row", unreadable, split, tsv, line, rows=1) if selected else None
            continue
        if fields is None:
            break
        if not fields:  # a blank line holds no row
            continue
        raw_path = fields[path_col] if path_col is not None and path_col < len(fields) else ""
        clip = clip_member_path(tsv, raw_path) if raw_path and not unsafe_reason(raw_path) else ""
        if not selected:
            yield ((archive, clip), TsvRow(archive, tsv, split, line, False)) if clip else None
            continue
        bad = [name for name, value in zip(header, fields, strict=False) if _undecodable(value)]
        if bad or (len(fields) > len(header) and any(_undecodable(v) for v in fields[len(header) :])):
            where = ", ".join(printable(b) for b in bad) or "extra fields"
            yield Failure(archive, printable(clip), "undecodable_row", f"bytes that are not UTF-8 in {where}", split,
                          tsv, line, rows=1)
            continue
        problem = row_problem(header, fields)
        if problem:
            reason, detail = problem
            yield Failure(archive, clip, reason, detail, split, tsv, line, rows=1)
            continue
        yield (archive, clip), TsvRow(archive, tsv, split, line, True, tuple(zip(header, fields, strict=True)))


def _next_row(reader) -> tuple[list[str] | None, str]:
    """(fields, "") of the reader's next row, (None, "") at the end, or (None, why) for a line the csv module
    refuses (a field over ``csv.field_size_limit()``, 128 KiB: no Common Voice field comes near it, so such a
    line is a broken row, not a reason to raise the limit for every reader). The reader goes on after it."""
    try:
        return next(reader), ""
    except StopIteration:
        return None, ""
    except csv.Error as e:
        return None, f"unreadable line: {e}"


def _undecodable(text: str) -> bool:
    """True when ``text`` holds bytes that were not UTF-8 (decoded with ``surrogateescape``)."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def printable(text: str) -> str:
    """``text`` with undecodable bytes shown as ``\\xNN`` (what failures and messages can carry)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def row_problem(header: list[str], fields: list[str]) -> tuple[str, str] | None:
    """(reason, detail) when a selected row cannot become a record, else None."""
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        return "malformed_row", f"header lacks {', '.join(missing)}"
    if len(fields) != len(header):
        return "malformed_row", f"{len(fields)} fields, header has {len(header)}"
    row = dict(zip(header, fields, strict=True))
    if not row["client_id"] or not row["path"]:
        return "malformed_row", "empty client_id or path"
    why = unsafe_reason(row["path"])
    if why:
        return "unsafe_path", f"path field {row['path']!r}: {why}"
    bad_ints = [c for c in _INT_COLUMNS if row.get(c) and not row[c].lstrip("-").isdigit()]
    if bad_ints:
        return "malformed_row", f"not an integer: {', '.join(bad_ints)}"
    return None


@dataclass(frozen=True)
class MemberRef:
    """Where a clip member's bytes lie in its archive's uncompressed tar stream, and which range reads them.

    Pass 1 emits one per clip member instead of the bytes; only these small descriptors are joined to the
    TSV rows and grouped by range, never the audio. ``ordinal`` is the member's position (a later
    duplicate wins, as in tar extraction).
    """

    range_id: int
    ordinal: int
    offset: int
    size: int


class _RangePlanner:
    """Numbers contiguous runs of members of about ``range_bytes`` uncompressed bytes, in archive order."""

    def __init__(self, range_bytes: int):
        self._bytes = range_bytes
        self._start: int | None = None
        self.range_id = 0

    def place(self, offset: int, size: int) -> int:
        if self._start is None:
            self._start = offset
        elif offset + size - self._start > self._bytes:
            self.range_id += 1
            self._start = offset
        return self.range_id


class IndexArchive(beam.DoFn):
    """Pass 1: archive path -> rows (main output), clip places, failures, events and the seek index.

    Streams the archive once, front to back (plain, gzip, bz2 or xz), without reading a clip's bytes into
    Python: clip members become ``MemberRef`` elements on CLIPS, assigned to ranges of about
    ``range_bytes``; TSVs are parsed into rows wherever they sit (before or after ``clips/``). The gzip
    seek index goes to ``index_dir`` and ``(archive, ArchiveIndex)`` to INDEXES, for pass 2.
    """

    def __init__(self, splits: tuple[str, ...], index_dir: str, range_bytes: int | None = None,
                 progress_interval: float = 30.0):
        self._splits = tuple(splits)
        self._index_dir = index_dir
        self._range_bytes = range_bytes
        self._rows = Metrics.counter(NAMESPACE, "rows_read")
        self._clips = Metrics.counter(NAMESPACE, "clips_seen")
        self._rejected = Metrics.counter(NAMESPACE, "members_rejected")
        self._progress_interval = progress_interval

    def process(self, archive: str):
        # Counted as we go, emitted after the loop: a stream that breaks midway still reports what it read.
        seen = {"clips": 0, "other_members": 0, "tsv_rows": {}}
        try:
            size = FileSystems.match([archive])[0].metadata_list[0].size_in_bytes
        except Exception:  # the size only sizes the ranges
            size = 0
        failure = None
        range_bytes, spacing = seekable.plan(size, self._range_bytes)
        try:
            reader = seekable.IndexingReader(archive, spacing)
        except (OSError, ValueError, RuntimeError) as e:  # rapidgzip refuses a broken gzip with ValueError
            reader, failure = None, Failure(archive, "", "archive_unreadable", str(e) or type(e).__name__)
        if reader is not None:
            self._meter = Meter(size / 1e6 if size else None, self._progress_interval)
            self._where = (archive, reader)
            with reader:
                if reader.kind == seekable.STREAM:  # bz2/xz cannot be entered midway: one range, from the start
                    range_bytes = 1 << 62
                try:
                    with tarfile.open(fileobj=reader.stream, mode="r|") as tar:
                        yield from self._members(archive, tar, seen, _RangePlanner(range_bytes))
                    reader.check_complete()
                except (tarfile.ReadError, EOFError, zlib.error, OSError, ValueError, RuntimeError) as e:
                    # rapidgzip raises ValueError on a broken deflate stream. Whether anything was read decides
                    # it: nothing (not a tar, or not gzip past its magic) or a stream that broke later.
                    started = seen["clips"] or seen["other_members"] or seen["tsv_rows"]
                    failure = Failure(archive, "", "archive_truncated" if started else "archive_unreadable",
                                      str(e) or type(e).__name__)
                # Saved after a break too: the members confirmed before it are still read in pass 2.
                index = reader.save_index(seekable.index_path(self._index_dir, archive))
                yield beam.pvalue.TaggedOutput(INDEXES, (archive, index))
        if failure is not None:
            yield beam.pvalue.TaggedOutput(FAILURES, failure)
        _LOG.info("speechid read %s: %d clips, %d other members", archive, seen["clips"], seen["other_members"])
        for tsv, n in seen["tsv_rows"].items():
            yield beam.pvalue.TaggedOutput(EVENTS, ("tsv_rows", f"{archive}!{tsv}", n))
        yield beam.pvalue.TaggedOutput(EVENTS, ("clips_seen", archive, seen["clips"]))
        yield beam.pvalue.TaggedOutput(EVENTS, ("members_ignored", archive, seen["other_members"]))

    def _members(self, archive: str, tar: tarfile.TarFile, seen: dict, ranges: _RangePlanner):
        # A clip is confirmed once the stream has moved past its last byte (tarfile checks that byte when it
        # goes to the next header): a member cut by a broken stream is not a clip we have.
        pending = None
        for ordinal, member in enumerate(tar):
            if pending is not None:
                yield from self._confirm(pending, seen)
                pending = None
            name = member.name[2:] if member.name.startswith("./") else member.name
            if member.isdir():
                continue
            why = unsafe_reason(name)
            if why:
                self._rejected.inc()
                yield beam.pvalue.TaggedOutput(FAILURES, Failure(archive, name, "unsafe_path", why))
                continue
            if not member.isfile():
                self._rejected.inc()
                kind = "link" if member.issym() or member.islnk() else "special file"
                yield beam.pvalue.TaggedOutput(FAILURES, Failure(archive, name, "not_a_file", kind))
                continue
            split = tsv_split(name)
            if split is not None:
                yield from self._tsv(archive, name, split, tar.extractfile(member), seen["tsv_rows"])
            elif is_clip_member(name):
                ref = MemberRef(ranges.place(member.offset_data, member.size), ordinal, member.offset_data,
                                member.size)
                pending = ((archive, name), ref)
            else:
                seen["other_members"] += 1
        if pending is not None:
            yield from self._confirm(pending, seen)

    def _confirm(self, keyed_ref, seen: dict):
        seen["clips"] += 1
        self._clips.inc()
        self._report(seen)
        yield beam.pvalue.TaggedOutput(CLIPS, keyed_ref)

    def _report(self, seen: dict) -> None:
        """Pass 1 of a large archive takes minutes on one core: its bytes read, rate and time left."""
        archive, reader = self._where
        read_mb = reader.position() / 1e6
        if self._meter.add(read_mb - self._meter.done):
            _LOG.info("speechid read, pass 1 (index) %s: %s; %d clips, %d TSV rows", posixpath.basename(archive),
                      self._meter.text("MB"), seen["clips"], sum(seen["tsv_rows"].values()))

    def _tsv(self, archive: str, name: str, split: str, stream, counts: dict):
        selected = split in self._splits
        counts.setdefault(name, 0)
        for item in parse_tsv(stream, archive, name, split, selected):
            counts[name] += 1
            self._rows.inc()
            if item is None:
                yield beam.pvalue.TaggedOutput(EVENTS, ("rows_skipped_by_policy", split, 1))
            elif isinstance(item, Failure):
                yield beam.pvalue.TaggedOutput(FAILURES, item)
            else:
                yield item


class ReadArchives(beam.PTransform):
    """PCollection of archive paths -> dict of PCollections: rows, clips (``MemberRef``), failures, events,
    indexes (pass 1; ``ReadClipRanges`` is pass 2).

    ``index_dir`` is a temporary folder every worker can read (under the job's staging or temp location);
    ``range_bytes`` None sizes ranges from each archive's size (``seekable.plan``).
    """

    def __init__(
        self,
        index_dir: str,
        splits: tuple[str, ...] = schema.SPLITS,
        range_bytes: int | None = None,
        progress_interval: float = 30.0,
    ):
        super().__init__()
        self._index_dir = index_dir
        self._splits = tuple(splits)
        self._range_bytes = range_bytes
        self._progress_interval = progress_interval

    def expand(self, archives):
        fn = IndexArchive(self._splits, self._index_dir, self._range_bytes, self._progress_interval)
        out = archives | "IndexArchive" >> beam.ParDo(fn).with_outputs(CLIPS, FAILURES, EVENTS, INDEXES, main=ROWS)
        return {ROWS: out[ROWS], CLIPS: out[CLIPS], FAILURES: out[FAILURES], EVENTS: out[EVENTS],
                INDEXES: out[INDEXES]}


_SKIP_LIMIT = 4 << 20  # a gap between two members larger than this is seeked over, not decompressed


class ReadRange(beam.DoFn):
    """((archive, range), [(row, MemberRef)]) -> (row, Clip) with the member's bytes, in archive order.

    One seek to the range's first member, then forward reads only. Readers stay open per archive between
    ranges (a gzip index is imported once per worker and archive, not once per range). A clip larger than
    ``max_clip_bytes`` is not read (``Clip.data`` None: the decoder fails it as ``too_large``).
    """

    def __init__(self, max_clip_bytes: int | None):
        self._max_bytes = max_clip_bytes
        self._read = Metrics.counter(NAMESPACE, "clips_read")

    def setup(self):
        self._readers: dict[str, seekable.RangeReader] = {}

    def _reader(self, archive: str, index: seekable.ArchiveIndex) -> seekable.RangeReader:
        reader = self._readers.get(archive)
        if reader is None:
            for old in self._readers.values():  # one open archive per worker thread is enough
                old.close()
            self._readers = {archive: seekable.RangeReader(archive, index, _SKIP_LIMIT)}
            reader = self._readers[archive]
        return reader

    def _drop(self, archive: str) -> None:
        reader = self._readers.pop(archive, None)
        if reader is not None:
            reader.close()

    def process(self, element, indexes):
        (archive, _), pairs = element
        index = indexes.get(archive, seekable.ArchiveIndex(seekable.PLAIN))
        for row, ref in sorted(pairs, key=lambda pair: pair[1].offset):
            if self._max_bytes is not None and ref.size > self._max_bytes:
                yield row, Clip(None, ref.size, ref.ordinal)  # not read at all
                continue
            try:
                data = self._reader(archive, index).read(ref.offset, ref.size)
            except (EOFError, OSError, ValueError, zlib.error) as e:
                self._drop(archive)
                path = clip_member_path(row.tsv, row.get("path"))
                detail = f"indexed in pass 1 but not readable again at byte {ref.offset}: {e}"
                yield beam.pvalue.TaggedOutput(FAILURES, Failure(archive, path, "member_unreadable", detail,
                                                                 row.split, row.tsv, row.line, rows=1, clips=1))
                continue
            self._read.inc()
            yield row, Clip(data, ref.size, ref.ordinal)

    def teardown(self):
        for reader in getattr(self, "_readers", {}).values():
            reader.close()


class ReadClipRanges(beam.PTransform):
    """{pairs: (TsvRow, MemberRef), indexes: (archive, ArchiveIndex)} -> {pairs: (TsvRow, Clip), failures}.

    Pass 2. The pairs are grouped by (archive, range): only rows and member places are shuffled, and each
    range is read by one worker straight from the archive (``seekable.RangeReader``), so one archive is
    read by every worker at once and its clips are decoded where they are read (the next ParDo is fused).
    """

    def __init__(self, max_clip_bytes: int | None = None):
        super().__init__()
        self._max_bytes = max_clip_bytes

    def expand(self, inputs):
        pairs, indexes = inputs[PAIRS], inputs[INDEXES]
        out = (
            pairs
            | "KeyByRange" >> beam.Map(lambda pair: ((pair[0].archive, pair[1].range_id), pair))
            | "GroupByRange" >> beam.GroupByKey()
            | "ReadRange"
            >> beam.ParDo(ReadRange(self._max_bytes), beam.pvalue.AsDict(indexes))
            .with_outputs(FAILURES, main=PAIRS)
        )
        return {PAIRS: out[PAIRS], FAILURES: out[FAILURES]}
