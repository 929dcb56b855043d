"""Any folder of audio plus a speakers TSV (VoxCeleb, LibriSpeech, in-house recordings).

The TSV has one row per clip: ``path<TAB>speaker`` and optionally ``<TAB>split`` (train, dev or test; a
speaker's rows must agree). ``path`` is relative to the audio folder (an absolute path must lie inside
it). A first row ``path<TAB>speaker[<TAB>split]`` is taken as a header. Every audio file under the folder
that no row lists is reported ``unlabelled``; a row whose file does not exist is ``missing``; a row that
points outside the folder is ``unsafe_path``, and so is a file whose name no TSV can hold (a tab, a line
break); a row the csv module cannot read (a field over 128 KiB) is ``malformed_row``; so every file and
every row is accounted for. Two paths that flatten to one clip name are both kept (``clip_name``,
``_unique_name``).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator

from speechid.corpora.release import SPLITS, SourceClip, SourceFailure, tsv_text
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
    root = os.path.realpath(audio_dir)
    listed: set[str] = set()
    names: dict[str, str] = {}
    for line, row in _read_rows(speakers_tsv):
        origin = f"{os.path.basename(speakers_tsv)}:{line}"
        if isinstance(row, str):
            yield SourceFailure(origin, "malformed_row", row)
            continue
        path = row[0].strip() if row else ""
        speaker = row[1].strip() if len(row) > 1 else ""
        split = row[2].strip().lower() if len(row) > 2 else ""
        if not path or not speaker or len(row) > 3 or (split and split not in SPLITS):
            yield SourceFailure(origin, "malformed_row", "expected path<TAB>speaker[<TAB>train|dev|test]")
            continue
        full = os.path.realpath(os.path.join(root, path))
        if os.path.commonpath([root, full]) != root:
            yield SourceFailure(f"{origin} {path}", "unsafe_path", f"outside {audio_dir}", speaker)
            continue
        relative = os.path.relpath(full, root)
        if relative in listed:
            yield SourceFailure(f"{origin} {relative}", "malformed_row", "path listed twice", speaker)
            continue
        if not os.path.isfile(full):
            yield SourceFailure(f"{origin} {relative}", "missing", "no such file", speaker)
            continue
        listed.add(relative)
        why = _unwritable(relative)  # a listed link to such a file
        if why:
            yield SourceFailure(f"{origin} {tsv_text(relative)}", "unsafe_path", f"{why}: rename it", speaker)
            continue
        name = _unique_name(clip_name(relative), names)
        names[name] = relative

        def read(full=full) -> bytes:
            with open(full, "rb") as f:
                return f.read()

        yield SourceClip(
            speaker=speaker, name=name, origin=relative, locale=locale, read=read, split=split or None, source=audio_dir
        )
    for dirpath, _dirs, files in os.walk(root):
        for file_name in sorted(files):
            relative = os.path.relpath(os.path.join(dirpath, file_name), root)
            if not file_name.lower().endswith(AUDIO_EXTENSIONS) or relative in listed:
                continue
            why = _unwritable(relative)
            if why:  # no row can list it, and failures.tsv shows it escaped
                yield SourceFailure(tsv_text(relative), "unsafe_path", f"{why}, which no TSV row can list: rename it")
            else:
                yield SourceFailure(relative, "unlabelled", f"no row of {os.path.basename(speakers_tsv)} lists it")
