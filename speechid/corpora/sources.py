"""What a corpus recipe yields: ``SourceClip`` items (a clip with its speaker label and a way to read its
bytes) and ``SourceFailure`` items (a source item that cannot become a clip, with its reason), which
``speechid.corpora.release.write_release`` turns into a release."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from speechid.errors import AUDIO_REASONS

FAILURE_REASONS = (
    "unlabelled",  # the source does not say who speaks (cutaways, narration, files no TSV row lists)
    "not_speech",  # sound effects stored beside the voices
    "unreadable",  # the bytes could not be read from the source (outside the file, I/O error)
    "missing",  # a labelled path that does not exist
    "malformed_row",  # a speakers TSV row without path and speaker, or with an unknown split
    "unsafe_path",  # a labelled path outside the audio folder, or a file name no TSV can hold (a tab, a newline)
    "duplicate",  # the same bytes as a clip already taken (a file shared by two language folders)
) + AUDIO_REASONS  # and every reason a clip fails to decode for


@dataclass(frozen=True)
class SourceClip:
    """One clip of a source corpus. ``read`` returns its encoded bytes (any format libsndfile decodes)."""

    speaker: str | None  # the label ("fotaq/joe"); None when the source does not say
    name: str  # file name inside clips/ (unique within the corpus, no folders)
    origin: str  # where it came from, for people: "queen.1c:JOE00011.SB"
    locale: str
    read: Callable[[], bytes]
    split: str | None = None  # a split the source itself assigns (folder TSVs); None: chosen here
    source: str = ""  # the source file or folder, for speakers.tsv


@dataclass(frozen=True)
class SourceFailure:
    """A source item that cannot become a clip, found before decoding (no speaker, not speech, ...)."""

    origin: str
    reason: str
    detail: str = ""
    speaker: str = ""

    def __post_init__(self):
        if self.reason not in FAILURE_REASONS:
            raise ValueError(f"unknown corpus failure reason {self.reason!r} ({self.origin})")


class IdenticalFiles:
    """Identical source files are one clip: the first seen is kept, each later copy fails as ``duplicate``.

    Packages share recordings between language folders (byte for byte, or by symbolic link), and one
    recording counted twice is a same-speaker trial of a clip with itself."""

    def __init__(self):
        self._first: dict[bytes, str] = {}

    def copy_of(self, path: str, origin: str) -> SourceFailure | None:
        """None for a file not seen before; else the failure that names the clip it repeats."""
        try:
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).digest()
        except OSError:
            return None  # reading it again for the clip reports why it is unreadable
        first = self._first.setdefault(digest, origin)
        if first == origin:
            return None
        return SourceFailure(origin, "duplicate", f"the same bytes as {first}")

    def clip(self, path: str, origin: str, **fields) -> SourceClip | SourceFailure:
        """The file at ``path`` as a clip kept byte for byte (``fields``: the rest of ``SourceClip``), or
        the ``duplicate`` failure when its bytes were already taken."""
        copy = self.copy_of(path, origin)
        if copy:
            return copy

        def read() -> bytes:
            with open(path, "rb") as f:
                return f.read()

        return SourceClip(origin=origin, read=read, **fields)
