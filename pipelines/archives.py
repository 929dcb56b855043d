"""Stream Common Voice archives into keyed TSV rows and keyed clip bytes, without extracting anything.

One DoFn call reads one archive front to back with ``tarfile`` in stream mode (``'r|*'``: plain, gzip, bz2
or xz, detected from the bytes) through Beam's ``FileSystems``, so the same code reads a local path or a
``gs://`` object and never holds more than one member in memory. Member order does not matter: the
prep pipeline joins rows to clips by key afterwards.

Elements, all keyed by ``ClipKey = (archive, clip member path)``:

- ``TsvRow``: one data line of train/dev/test/validated/invalidated/other.tsv (read with
  ``csv.QUOTE_NONE``: Common Voice sentences hold unbalanced quotes). Rows of TSVs not selected by
  ``--splits`` keep only their key and position: they are needed to count clips "not selected by
  policy", not to write records.
- ``Clip``: the bytes of a member under ``.../clips/``; ``data`` is None when the member is larger than
  the byte limit, so a hostile archive cannot make a worker allocate gigabytes.
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

_LOG = logging.getLogger(__name__)
NAMESPACE = "speechid.prep"

ClipKey = tuple[str, str]  # (archive path, member path of the clip inside it)
Event = tuple[str, str, object]  # (kind, key, value): see manifest.CountEvents

# Tagged outputs shared by the stages.
ROWS, CLIPS, FAILURES, EVENTS = "rows", "clips", "failures", "events"

# Reasons a row, clip or member goes to failures/ besides speechid.errors.AUDIO_REASONS.
READ_REASONS = (
    "unsafe_path",  # absolute member name or one with '..' (also for a TSV 'path' field)
    "not_a_file",  # link, device or fifo member: nothing to read in stream mode
    "malformed_row",  # wrong field count, empty client_id/path, bad vote count, header without them
    "undecodable_row",  # bytes that are not UTF-8 (an identity must not change by replacement characters)
    "unusable_tsv",  # a selected TSV whose header lacks client_id or path (its rows fail as malformed_row)
    "archive_unreadable",  # not a tar archive (or an unknown compression)
    "archive_truncated",  # the stream ended or broke before the end-of-archive marker
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
    return posixpath.basename(posixpath.dirname(member)) == "clips"


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

    Bytes that are not UTF-8 are kept as they are (``surrogateescape``) so that a clip path still
    matches its member name, and a selected row holding any fails as ``undecodable_row``: replacing
    them would silently turn one client_id into another.
    """
    text = io.TextIOWrapper(
        io.BufferedReader(_ForwardOnly(stream)), encoding="utf-8-sig", errors="surrogateescape", newline=""
    )
    reader = csv.reader(text, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None) or []
    path_col = header.index("path") if "path" in header else None
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if selected and missing:
        found = ", ".join(printable(c) for c in header) or "none"
        yield Failure(archive, tsv, "unusable_tsv", f"header lacks {', '.join(missing)} (columns: {found})", split,
                      tsv, 1)
    for fields in reader:
        if not fields:  # a blank line holds no row
            continue
        line = reader.line_num
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


class StreamArchive(beam.DoFn):
    """archive path -> rows (main output), clips, failures and events (tagged outputs)."""

    def __init__(self, splits: tuple[str, ...], max_clip_bytes: int | None, progress_interval: float = 30.0):
        self._splits = tuple(splits)
        self._max_bytes = max_clip_bytes
        self._rows = Metrics.counter(NAMESPACE, "rows_read")
        self._clips = Metrics.counter(NAMESPACE, "clips_seen")
        self._rejected = Metrics.counter(NAMESPACE, "members_rejected")
        self._progress_interval = progress_interval

    def setup(self):
        from speechid.pipelines.jobs import Progress

        self._progress = Progress("speechid prep read", self._progress_interval)

    def process(self, archive: str):
        # Counted as we go, emitted after the loop: a stream that breaks midway still reports what it read.
        seen = {"clips": 0, "other_members": 0, "tsv_rows": {}}
        try:
            with FileSystems.open(archive, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
                with tarfile.open(fileobj=raw, mode="r|*") as tar:
                    yield from self._members(archive, tar, seen)
        except tarfile.ReadError as e:
            # The first block decides it: nothing was read (not a tar) or the stream broke later.
            reason = "archive_truncated" if seen["clips"] or seen["other_members"] else "archive_unreadable"
            yield beam.pvalue.TaggedOutput(FAILURES, Failure(archive, "", reason, str(e)))
        except (EOFError, zlib.error, OSError) as e:
            yield beam.pvalue.TaggedOutput(FAILURES, Failure(archive, "", "archive_truncated", str(e)))
        _LOG.info("speechid prep read %s: %d clips, %d other members", archive, seen["clips"], seen["other_members"])
        for tsv, n in seen["tsv_rows"].items():
            yield beam.pvalue.TaggedOutput(EVENTS, ("tsv_rows", f"{archive}!{tsv}", n))
        yield beam.pvalue.TaggedOutput(EVENTS, ("clips_seen", archive, seen["clips"]))
        yield beam.pvalue.TaggedOutput(EVENTS, ("members_ignored", archive, seen["other_members"]))

    def _members(self, archive: str, tar: tarfile.TarFile, seen: dict):
        for ordinal, member in enumerate(tar):
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
                if self._max_bytes is not None and member.size > self._max_bytes:
                    clip = Clip(None, member.size, ordinal)  # not read: the stream skips it
                else:
                    clip = Clip(tar.extractfile(member).read(), member.size, ordinal)
                # Counted once read whole: a member cut by a broken stream is not a clip we have.
                seen["clips"] += 1
                self._clips.inc()
                self._progress.tick("clips")
                yield beam.pvalue.TaggedOutput(CLIPS, ((archive, name), clip))
            else:
                seen["other_members"] += 1

    def _tsv(self, archive: str, name: str, split: str, stream, counts: dict):
        selected = split in self._splits
        counts.setdefault(name, 0)
        for item in parse_tsv(stream, archive, name, split, selected):
            counts[name] += 1
            self._rows.inc()
            self._progress.tick("rows")
            if item is None:
                yield beam.pvalue.TaggedOutput(EVENTS, ("rows_skipped_by_policy", split, 1))
            elif isinstance(item, Failure):
                yield beam.pvalue.TaggedOutput(FAILURES, item)
            else:
                yield item


class ReadArchives(beam.PTransform):
    """PCollection of archive paths -> dict of PCollections: rows, clips, failures, events."""

    def __init__(
        self,
        splits: tuple[str, ...] = schema.SPLITS,
        max_clip_bytes: int | None = None,
        progress_interval: float = 30.0,
    ):
        super().__init__()
        self._splits = tuple(splits)
        self._max_bytes = max_clip_bytes
        self._progress_interval = progress_interval

    def expand(self, archives):
        fn = StreamArchive(self._splits, self._max_bytes, self._progress_interval)
        out = archives | "StreamArchive" >> beam.ParDo(fn).with_outputs(CLIPS, FAILURES, EVENTS, main=ROWS)
        return {ROWS: out[ROWS], CLIPS: out[CLIPS], FAILURES: out[FAILURES], EVENTS: out[EVENTS]}
