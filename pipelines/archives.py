"""Read Common Voice archives in two passes, without extracting them and without shuffling audio.

Pass 1 (``ReadArchives``: one element per archive) streams the archive once, front to back, with
``tarfile`` in stream mode through Beam's ``FileSystems`` (local or ``gs://``; plain, gzip, bz2 or xz). It
parses the TSVs wherever they sit (older releases put them before ``clips/``, the current bundler after;
``speechid.pipelines.tsv``), records each clip member's place (``MemberRef``: range, ordinal, data
offset, size) without keeping its bytes, and builds a gzip seek index (``seekable``) that it writes to a
temporary folder.

Between the passes, ``JoinRowsToClips`` joins rows to member places by key (small elements only) and
applies the row and clip policy. Pass 2 (``ReadClipRanges``) groups the joined pairs by (archive, range):
contiguous runs of members of 1-64 MiB, a few hundred per large archive. Each range is read by one
worker straight from the archive (one seek, then forward reads), so every worker reads the same archive
at once and decodes its clips where it read them. Memory stays flat however large the archive: no
PCollection holds audio. Both jobs read archives this way (prep's ``PrepCorpus``, embed's
``ReadArchiveClips``).

Elements, all keyed by ``ClipKey = (archive, clip member path)``:

- ``TsvRow``: one data line of a split TSV (``speechid.pipelines.tsv``).
- ``MemberRef`` (pass 1) and ``Clip`` (pass 2: the bytes; ``data`` is None when the member is larger than
  the byte limit, so a hostile archive cannot make a worker allocate gigabytes).
- ``Failure``: a dead-letter entry (unsafe member names, malformed rows, unreadable archives, ...).
- events ``(kind, key, value)``: small counts the manifest is computed from (see ``manifest.py``).
"""

from __future__ import annotations

import logging
import posixpath
import tarfile
import zlib
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from speechid import schema
from speechid.pipelines import seekable
from speechid.pipelines.failures import FAILURES, Failure
from speechid.pipelines.manifest import EVENTS
from speechid.pipelines.tsv import TsvRow, clip_member_path, parse_tsv, tsv_split, unsafe_reason
from speechid.progress import Meter

_LOG = logging.getLogger(__name__)

# Tagged outputs of the stages (FAILURES and EVENTS are both jobs' own, see failures.py and manifest.py).
ROWS, CLIPS, INDEXES, PAIRS = "rows", "clips", "indexes", "pairs"
SEEK_INDEX_DIR = "_seek_index"  # pass 1 -> pass 2, a folder in the job's staging that every worker reads


@dataclass(frozen=True)
class Clip:
    """A clip member's bytes; ``ordinal`` is its position in the archive (a later duplicate wins, as in tar)."""

    data: bytes | None  # None: larger than the byte limit, not read
    size: int
    ordinal: int


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


def is_clip_member(member: str) -> bool:
    """True for a member anywhere under a ``clips/`` folder: a TSV path may name a subfolder
    (``sub dir/x.mp3`` is ``<tsv folder>/clips/sub dir/x.mp3``, see ``clip_member_path``)."""
    return "clips" in member.split("/")[:-1]


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
                 progress_interval: float = 30.0, *, namespace: str):
        self._splits = tuple(splits)
        self._index_dir = index_dir
        self._range_bytes = range_bytes
        self._rows = Metrics.counter(namespace, "rows_read")
        self._clips = Metrics.counter(namespace, "clips_seen")
        self._rejected = Metrics.counter(namespace, "members_rejected")
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
    ``range_bytes`` None sizes ranges from each archive's size (``seekable.plan``); counters go to the
    running job's metrics ``namespace`` (``speechid.pipelines.metrics``).
    """

    def __init__(
        self,
        index_dir: str,
        splits: tuple[str, ...] = schema.SPLITS,
        range_bytes: int | None = None,
        progress_interval: float = 30.0,
        *,
        namespace: str,
    ):
        super().__init__()
        self._index_dir = index_dir
        self._splits = tuple(splits)
        self._range_bytes = range_bytes
        self._progress_interval = progress_interval
        self._namespace = namespace

    def expand(self, archives):
        fn = IndexArchive(self._splits, self._index_dir, self._range_bytes, self._progress_interval,
                          namespace=self._namespace)
        out = archives | "IndexArchive" >> beam.ParDo(fn).with_outputs(CLIPS, FAILURES, EVENTS, INDEXES, main=ROWS)
        return {ROWS: out[ROWS], CLIPS: out[CLIPS], FAILURES: out[FAILURES], EVENTS: out[EVENTS],
                INDEXES: out[INDEXES]}



_SPLIT_RANK = {s: i for i, s in enumerate(schema.ALL_SPLITS)}


class MatchClip(beam.DoFn):
    """(key, {rows, clips}) -> the (row, clip) pair to decode, or failures and counts.

    Policy, in order: earlier duplicate members of a clip fail (``duplicate``), the last one wins as in
    tar extraction; rows of unselected TSVs are counted as skipped by policy; of the selected rows the
    first by (split, TSV, line) is kept and the others fail as ``duplicate``; a kept row with no clip
    fails as ``missing_clip``; a clip no selected row lists is counted as not selected or unlisted.
    Only the kept member is read past this point (``archives.ReadClipRanges``). Works on anything with an
    ``ordinal``: ``MemberRef`` in the pipelines, ``Clip`` in tests.
    """

    def process(self, element):
        (archive, path), grouped = element
        kept: Clip | None = None
        for clip in grouped[CLIPS]:
            if kept is None:
                kept = clip
                continue
            older, kept = (kept, clip) if clip.ordinal > kept.ordinal else (clip, kept)
            detail = f"member #{older.ordinal} repeated as #{kept.ordinal}; the later one is used"
            yield beam.pvalue.TaggedOutput(FAILURES, Failure(archive, path, "duplicate", detail, clips=1))

        selected: list[TsvRow] = []
        listed = False
        for row in grouped[ROWS]:
            listed = True
            if row.selected:
                selected.append(row)
            else:
                yield beam.pvalue.TaggedOutput(EVENTS, ("rows_skipped_by_policy", row.split, 1))
        if not selected:
            if kept is not None:
                kind = "clips_not_selected" if listed else "clips_unlisted"
                yield beam.pvalue.TaggedOutput(EVENTS, (kind, archive, 1))
            return
        selected.sort(key=lambda r: (_SPLIT_RANK[r.split], r.tsv, r.line))
        first = selected[0]
        for row in selected[1:]:
            detail = f"clip already listed in {first.tsv} line {first.line}"
            yield beam.pvalue.TaggedOutput(
                FAILURES, Failure(archive, path, "duplicate", detail, row.split, row.tsv, row.line, rows=1)
            )
        if kept is None:
            yield beam.pvalue.TaggedOutput(
                FAILURES,
                Failure(archive, path, "missing_clip", "no such member", first.split, first.tsv, first.line, rows=1),
            )
            return
        yield first, kept


class JoinRowsToClips(beam.PTransform):
    """{rows: (key, TsvRow), clips: (key, MemberRef)} -> {pairs: (TsvRow, MemberRef), failures, events}.

    Only rows and member places are shuffled (CoGroupByKey on small elements), never audio bytes."""

    def expand(self, keyed):
        out = (
            {ROWS: keyed[ROWS], CLIPS: keyed[CLIPS]}
            | "CoGroupByKey" >> beam.CoGroupByKey()
            | "MatchClip" >> beam.ParDo(MatchClip()).with_outputs(FAILURES, EVENTS, main=PAIRS)
        )
        return {PAIRS: out[PAIRS], FAILURES: out[FAILURES], EVENTS: out[EVENTS]}



_SKIP_LIMIT = 4 << 20  # a gap between two members larger than this is seeked over, not decompressed


class ReadRange(beam.DoFn):
    """((archive, range), [(row, MemberRef)]) -> (row, Clip) with the member's bytes, in archive order.

    One seek to the range's first member, then forward reads only. Readers stay open per archive between
    ranges (a gzip index is imported once per worker and archive, not once per range). A clip larger than
    ``max_clip_bytes`` is not read (``Clip.data`` None: the decoder fails it as ``too_large``).
    """

    def __init__(self, max_clip_bytes: int | None, namespace: str):
        self._max_bytes = max_clip_bytes
        self._read = Metrics.counter(namespace, "clips_read")

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
    Counters go to the running job's metrics ``namespace``.
    """

    def __init__(self, max_clip_bytes: int | None = None, *, namespace: str):
        super().__init__()
        self._max_bytes = max_clip_bytes
        self._namespace = namespace

    def expand(self, inputs):
        pairs, indexes = inputs[PAIRS], inputs[INDEXES]
        out = (
            pairs
            | "KeyByRange" >> beam.Map(lambda pair: ((pair[0].archive, pair[1].range_id), pair))
            | "GroupByRange" >> beam.GroupByKey()
            | "ReadRange"
            >> beam.ParDo(ReadRange(self._max_bytes, self._namespace), beam.pvalue.AsDict(indexes))
            .with_outputs(FAILURES, main=PAIRS)
        )
        return {PAIRS: out[PAIRS], FAILURES: out[FAILURES]}

