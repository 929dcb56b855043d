"""Common Voice's release layout, written deterministically: the TSV header and names, TSV fields no reader
splits, and tarballs with fixed metadata (the same input gives the same bytes). The layout is the one
Common Voice's releases ship; ``speechid.corpora.release`` and ``speechid.corpora.synth`` write it.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import tarfile
from collections.abc import Iterable

CV_HEADER = ("client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent", "locale", "segment")
TSV_NAMES = ("train", "dev", "test", "validated", "invalidated", "other")
SPLITS = ("train", "dev", "test")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # tabs, line breaks and what splitlines() splits on


def tsv_text(text: str) -> str:
    """``text`` as one TSV field that no reader splits: control characters and line separators escaped
    (``\\t``, ``\\n``, ``\\x0c``), bytes that are not UTF-8 as ``\\xNN``. Unchanged for a writable name."""
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file name decodes to
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def tsv_bytes(header: tuple, rows: Iterable) -> bytes:
    """TSV bytes read back with ``csv.QUOTE_NONE`` as Common Voice's are (a quote is an ordinary character).
    A str row is written raw."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", quoting=csv.QUOTE_NONE, quotechar=None, escapechar=None,
                   lineterminator="\n")
    w.writerow(header)
    for r in rows:
        if isinstance(r, str):
            buf.write(r + "\n")
        else:
            w.writerow(r)
    return buf.getvalue().encode("utf-8")


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """A regular file member with fixed metadata (the same input gives the same archive bytes)."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


# The writers below write in place: their callers write into a staging folder (``speechid.outputs.staged``),
# which is what makes the result appear whole or not at all.


def write_tarball(path: str, members: Iterable[tuple[str, bytes]]) -> None:
    """(member name, bytes) pairs -> a deterministic ``.tar.gz`` at ``path``."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for name, data in members:
                add_member(tar, name, data)


def write_small_tsv(path: str, header: tuple, rows: Iterable) -> None:
    with open(path, "wb") as f:
        f.write(tsv_bytes(header, rows))
