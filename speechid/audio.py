"""Audio in, mono float32 at the model rate out: MP3, FLAC, OGG/Vorbis or WAV, any rate, any channel count.

Decoding is libsndfile (soundfile) from memory, resampling is soxr; no temp files. Every failure is an
``AudioError`` with a reason (see ``speechid.errors.AUDIO_REASONS``) and the name of the input, so a
pipeline can route the clip to its failures output instead of crashing. Limits on bytes and duration
are parameters and are checked before the big allocation, so a hostile file cannot make a worker
allocate gigabytes.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from speechid.config import SAMPLE_RATE
from speechid.errors import AudioError

DEFAULT_MIN_DURATION = 0.5  # seconds
DEFAULT_MAX_DURATION = 30.0  # seconds; Common Voice clips are at most ~10 s
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

# Containers libsndfile does not decode: name them "unsupported" rather than "corrupt".
_UNSUPPORTED_MAGIC = (
    (4, b"ftyp", "MP4/M4A"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (0, b"#!AMR", "AMR"),
    (0, b"\x30\x26\xb2\x75", "ASF/WMA"),
)
_BLOCK_FRAMES = 65_536


@dataclass(frozen=True)
class Limits:
    """Bounds a clip must respect. ``None`` switches a bound off."""

    min_duration: float | None = DEFAULT_MIN_DURATION
    max_duration: float | None = DEFAULT_MAX_DURATION
    max_bytes: int | None = DEFAULT_MAX_BYTES


NO_LIMITS = Limits(min_duration=None, max_duration=None, max_bytes=None)
# What a trained model accepts: the one rule for every way of embedding a clip (Encoder/compare/query and
# the embed pipeline), so a clip one of them refuses is refused by all. Long recordings are windowed.
INFERENCE_LIMITS = Limits(min_duration=DEFAULT_MIN_DURATION, max_duration=600.0)


def _read_source(data: bytes | str | os.PathLike, name: str | None, max_bytes: int | None) -> tuple[bytes, str]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), name or "<bytes>"
    path = os.fspath(data)
    name = name or path
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise AudioError("corrupt", name, f"cannot read: {e.strerror or e}") from None
    if max_bytes is not None and size > max_bytes:
        raise AudioError("too_large", name, f"{size} bytes > limit {max_bytes}")
    with open(path, "rb") as f:
        return f.read(), name


def _sniff_unsupported(raw: bytes) -> str | None:
    for offset, magic, label in _UNSUPPORTED_MAGIC:
        if raw[offset : offset + len(magic)] == magic:
            return label
    return None


def _wav_declared_data_bytes(raw: bytes) -> int | None:
    """Size the RIFF header promises for the 'data' chunk, or None if this is not a plain WAV."""
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(raw):
        chunk, size = raw[pos : pos + 4], int.from_bytes(raw[pos + 4 : pos + 8], "little")
        if chunk == b"data":
            return size if size not in (0, 0xFFFFFFFF) else None
        pos += 8 + size + (size & 1)
    return None


class _NativeStderr:
    """Captures what native decoders print on fd 2 while a clip is decoded.

    libmpg123 (inside libsndfile) prints "part2_3_length too large" and similar frame errors straight to
    the process's stderr, dozens per corpus, though the clip decodes. The console is for people, so the
    decoder's fd 2 goes to a scratch file for the duration of one decode; the messages come back to the
    caller, which counts them. fd 2 is process-wide, so captures are serialised by a lock.
    """

    _lock = threading.Lock()
    _scratch = None

    @classmethod
    @contextmanager
    def capture(cls, messages: list[str]):
        with cls._lock:
            if cls._scratch is None:
                cls._scratch = tempfile.TemporaryFile()
            scratch = cls._scratch
            scratch.seek(0)
            scratch.truncate()
            saved = os.dup(2)
            os.dup2(scratch.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                scratch.seek(0)
                text = scratch.read(65_536).decode("utf-8", "replace")
                messages.extend(line.strip() for line in text.splitlines() if line.strip())


def _libsndfile_message(e: Exception) -> str:
    # "Error opening <_io.BytesIO object at 0x...>: Format not recognised." -> "format not recognised"
    msg = str(e).split(": ", 1)[-1].strip().rstrip(".")
    return (msg[:1].lower() + msg[1:]) if msg else "libsndfile cannot open it"


def _read_blocks(raw: bytes, limits: Limits, name: str) -> tuple[int, int, int, list[np.ndarray]]:
    """libsndfile's part of ``decode``: (native rate, declared frames, frames read, mono blocks)."""
    try:
        f = sf.SoundFile(io.BytesIO(raw))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError("corrupt", name, _libsndfile_message(e)) from None

    with f:
        rate, declared = f.samplerate, f.frames
        if rate <= 0:
            raise AudioError("corrupt", name, f"sample rate {rate}")
        if limits.max_duration is not None and declared > 0 and declared / rate > limits.max_duration:
            raise AudioError("too_long", name, f"{declared / rate:.2f} s > {limits.max_duration} s")
        # Read in blocks with a hard cap: a lying header cannot make us allocate more than max_duration.
        cap = None if limits.max_duration is None else int(limits.max_duration * rate) + 1
        blocks, total = [], 0
        try:
            while True:
                block = f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if not len(block):
                    break
                blocks.append(block.mean(axis=1) if block.shape[1] > 1 else block[:, 0])
                total += len(block)
                if cap is not None and total > cap:
                    raise AudioError("too_long", name, f"> {limits.max_duration} s of samples")
        except sf.LibsndfileError as e:
            if total:
                raise AudioError("truncated", name, f"decoding stopped after {total} frames: {e}") from None
            raise AudioError("corrupt", name, _libsndfile_message(e)) from None
    return rate, declared, total, blocks


def decode(
    data: bytes | str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    limits: Limits = Limits(),
    name: str | None = None,
    decoder_messages: list[str] | None = None,
) -> np.ndarray:
    """Decode ``data`` (bytes or a path) to mono float32 at ``sample_rate``.

    Channels are averaged; the rate is converted with soxr (HQ). Raises ``AudioError`` naming ``name``
    (or the path) with one of the reasons: empty, corrupt, truncated, too_short, too_long, too_large,
    unsupported. What the native decoder printed (frame errors it recovered from) never reaches the
    console: it is appended to ``decoder_messages`` when a list is given, and dropped otherwise.
    """
    raw, name = _read_source(data, name, limits.max_bytes)
    if not raw:
        raise AudioError("empty", name, "0 bytes")
    if limits.max_bytes is not None and len(raw) > limits.max_bytes:
        raise AudioError("too_large", name, f"{len(raw)} bytes > limit {limits.max_bytes}")
    label = _sniff_unsupported(raw)
    if label:
        raise AudioError("unsupported", name, f"{label} is not decodable by libsndfile")

    messages = [] if decoder_messages is None else decoder_messages
    with _NativeStderr.capture(messages):
        rate, declared, total, blocks = _read_blocks(raw, limits, name)

    if total == 0:
        raise AudioError("empty", name, "no samples")
    # libsndfile pads a short WAV silently and mpg123 stops early on a cut MP3: compare with the header.
    wav_bytes = _wav_declared_data_bytes(raw)
    if wav_bytes is not None and len(raw) < wav_bytes + 44:
        raise AudioError("truncated", name, f"RIFF header declares {wav_bytes} data bytes, file has {len(raw)}")
    if declared > 0 and total < 0.98 * declared - 1152:
        raise AudioError("truncated", name, f"decoded {total} of {declared} declared frames")

    audio = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    if not np.all(np.isfinite(audio)):
        raise AudioError("corrupt", name, "non-finite samples")
    check_duration(total / rate, limits, name)
    return resample(audio, rate, sample_rate)


def check_duration(duration: float, limits: Limits, name: str) -> None:
    """Raise ``too_short`` / ``too_long`` for a clip of ``duration`` seconds outside ``limits``."""
    if limits.min_duration is not None and duration < limits.min_duration:
        raise AudioError("too_short", name, f"{duration:.2f} s < {limits.min_duration} s")
    if limits.max_duration is not None and duration > limits.max_duration:
        raise AudioError("too_long", name, f"{duration:.2f} s > {limits.max_duration} s")


def resample(audio: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Mono float32 from ``in_rate`` to ``out_rate`` (soxr HQ); returns the input when rates match."""
    audio = np.asarray(audio, dtype=np.float32)
    if in_rate == out_rate:
        return audio
    return soxr.resample(audio, in_rate, out_rate, quality="HQ").astype(np.float32, copy=False)


def duration_of(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    return len(audio) / float(sample_rate)


def to_pcm16(audio: np.ndarray) -> bytes:
    """Float audio in [-1, 1] -> little-endian PCM16 bytes (the TFRecord storage format)."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def from_pcm16(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0


def encode(audio: np.ndarray, sample_rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    """Encode float audio (1-D mono or 2-D frames x channels) to bytes with libsndfile."""
    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, format=fmt, subtype=subtype)
    return buf.getvalue()
