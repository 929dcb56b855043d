"""Flight of the Amazon Queen (Debian package ``flight-of-the-amazon-queen``): ~6,700 voiced lines, ~30
characters, in one resource file.

``queen.1c`` starts with a table: the bytes ``QTBL``, a version, a big-endian uint16 entry count at offset
0x0d, then 21-byte entries from 0x0f: name (12 bytes, NUL-padded), bundle (u8), offset (u32 BE), size
(u32 BE), as ScummVM's Queen engine reads it (``engines/queen/resource.cpp``). ``*.SB`` entries are MP3
clips (16 kbit/s, 11,025 Hz mono), kept byte for byte.

Who speaks follows ScummVM's Queen engine (``engines/queen/talk.cpp``):
- ``JOE…`` lines and dialogue lines ``NNxxxxJ#`` (talk key NN, four hex digits or the ``XXXX``/``SSSS``
  placeholders, ``J``) are Joe's;
- dialogue lines ``NNxxxxP#`` belong to the character of the ``.DOG`` dialogue file whose talk key (the
  third int16, big-endian, after its 20-byte header) is NN; DOG names carry a scene number
  (``BOB1`` … ``BOB5`` are one character, Bob), which is stripped;
- everything else (``C##x_###`` cutaways, intro and narration lines) has no speaker in the data and is
  left out, counted as ``unlabelled``.

A character is not an actor: one actor may voice two characters, so a few "different speaker" pairs
may be one voice.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator

from speechid.corpora.sources import SourceClip, SourceFailure
from speechid.errors import ConfigError

PACKAGE = "flight-of-the-amazon-queen"
DEFAULT_SOURCE = "/usr/share/scummvm/flight-of-the-amazon-queen/queen.1c"
RELEASE = "fotaq"
LOCALE = "en"
CAVEAT = "Speakers are game characters, not actors: one actor may voice several characters."

_MAGIC = b"QTBL"
_COUNT_AT = 0x0D
_TABLE_AT = 0x0F
_ENTRY = struct.Struct(">12sBII")  # name, bundle, offset, size: 21 bytes
_DOG_HEADER = 20
_JOE = re.compile(r"^(?:JOE.*|\d\d[0-9A-FSX]{4}J\d+)$")
_OTHER = re.compile(r"^(\d\d)[0-9A-FSX]{4}P\d+$")


def resolve_source(source: str | None) -> str:
    """The resource file to read: ``source`` (the file or its folder), else the package's path."""
    path = source or DEFAULT_SOURCE
    if os.path.isdir(path):
        path = os.path.join(path, "queen.1c")
    if not os.path.isfile(path):
        raise ConfigError(
            f"{path}: not found; install the Debian package {PACKAGE} "
            f"(apt-get install {PACKAGE}) or pass --source with the folder that holds queen.1c"
        )
    return path


def read_table(data: bytes, path: str) -> list[tuple[str, int, int]]:
    """(name, offset, size) of every entry of a ``queen.1c`` resource table."""
    if data[:4] != _MAGIC or len(data) < _TABLE_AT:
        raise ConfigError(f"{path}: not a Flight of the Amazon Queen resource file (no QTBL table)")
    (count,) = struct.unpack_from(">H", data, _COUNT_AT)
    end = _TABLE_AT + count * _ENTRY.size
    if end > len(data):
        raise ConfigError(f"{path}: its table promises {count} entries, the file ends first")
    entries = []
    for i in range(count):
        raw_name, _bundle, offset, size = _ENTRY.unpack_from(data, _TABLE_AT + i * _ENTRY.size)
        entries.append((raw_name.split(b"\0", 1)[0].decode("latin-1"), offset, size))
    return entries


def character(dog_name: str) -> str:
    """``BOB3.DOG`` -> ``bob``: the scene number goes, the character stays."""
    return re.sub(r"\d+$", "", dog_name.rsplit(".", 1)[0]).lower()


def talk_keys(data: bytes, entries: list[tuple[str, int, int]]) -> dict[int, str]:
    """Talk key -> character, from the ``.DOG`` dialogue files."""
    keys = {}
    for name, offset, size in entries:
        if name.upper().endswith(".DOG") and size >= _DOG_HEADER + 6 and offset + size <= len(data):
            key = struct.unpack_from(">3h", data, offset + _DOG_HEADER)[2]
            keys[key] = character(name)
    return keys


def speaker_of(stem: str, keys: dict[int, str]) -> tuple[str | None, str]:
    """(character, why) for an SB clip name without its extension; character None when nobody is named."""
    stem = stem.upper()
    if _JOE.match(stem):
        return "joe", ""
    m = _OTHER.match(stem)
    if m:
        key = int(m.group(1))
        if key in keys:
            return keys[key], ""
        return None, f"talk key {key:02d} has no .DOG dialogue file"
    return None, "cutaway or narration line: the resource table names no speaker"


def clips(source: str | None = None) -> Iterator[SourceClip | SourceFailure]:
    """Every ``.SB`` entry of ``queen.1c`` as a labelled clip or an unlabelled failure."""
    path = resolve_source(source)
    with open(path, "rb") as f:
        data = f.read()
    entries = read_table(data, path)
    keys = talk_keys(data, entries)
    base = os.path.basename(path)
    for name, offset, size in entries:
        if not name.upper().endswith(".SB"):
            continue
        origin = f"{base}:{name}"
        stem = name.rsplit(".", 1)[0]
        who, why = speaker_of(stem, keys)
        if who is None:
            yield SourceFailure(origin, "unlabelled", why)
            continue
        if offset + size > len(data) or size == 0:
            detail = f"bytes {offset}..{offset + size} outside a {len(data)}-byte file"
            yield SourceFailure(origin, "unreadable", detail)
            continue
        yield SourceClip(
            speaker=f"{RELEASE}/{who}",
            name=f"{RELEASE}_{stem.lower()}.mp3",
            origin=origin,
            locale=LOCALE,
            read=lambda offset=offset, size=size: data[offset : offset + size],
            source=path,
        )
