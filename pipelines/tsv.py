"""Common Voice TSVs inside an archive: member names, the rows of a TSV, and the checks a row must pass.

``TsvRow`` is one data line of train/dev/test/validated/invalidated/other.tsv, read with
``csv.QUOTE_NONE`` (Common Voice sentences hold unbalanced quotes). Rows of TSVs not selected by
``--splits`` keep only their key and position: they are needed to count clips "not selected by policy",
not to write records. A row keys the clip it lists by ``ClipKey = (archive, clip member path)``
(``clip_member_path``); a row that cannot be used is a ``Failure``.
"""

from __future__ import annotations

import csv
import io
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

from speechid import schema
from speechid.pipelines.failures import Failure, printable

ClipKey = tuple[str, str]  # (archive path, member path of the clip inside it)

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
