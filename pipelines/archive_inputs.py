"""Which archives a run reads: its ``--input`` patterns matched to files, and each file checked before
the job starts (both jobs; embed also reads other kinds of input, ``speechid.pipelines.embed_inputs``).

A pattern that matches nothing, names a folder, or matches a file that is not an archive at all is a
``ConfigError``/``InputError`` naming it, so a wrong input fails in a second, not after a job started.
"""

from __future__ import annotations

import os
import re
import tarfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from speechid import outputs
from speechid.errors import ConfigError, InputError

GLOB_CHARS = re.compile(r"[*?[]")  # what Beam's FileSystems.match takes as a glob (it has no escape)


def literal_path(pattern: str) -> bool:
    """True when ``pattern`` holds glob characters and yet names an existing file or folder
    (``cv [en] 2024.tar.gz``): it is that path, not a glob that would miss it."""
    if not GLOB_CHARS.search(pattern):
        return False
    try:
        return FileSystems.exists(pattern)
    except Exception:  # a pattern a filesystem refuses to look up is matched as a glob
        return False


def match_archives(patterns: Sequence[str]) -> list[str]:
    """Every file the patterns match (local or gs://), sorted and de-duplicated; ConfigError if one matches
    none or names a folder. An existing path is taken as it is, glob characters in its name or not."""
    if not patterns:
        raise ConfigError("no --input archive given")
    found: set[str] = set()
    for pattern in patterns:
        try:
            files = [pattern] if literal_path(pattern) else [
                m.path for r in FileSystems.match([pattern]) for m in r.metadata_list
            ]
        except Exception as e:  # Beam raises BeamIOError/ValueError depending on the scheme
            raise ConfigError(f"--input {pattern}: {e}") from None
        files = [f for f in files if not f.endswith("/")]
        folders = [f for f in files if outputs.is_local(f) and os.path.isdir(f)]
        if folders:
            raise InputError(f"--input {folders[0]}: a folder, not an archive (give the archives in it, e.g. "
                             f"'{os.path.join(folders[0], '*.tar.gz')}')")
        if not files:
            raise ConfigError(f"--input {pattern}: no archive matches")
        found.update(os.path.abspath(f) if outputs.is_local(f) else f for f in files)
    return sorted(found)


def check_archives(archives: Sequence[str]) -> None:
    """InputError naming the first archive that is not one at all (``archive_problem``).

    Archives are opened in parallel threads (one block read each), so thousands on gs:// take seconds.
    """
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(archives)))) as pool:
        problems = list(pool.map(archive_problem, archives))
    for archive, problem in zip(archives, problems, strict=True):
        if problem:
            raise InputError(f"--input {archive}: {problem}")


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
