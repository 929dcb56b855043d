"""Any folder of audio plus a speakers TSV (VoxCeleb, LibriSpeech, in-house recordings).

The TSV has one row per clip: ``path<TAB>speaker`` and optionally ``<TAB>split`` (train, dev or test; a
speaker's rows must agree). ``path`` is relative to the audio folder (an absolute path must lie inside
it). A first row ``path<TAB>speaker[<TAB>split]`` is taken as a header. Every audio file under the folder
that no row lists is reported ``unlabelled``; a row whose file does not exist is ``missing``; a row that
points outside the folder is ``unsafe_path``, and so is a file whose name no TSV can hold (a tab, a line
break); a row the csv module cannot read (a field over 128 KiB) is ``malformed_row``; so every file and
every row is accounted for. Two paths that flatten to one clip name are both kept (``clip_name``,
``_unique_name``). The TSV format is speechid's own, defined here.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator

from speechid.corpora.layout import SPLITS, tsv_text
from speechid.corpora.sources import SourceClip, SourceFailure
from speechid.errors import ConfigError

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def _read_rows(speakers_tsv: str) -> list[tuple[int, list[str] | str]]:
    """(line, fields) of each row that is not blank; for a line the csv module refuses (a field over its
    128 KiB limit), (line, why) instead: that row fails, the rows after it are still read."""
    rows: list[tuple[int, list[str] | str]] = []
    try:
        with open(speakers_tsv, newline="", encoding="utf-8-sig") as f:  # a BOM, as spreadsheets save it
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as e:
                    rows.append((reader.line_num, f"unreadable line: {e}"))
                    continue
                if row:
                    rows.append((reader.line_num, row))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{speakers_tsv}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if rows and isinstance(rows[0][1], list) and [c.strip().lower() for c in rows[0][1][:2]] == ["path", "speaker"]:
        rows = rows[1:]
    if not rows:
        raise ConfigError(f"{speakers_tsv}: no rows (expected path<TAB>speaker[<TAB>split])")
    return rows


def clip_name(relative: str) -> str:
    """A folder-free, archive-safe file name for a relative path (``a/b c.wav`` -> ``a__b_c.wav``)."""
    stem, ext = os.path.splitext(relative.replace("\\", "/"))
    return "__".join(_UNSAFE_CHARS.sub("_", part) for part in stem.split("/")) + _UNSAFE_CHARS.sub("_", ext.lower())


def _unique_name(name: str, taken: dict[str, str]) -> str:
    """``name``, or the first free ``<stem>__1<ext>``, ``<stem>__2<ext>``, ... when it is taken: two paths that
    flatten to one name (``a_b/2.mp3``, ``a_b__2.mp3``) are both kept, named by the order of the rows."""
    stem, ext = os.path.splitext(name)
    k = 0
    while name in taken:
        k += 1
        name = f"{stem}__{k}{ext}"
    return name


def _unwritable(relative: str) -> str:
    """Why a file's name cannot go into a TSV (failures.tsv included), or "" when it can."""
    if tsv_text(relative) == relative:
        return ""
    what = next((w for c, w in (("\t", "a tab"), ("\n", "a line break"), ("\r", "a line break")) if c in relative),
                "a control character or bytes that are not UTF-8")
    return f"its name holds {what}"


def clips(audio_dir: str, speakers_tsv: str, locale: str = "und") -> Iterator[SourceClip | SourceFailure]:
    """Every labelled row and every unlisted audio file under ``audio_dir``."""
    if not os.path.isdir(audio_dir):
        raise ConfigError(f"{audio_dir}: not a folder")
    if not os.path.isfile(speakers_tsv):
        raise ConfigError(f"{speakers_tsv}: no such speakers TSV")
    rows = _Rows(audio_dir, os.path.realpath(audio_dir), locale)
    for line, row in _read_rows(speakers_tsv):
        yield rows.clip(f"{os.path.basename(speakers_tsv)}:{line}", row)
    yield from _unlisted(rows.root, rows.listed, os.path.basename(speakers_tsv))


class _Rows:
    """The speakers TSV's rows as clips: which files they listed, which clip names they took."""

    def __init__(self, audio_dir: str, root: str, locale: str):
        self.audio_dir, self.root, self.locale = audio_dir, root, locale
        self.listed: set[str] = set()  # files (relative to root) a row took
        self.names: dict[str, str] = {}  # clip name -> the file it is

    def clip(self, origin: str, row: list[str] | str) -> SourceClip | SourceFailure:
        """Row ``row`` (or why the csv module could not read it) at ``origin`` as a clip or a failure."""
        if isinstance(row, str):
            return SourceFailure(origin, "malformed_row", row)
        path = row[0].strip() if row else ""
        speaker = row[1].strip() if len(row) > 1 else ""
        split = row[2].strip().lower() if len(row) > 2 else ""
        if not path or not speaker or len(row) > 3 or (split and split not in SPLITS):
            return SourceFailure(origin, "malformed_row", "expected path<TAB>speaker[<TAB>train|dev|test]")
        full = os.path.realpath(os.path.join(self.root, path))
        failure = self._refused(origin, path, full, speaker)
        if failure:
            return failure
        relative = os.path.relpath(full, self.root)
        name = _unique_name(clip_name(relative), self.names)
        self.names[name] = relative

        def read(full=full) -> bytes:
            with open(full, "rb") as f:
                return f.read()

        return SourceClip(speaker=speaker, name=name, origin=relative, locale=self.locale, read=read,
                          split=split or None, source=self.audio_dir)

    def _refused(self, origin: str, path: str, full: str, speaker: str) -> SourceFailure | None:
        """Why the file a row names cannot be a clip (outside the folder, listed twice, missing, a name no
        TSV holds), or None; a file that can is marked listed."""
        if os.path.commonpath([self.root, full]) != self.root:
            return SourceFailure(f"{origin} {path}", "unsafe_path", f"outside {self.audio_dir}", speaker)
        relative = os.path.relpath(full, self.root)
        if relative in self.listed:
            return SourceFailure(f"{origin} {relative}", "malformed_row", "path listed twice", speaker)
        if not os.path.isfile(full):
            return SourceFailure(f"{origin} {relative}", "missing", "no such file", speaker)
        self.listed.add(relative)
        why = _unwritable(relative)  # a listed link to such a file
        if why:
            return SourceFailure(f"{origin} {tsv_text(relative)}", "unsafe_path", f"{why}: rename it", speaker)
        return None


def _unlisted(root: str, listed: set[str], tsv_name: str) -> Iterator[SourceFailure]:
    """Every audio file under ``root`` that no row listed: ``unlabelled``, or ``unsafe_path`` when its name
    could not be listed."""
    for dirpath, _dirs, files in os.walk(root):
        for file_name in sorted(files):
            relative = os.path.relpath(os.path.join(dirpath, file_name), root)
            if not file_name.lower().endswith(AUDIO_EXTENSIONS) or relative in listed:
                continue
            why = _unwritable(relative)
            if why:  # no row can list it, and failures.tsv shows it escaped
                yield SourceFailure(tsv_text(relative), "unsafe_path", f"{why}, which no TSV row can list: rename it")
            else:
                yield SourceFailure(relative, "unlabelled", f"no row of {tsv_name} lists it")
