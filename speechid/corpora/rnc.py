"""Rob Northen Compression (RNC) method 1, the packer of Beneath a Steel Sky's data files (``bass``).

The format as ScummVM's decoder reads it (``engines/sky/rnc_deco.cpp``): "RNC\\x01", unpacked and packed
sizes (u32 BE), CRC-16 of both (u16 BE; poly 0xA001, init 0), leeway, block count; then 16-bit LE words
read from the low bit, literal bytes spliced in where a literal run is due. A block: three Huffman tables
(5-bit count, 4-bit lengths, canonical codes stored bit-reversed) for literal-run lengths, for match
offsets minus 1 and for match lengths minus 2; then a 16-bit count of (literal run, match) pairs, the last
without match. Symbol s >= 2 is ``2**(s-1)`` plus s-1 more bits.
"""

from __future__ import annotations

import struct

_CRC = []
for _byte in range(256):
    _c = _byte
    for _ in range(8):
        _c = (_c >> 1) ^ 0xA001 if _c & 1 else _c >> 1
    _CRC.append(_c)


def crc16(data: bytes) -> int:
    """RNC's CRC-16 (reflected polynomial 0xA001, initial value 0)."""
    crc, table = 0, _CRC
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


class _Bits:
    """RNC's bit reader: a 16-bit LE word is fetched only when the bits held run short; a literal run
    starts at the first byte no word came from."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.buf, self.n = data + b"\0\0\0\0", 0, 0, 0

    def get(self, k: int) -> int:
        if k > self.n:
            self.buf |= (self.data[self.pos] | self.data[self.pos + 1] << 8) << self.n
            self.pos += 2
            self.n += 16
        value = self.buf & ((1 << k) - 1)
        self.buf >>= k
        self.n -= k
        return value

    def peek16(self) -> int:
        if self.n >= 16:
            return self.buf
        return self.buf | (self.data[self.pos] | self.data[self.pos + 1] << 8) << self.n

    def table(self) -> tuple[list, int] | None:
        """A Huffman table as a lookup list indexed by the next ``width`` bits: (symbol, length)."""
        lengths = [self.get(4) for _ in range(self.get(5))]
        if not any(lengths):
            return None
        width, code = max(lengths), 0
        lookup: list = [None] * (1 << width)
        for length in range(1, width + 1):
            for symbol, n in enumerate(lengths):
                if n == length:
                    rev = int(f"{code >> (16 - length):0{length}b}"[::-1], 2)
                    lookup[rev :: 1 << length] = [(symbol, length)] * (1 << (width - length))
                    code += 1 << (16 - length)
        return lookup, width

    def value(self, table: tuple[list, int] | None) -> int:
        if table is None:
            raise OSError("RNC stream uses an empty Huffman table")
        lookup, width = table
        hit = lookup[self.peek16() & ((1 << width) - 1)]
        if hit is None:
            raise OSError("RNC stream holds a code its Huffman table lacks")
        symbol, length = hit
        self.get(length)
        return (1 << (symbol - 1)) | self.get(symbol - 1) if symbol >= 2 else symbol


def rnc_unpack(data: bytes) -> bytes:
    """Decompress an RNC method-1 stream; OSError on a bad header, stream or checksum."""
    size, crc_unpacked, body = _checked_body(data)
    bits, out = _Bits(body), bytearray()
    bits.get(2)  # lock and key flags
    for _ in range(data[17]):
        _unpack_block(bits, out)
        if len(out) > size:
            break
    if len(out) != size:
        raise OSError(f"RNC stream unpacked to {len(out)} bytes, its header says {size}")
    if crc16(out) != crc_unpacked:
        raise OSError(f"RNC unpacked CRC mismatch (stored {crc_unpacked:04x}, computed {crc16(out):04x})")
    return bytes(out)


def _checked_body(data: bytes) -> tuple[int, int, bytes]:
    """(unpacked size, its CRC, the packed body) of a method-1 stream whose body matches its CRC."""
    if data[:4] != b"RNC\x01" or len(data) < 18:
        raise OSError("not an RNC method-1 stream")
    size, packed, crc_unpacked, crc_packed = struct.unpack_from(">IIHH", data, 4)
    body = data[18 : 18 + packed]
    if len(body) != packed:
        raise OSError(f"RNC stream promises {packed} packed bytes, {len(body)} are there")
    if crc16(body) != crc_packed:
        raise OSError(f"RNC packed CRC mismatch (stored {crc_packed:04x}, computed {crc16(body):04x})")
    return size, crc_unpacked, body


def _unpack_block(bits: _Bits, out: bytearray) -> None:
    """One block: its three Huffman tables, then (literal run, match) pairs appended to ``out``."""
    raw, offsets, lengths = bits.table(), bits.table(), bits.table()
    pairs = bits.get(16)
    for i in range(pairs):
        run = bits.value(raw)
        if run:
            out += bits.data[bits.pos : bits.pos + run]
            bits.pos += run
        if i == pairs - 1:
            break
        back, n = bits.value(offsets) + 1, bits.value(lengths) + 2
        if back > len(out):
            raise OSError("RNC match reaches before the start of the output")
        start = len(out) - back
        while n > 0:  # the source may overlap what this match writes
            piece = out[start : start + min(n, back)]
            out += piece
            n -= len(piece)
