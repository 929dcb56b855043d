"""Beneath a Steel Sky on a fabricated game in the package's formats (never the package itself).

A tiny RNC method-1 compressor (literal runs and greedy matches, every Huffman code 4 bits long) checks the
decompressor on real structure; the fabricated ``sky.dnr`` + ``sky.dsk`` + ``sky.cpt`` hold RNC-packed
speech, one script module and the compacts the labeller reads.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf

from speechid.corpora import bass, rnc
from speechid.corpora.release import write_release
from speechid.corpora.sources import SourceClip, SourceFailure
from speechid.errors import ConfigError
from tests.conftest import tone


class _BitWriter:
    """The writer twin of RNC's reader: bits fill 16-bit LE words from the low bit; a word is reserved at
    the end of the output only when a bit needs it, so literal bytes land where the reader looks."""

    def __init__(self):
        self.out, self.word, self.used = bytearray(), 0, 16

    def bits(self, value: int, count: int) -> None:
        for i in range(count):
            if self.used == 16:
                self.word, self.used = len(self.out), 0
                self.out += b"\0\0"
            if value >> i & 1:
                self.out[self.word + self.used // 8] |= 1 << (self.used % 8)
            self.used += 1

    def number(self, value: int, codes: dict[int, tuple[int, int]]) -> None:
        """A table value: its symbol's code (bit-reversed, as the reader matches them), then extra bits."""
        symbol = value.bit_length() if value >= 2 else value
        code, length = codes[symbol]
        self.bits(int(f"{code:0{length}b}"[::-1], 2), length)
        if symbol >= 2:
            self.bits(value - (1 << (symbol - 1)), symbol - 1)


def canonical(lengths: list[int]) -> dict[int, tuple[int, int]]:
    """symbol -> (code, length): codes handed out by length, then symbol, counting up."""
    codes, code, last = {}, 0, 0
    for length, symbol in sorted((n, s) for s, n in enumerate(lengths) if n):
        code <<= length - last
        codes[symbol], code, last = (code, length), code + 1, length
    return codes


FLAT = [4] * 16
SKEWED = [2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 8, 8]  # a complete code of uneven lengths


def rnc_pack(data: bytes, matches: bool = True, lengths: list[int] = FLAT) -> bytes:
    """``data`` as one RNC method-1 block: (literal run, match) pairs found greedily, the last pair alone;
    every table gives its 16 symbols the code ``lengths``."""
    pairs, i, run_start = [], 0, 0
    while i < len(data):
        best, back = 0, 0
        for start in range(max(0, i - 64), i) if matches else ():
            n = 0
            while i + n < len(data) and n < 255 and data[start + n] == data[i + n]:
                n += 1
            if n > best:
                best, back = n, i - start
        if best >= 3:
            pairs.append((data[run_start:i], back, best))
            i += best
            run_start = i
        else:
            i += 1
    pairs.append((data[run_start:], 0, 0))
    w = _BitWriter()
    w.bits(0, 2)  # lock and key flags
    for _ in range(3):  # raw, offset and length tables
        w.bits(len(lengths), 5)
        for n in lengths:
            w.bits(n, 4)
    codes = canonical(lengths)
    w.bits(len(pairs), 16)
    for k, (literal, back, length) in enumerate(pairs):
        w.number(len(literal), codes)
        w.out += literal
        if k < len(pairs) - 1:
            w.number(back - 1, codes)
            w.number(length - 2, codes)
    body = bytes(w.out)
    return b"RNC\x01" + struct.pack(">IIHHBB", len(data), len(body), rnc.crc16(data), rnc.crc16(body), 0, 1) + body


def test_crc16_is_crc_arc():
    assert rnc.crc16(b"123456789") == 0xBB3D  # the published check value of CRC-16/ARC


@pytest.mark.parametrize("data", [
    b"x",
    bytes(range(256)) * 3,
    b"\x80" * 500 + b"abcabcabcabcabd" + bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8)),
])
@pytest.mark.parametrize("matches", [False, True])
@pytest.mark.parametrize("lengths", [FLAT, SKEWED])
def test_rnc_round_trip(data, matches, lengths):
    packed = rnc_pack(data, matches, lengths)
    if matches and data.startswith(b"\x80"):  # the overlapping matches of the silence were used
        assert len(packed) < len(rnc_pack(data, matches=False)) - 400
    assert rnc.rnc_unpack(packed) == data


def test_rnc_checksums_and_bad_streams_raise():
    packed = bytearray(rnc_pack(b"hello hello hello hello"))
    with pytest.raises(OSError, match="packed CRC mismatch"):
        rnc.rnc_unpack(bytes(packed[:-1]) + bytes([packed[-1] ^ 1]))
    packed[12] ^= 0xFF  # the stored CRC of the unpacked bytes
    with pytest.raises(OSError, match="unpacked CRC mismatch"):
        rnc.rnc_unpack(bytes(packed))
    with pytest.raises(OSError, match="not an RNC"):
        rnc.rnc_unpack(b"RNC\x02" + bytes(20))


# -- a fabricated game ---------------------------------------------------------------------------------

FOSTER, JOEY, LAMB, LAMB_TALK, FOSTER_TALK = 3, 1, 16, 0x30, 0x31
TALK_A, TALK_B, TALK_C, TALK_D, TALK_E, TALK_F, TALK_G, TALK_H = 5, 6, 7, 8, *(0x1000 + k for k in range(2, 6))
NOBODY, OUTSIDE = 50_009, 50_011  # a file no script names; an entry past the end of sky.dsk


def _file(number: int) -> int:
    return bass.SPEECH_BASE + bass.SECTION_START[number >> 12] + (number & 0xFFF)


BAD_CRC = _file(TALK_H)  # Joey's line whose stored RNC stream is damaged


def _speech(freq: float) -> bytes:
    return (tone(1.0, bass.RATE, freq) * 128 + 128).clip(0, 255).astype(np.uint8).tobytes()


def _stored(samples: bytes, corrupt: bool = False) -> bytes:
    """A speech file as sky.dsk stores it: the 22-byte header (flag 0x81: RNC follows), then RNC."""
    header = struct.pack("<11H", 0x81, 0, 0, 0, 0, 0, (len(samples) + 22) & 0xFFFF, 0, 0, 0, 0)
    packed = bytearray(rnc_pack(samples))
    if corrupt:
        packed[-1] ^= 0x55
    return header + bytes(packed)


def _push(n: int) -> list[int]:
    return [2, n]


def _var(v: int) -> list[int]:
    return [0, v * 4]


def _call(mcode: int, *pushes: list[int]) -> list[int]:
    return [w for p in pushes for w in p] + [11, len(pushes), mcode * 4]


def _module() -> bytes:
    """Script 1: a conversation (a choice, Foster by CUR_ID, Lamb by his talk animation and, animation 0,
    as the script's one partner); script 2: Joey by compact, CUR_ID without a choice, a line two name,
    Joey's damaged line."""
    one = [
        *_call(bass.ASK, _push(TALK_A), _push(0)),
        *_call(bass.SPEAK_DIR, _var(bass.CUR_ID), _push(TALK_B), _push(9)),
        *_call(bass.WAIT, _var(bass.PARTNER), _push(TALK_C), _push(26)),
        *_call(bass.WAIT, _var(bass.PARTNER), _push(TALK_D), _push(0)),
        19,
    ]
    two = [
        *_call(bass.SPEAK, _push(JOEY), _push(TALK_E), _push(0)),
        *_call(bass.SPEAK, _var(bass.CUR_ID), _push(TALK_F), _push(0)),
        *_call(bass.SPEAK, _push(JOEY), _push(TALK_G), _push(0)),
        *_call(bass.SPEAK, _push(LAMB), _push(TALK_G), _push(0)),
        *_call(bass.SPEAK, _push(JOEY), _push(TALK_H), _push(0)),
        19,
    ]
    table = [3, 4, 4 + len(one), 0]
    return struct.pack(f"<{len(table) + len(one) + len(two)}H", *table, *one, *two)


def _cpt() -> bytes:
    """sky.cpt: version, list lengths, raw size, compact words (size, type, data), names, no links."""
    talk = [0] * 40
    talk[26], talk[10] = LAMB_TALK, FOSTER_TALK
    compacts = {FOSTER: ("foster", [0] * 4), JOEY: ("joey", [0] * 4), LAMB: ("lamb", [0] * 4),
                LAMB_TALK: ("lamb_normal", [0]), FOSTER_TALK: ("big_f_up", [0]), bass.TALK_TABLE: ("data_7", talk)}
    src, names = [], b""
    for i in range(200):
        if i in compacts:
            name, words = compacts[i]
            src += [len(words), 1, *words]
            names += name.encode() + b"\0"
        else:
            src.append(0)
    return (struct.pack("<HHH", 0, 1, 200) + struct.pack("<II", 0, len(src)) + struct.pack(f"<{len(src)}H", *src)
            + struct.pack("<I", len(names)) + names + struct.pack("<H", 0))


@pytest.fixture
def sky(tmp_path):
    files = {_file(t): _stored(_speech(150 + 10 * k)) for k, t in enumerate(
        (TALK_A, TALK_B, TALK_C, TALK_D, TALK_E, TALK_F, TALK_G))}
    files[NOBODY] = _stored(_speech(300))
    files[BAD_CRC] = _stored(_speech(310), corrupt=True)
    files[59_500] = _stored(_speech(320))  # an intro voice: Foster's
    files[59_494] = _stored(_speech(330))  # an intro background sound: not speech, not listed
    dsk, entries = b"", []
    for number, data in sorted(files.items()):
        entries.append(struct.pack("<H", number) + len(dsk).to_bytes(3, "little") + len(data).to_bytes(3, "little"))
        dsk += data
    module = _module()
    while len(dsk) % 16:
        dsk += b"\0"
    entries.append(struct.pack("<H", 60_400) + (len(dsk) // 16 | 1 << 23).to_bytes(3, "little")
                   + (len(module) | 1 << 23).to_bytes(3, "little"))
    dsk += module
    entries.append(struct.pack("<H", OUTSIDE) + len(dsk).to_bytes(3, "little") + (1000).to_bytes(3, "little"))
    (tmp_path / "sky.dsk").write_bytes(dsk)
    (tmp_path / "sky.dnr").write_bytes(struct.pack("<I", len(entries)) + b"".join(entries))
    (tmp_path / "sky.cpt").write_bytes(_cpt())
    return tmp_path


def test_index_offsets_in_16_byte_units(sky):
    index = bass.read_index((sky / "sky.dnr").read_bytes(), "sky.dnr")
    offset, size, flags = index[60_400]
    assert offset % 16 == 0 and flags >> 23 == 1
    assert (sky / "sky.dsk").read_bytes()[offset : offset + 2] == struct.pack("<H", 3)


def test_labels_come_from_the_scripts_and_compacts(sky):
    items = {item.origin: item for item in bass.clips(str(sky))}
    speakers = {o: i.speaker for o, i in items.items() if isinstance(i, SourceClip)}
    assert speakers == {
        f"sky.dsk:{_file(TALK_A)}": "bass/foster",  # the player's choice
        f"sky.dsk:{_file(TALK_B)}": "bass/foster",  # CUR_ID in a script that offers a choice
        f"sky.dsk:{_file(TALK_C)}": "bass/lamb",  # the talk table's entry: lamb_normal
        f"sky.dsk:{_file(TALK_D)}": "bass/lamb",  # no animation: the script's one partner
        f"sky.dsk:{_file(TALK_E)}": "bass/joey",  # the speaker's compact
        f"sky.dsk:{BAD_CRC}": "bass/joey",
        "sky.dsk:59500": "bass/foster",  # an intro voice
    }
    failures = {o: (i.reason, i.detail) for o, i in items.items() if isinstance(i, SourceFailure)}
    assert failures[f"sky.dsk:{_file(TALK_F)}"] == ("unlabelled", "no script names its speaker")
    assert failures[f"sky.dsk:{_file(TALK_G)}"] == ("unlabelled", "scripts name joey, lamb")
    assert failures[f"sky.dsk:{NOBODY}"][0] == "unlabelled"
    assert failures[f"sky.dsk:{OUTSIDE}"][0] == "unreadable"
    assert "sky.dsk:59494" not in items


def test_release_reconciles_and_keeps_the_samples(sky, tmp_path):
    result = write_release(str(tmp_path / "out"), bass.RELEASE, bass.clips(str(sky)), min_clips=1,
                           caveat=bass.CAVEAT)
    m = result.manifest
    assert m["sources"] == 11 == m["written"] + m["failed"]
    assert m["failed_by_reason"] == {"unlabelled": 3, "unreadable": 2}  # unreadable: past the end; bad CRC
    assert {s["speaker"]: s["clips"] for s in m["speakers"]} == {"bass/foster": 3, "bass/lamb": 2, "bass/joey": 1}
    failures = (tmp_path / "out" / "failures.tsv").read_text()
    assert f"sky.dsk:{BAD_CRC}\tbass/joey\tunreadable\tRNC packed CRC mismatch" in failures
    clip = next(i for i in bass.clips(str(sky)) if i.origin == f"sky.dsk:{_file(TALK_C)}")
    got, rate = sf.read(io.BytesIO(clip.read()), dtype="float32")
    expected = (np.frombuffer(_speech(170), np.uint8).astype(np.float32) - 128) / 128
    assert rate == bass.RATE
    np.testing.assert_allclose(got, expected, atol=1 / 32767 + 1e-6)


def test_broken_checksum_reads_as_oserror(sky):
    bad = next(i for i in bass.clips(str(sky)) if i.origin == f"sky.dsk:{BAD_CRC}")
    with pytest.raises(OSError, match="CRC mismatch"):
        bad.read()


def test_missing_package_names_it(tmp_path):
    with pytest.raises(ConfigError, match="apt-get install beneath-a-steel-sky") as e:
        bass.resolve_source(str(tmp_path))
    assert "\n" not in str(e.value) and "sky.dnr" in str(e.value)
