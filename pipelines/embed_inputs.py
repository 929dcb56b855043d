"""What embed reads: the kind of each ``--input``, checked before the job starts, and a reader per kind.

Inputs are Common Voice archives (.tar / .tar.gz), globs of audio files, or the prep pipeline's
TFRecords (a prep output folder stands for all its records), local or on any Beam filesystem (gs://...).
The kind is detected from the pattern and can be forced with ``--input-kind``. ``resolve_inputs`` checks
every input first: a pattern that matches nothing, a folder that is not a prep output, or a file that is
not an archive is an ``InputError`` naming it.

Every reader gives the same dict: ``clips`` (``ClipSource``), ``failures`` (``Failure``: a clip or member
that cannot be read, one per clip) and ``events`` (what the manifest counts besides clips: clips skipped
by policy, members ignored, inputs that failed whole). ``ReadInputs`` reads every input and flattens them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems

from speechid import outputs, schema
from speechid.errors import ConfigError, InputError
from speechid.pipelines.archive_inputs import GLOB_CHARS, check_archives, literal_path, match_archives
from speechid.pipelines.archives import CLIPS, INDEXES, PAIRS, JoinRowsToClips, ReadArchives, ReadClipRanges
from speechid.pipelines.failures import FAILURES, INPUT_REASONS, Failure, input_failed_event
from speechid.pipelines.manifest import EVENTS
from speechid.pipelines.metrics import EMBED

KINDS = ("archive", "audio", "tfrecord")


_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


_TFRECORD_SUFFIXES = (".tfrecord", ".tfrecord.gz")


@dataclass(frozen=True)
class ClipSource:
    """One clip to embed: encoded bytes (archives, files) or decoded audio (TFRecords)."""

    clip_id: str
    source: str
    speaker_id: str | None = None
    split: str | None = None
    data: bytes | None = None
    audio: np.ndarray | None = None
    sample_rate: int = 0


def detect_kind(pattern: str) -> str:
    """'archive', 'tfrecord' or 'audio' from the pattern's suffix (a prep output dir means tfrecord)."""
    p = pattern.rstrip("/")
    if p.endswith(_ARCHIVE_SUFFIXES):
        return "archive"
    if p.endswith(_TFRECORD_SUFFIXES):
        return "tfrecord"
    if FileSystems.exists(os.path.join(p, schema.MANIFEST)):
        return "tfrecord"
    return "audio"


def expand_input(pattern: str, kind: str) -> str:
    """A prep output directory stands for all its split records."""
    if kind == "tfrecord" and not pattern.rstrip("/").endswith(_TFRECORD_SUFFIXES):
        return os.path.join(pattern.rstrip("/"), f"*{schema.RECORD_SUFFIX}")
    return pattern


def resolve_inputs(patterns: list[str], input_kind: str = "auto") -> list[tuple[str, str, list[str]]]:
    """(pattern to read, kind, what it stands for) per input, checked before anything runs.

    "What it stands for" are the paths an output must keep apart from (``speechid.outputs.check_apart``):
    the archives matched, a prep folder, or the glob itself. Errors name the input as given.
    """
    if not patterns:
        raise ConfigError("no --input given")
    resolved = []
    for pattern in patterns:
        kind = detect_kind(pattern) if input_kind == "auto" else input_kind
        if kind not in KINDS:
            raise ConfigError(f"--input-kind {kind!r}: choose from auto, {', '.join(KINDS)}")
        if outputs.is_local(pattern) and os.path.isdir(pattern) and kind != "tfrecord":
            raise InputError(
                f"--input {pattern}: a folder; give a glob of the clips in it (e.g. "
                f"'{os.path.join(pattern, '**', '*.wav')}'), archives, or a `speechid prep` output"
            )
        expanded = expand_input(pattern, kind)
        if kind == "archive":
            archives = match_archives([expanded])
            check_archives(archives)
            resolved.append((expanded, kind, archives))
            continue
        literal = literal_path(pattern)
        if literal:  # Beam's readers glob what they are given, with no escape: '?' stands for each glob character
            expanded = expand_input(GLOB_CHARS.sub("?", pattern), kind)
        try:  # one match is enough to know the pattern is not a typo; the job lists the rest itself
            limits = None if literal else [1]
            found = [m.path for r in FileSystems.match([expanded], limits=limits) for m in r.metadata_list]
        except Exception as e:  # Beam raises BeamIOError/ValueError depending on the scheme
            raise InputError(f"--input {pattern}: {e}") from None
        if not found:
            raise InputError(f"--input {pattern}: no {'record' if kind == 'tfrecord' else 'file'} matches")
        stray = [f for f in found if literal and not _within(f, pattern)]
        if stray:
            raise InputError(f"--input {pattern}: its name holds glob characters, and read as a glob it would also "
                             f"take {stray[0]}; rename it")
        folders = [f for f in found if outputs.is_local(f) and os.path.isdir(f)]
        if folders:
            raise InputError(f"--input {pattern}: matches the folder {folders[0]}; give a glob of files (e.g. "
                             f"'{os.path.join(glob_base(pattern), '**', '*.wav')}')")
        resolved.append((expanded, kind, [pattern.rstrip("/") if kind == "tfrecord" or literal else expanded]))
    return resolved


def _within(found: str, path: str) -> bool:
    """True when ``found`` is ``path`` or lies in the folder ``path``."""
    if outputs.is_local(path):
        found, path = os.path.abspath(found), os.path.abspath(path)
    path = path.rstrip("/")
    return found == path or found.startswith(path + "/")


def glob_base(pattern: str) -> str:
    return outputs.glob_root(pattern).rstrip("/") or "."


# --- reading -------------------------------------------------------------------------------------------


def _nothing_else(pbegin, clips) -> dict:
    """A reader's outputs when only clips can come out of it (audio files, prep records)."""
    out = {CLIPS: clips}
    for name in (FAILURES, EVENTS):
        out[name] = pbegin | f"No{name.title()}" >> beam.Create([])
    return out


class ReadAudioFiles(beam.PTransform):
    """Glob of audio files -> {clips: ClipSource(clip_id=path, data=bytes), failures, events: (none)}."""

    def __init__(self, pattern: str):
        super().__init__()
        self._pattern = pattern

    def expand(self, pbegin):
        clips = (
            pbegin
            | "Pattern" >> beam.Create([self._pattern])
            | "Match" >> fileio.MatchAll()
            | "Open" >> fileio.ReadMatches()
            | "ToClip"
            >> beam.Map(lambda f: ClipSource(clip_id=f.metadata.path, source=f.metadata.path, data=f.read()))
        )
        return _nothing_else(pbegin, clips)


def _record_to_clip(raw: bytes) -> ClipSource:
    rec = schema.from_example(raw)
    return ClipSource(
        clip_id=rec.clip_id,
        source=rec.source,
        speaker_id=rec.client_id or None,
        split=rec.split or None,
        audio=rec.audio,
        sample_rate=rec.sample_rate,
    )


class ReadRecords(beam.PTransform):
    """The prep pipeline's GZIP TFRecords -> {clips: ClipSource(audio=decoded PCM), failures, events: (none)}."""

    def __init__(self, pattern: str):
        super().__init__()
        self._pattern = pattern

    def expand(self, pbegin):
        clips = (
            pbegin
            | "ReadTFRecords" >> beam.io.ReadFromTFRecord(self._pattern, compression_type="gzip")
            | "ParseRecords" >> beam.Map(_record_to_clip)
        )
        return _nothing_else(pbegin, clips)


def _pair_to_clip(pair) -> ClipSource:
    row, clip = pair
    return ClipSource(
        clip_id=row.get("path"),
        source=row.archive,
        speaker_id=row.get("client_id") or None,
        split=row.split if row.split in schema.SPLITS else None,
        data=clip.data,
    )


def _clip_failure(f: Failure) -> Failure:
    """An archive reader's failure as embed records it: one clip, named by its file name."""
    detail = f.detail if f.clips else f"member {f.path}: {f.detail}"  # a refused member: say which
    return Failure(f.archive, f.path.rsplit("/", 1)[-1], f.reason, detail, clips=1)


def _member_level(f: Failure) -> bool:
    """A failure that stands for a clip or an archive member (not for a TSV row, nor a whole input)."""
    return f.clips > 0 or (f.rows == 0 and f.reason not in INPUT_REASONS)


class ReadArchiveClips(beam.PTransform):
    """Common Voice archives -> {clips: ClipSource with client_id and split from the TSVs, failures, events}.

    The archive reader both jobs use (``archives``: an archive is never extracted or held whole, every
    worker reads ranges of it, and no audio byte is shuffled). Every TSV is read, so each clip gets its
    speaker; a clip listed twice (train.tsv and validated.tsv) is one clip. Every clip member ends up
    embedded, failed (a duplicate or refused member, with its reason) or skipped by policy (``unlisted``:
    no TSV row names it, so it has no speaker); other members (TSVs, README) are counted as ignored.
    Row-level problems belong to prep's manifest; an archive or TSV that fails whole is an
    ``inputs_failed`` event. The reader's and the join's events pass on as they are.
    """

    def __init__(self, pattern: str, index_dir: str):
        super().__init__()
        self._pattern = pattern
        self._index_dir = index_dir

    def expand(self, pbegin):
        read = (
            pbegin
            | "ListArchives" >> beam.Create(match_archives([self._pattern]))
            | "ReadArchives" >> ReadArchives(self._index_dir, splits=schema.ALL_SPLITS, namespace=EMBED)
        )
        joined = read | "JoinRowsToClips" >> JoinRowsToClips()
        ranges = {PAIRS: joined[PAIRS], INDEXES: read[INDEXES]} | "ReadClipRanges" >> ReadClipRanges(namespace=EMBED)
        clips = ranges[PAIRS] | "ToClip" >> beam.Map(_pair_to_clip)
        everything = (read[FAILURES], joined[FAILURES], ranges[FAILURES]) | "FlattenFailures" >> beam.Flatten()
        failures = everything | "ClipLevel" >> beam.Filter(_member_level) | "ToClipFailure" >> beam.Map(_clip_failure)
        whole = (
            everything
            | "InputLevel" >> beam.Filter(lambda f: f.reason in INPUT_REASONS)
            | "InputEvents" >> beam.Map(input_failed_event)
        )
        events = (read[EVENTS], joined[EVENTS], whole) | "AllEvents" >> beam.Flatten()
        return {CLIPS: clips, FAILURES: failures, EVENTS: events}


def read_source(pattern: str, kind: str, index_dir: str = "") -> beam.PTransform:
    if kind == "archive":
        return ReadArchiveClips(pattern, index_dir)
    if kind == "tfrecord":
        return ReadRecords(pattern)
    return ReadAudioFiles(pattern)


class ReadInputs(beam.PTransform):
    """(pattern, kind) per input -> {clips, failures, events}, each flattened over the inputs. An archive
    input's seek index goes to a folder of its own under ``index_dir``."""

    def __init__(self, sources: list[tuple[str, str]], index_dir: str):
        super().__init__()
        self._sources = list(sources)
        self._index_dir = index_dir

    def expand(self, pbegin):
        reads = [
            pbegin | f"Read{i}{kind.title()}" >> read_source(pattern, kind, FileSystems.join(self._index_dir, str(i)))
            for i, (pattern, kind) in enumerate(self._sources)
        ]
        return {name: [r[name] for r in reads] | f"Flatten{name.title()}" >> beam.Flatten()
                for name in (CLIPS, FAILURES, EVENTS)}
