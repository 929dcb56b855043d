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
import scipy.fft
import soundfile as sf
import soxr

from speechid.config import SAMPLE_RATE
from speechid.errors import AudioError

DEFAULT_MIN_DURATION = 0.5  # seconds
DEFAULT_MAX_DURATION = 30.0  # seconds; Common Voice clips are at most ~10 s
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MIN_SPEECH = 0.3  # seconds of voiced speech below which a clip gets no verdict and no embedding

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
    """Bounds a clip must respect. ``None`` switches a bound off.

    ``min_speech`` is checked on the decoded wave by ``require_speech`` / ``trim_silence``, not by ``decode``.
    """

    min_duration: float | None = DEFAULT_MIN_DURATION
    max_duration: float | None = DEFAULT_MAX_DURATION
    max_bytes: int | None = DEFAULT_MAX_BYTES
    min_speech: float | None = DEFAULT_MIN_SPEECH


NO_LIMITS = Limits(min_duration=None, max_duration=None, max_bytes=None, min_speech=None)
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
    _scratch_pid = None  # a forked child must not share (and truncate) its parent's scratch file

    @classmethod
    @contextmanager
    def capture(cls, messages: list[str]):
        with cls._lock:
            if cls._scratch is None or cls._scratch_pid != os.getpid():
                cls._scratch, cls._scratch_pid = tempfile.TemporaryFile(), os.getpid()
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
            raise AudioError("too_long", name, f"{_seconds(declared / rate, limits.max_duration)} s > "
                                               f"{limits.max_duration} s")
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
        raise AudioError("too_short", name, f"{_seconds(duration, limits.min_duration)} s < {limits.min_duration} s")
    if limits.max_duration is not None and duration > limits.max_duration:
        raise AudioError("too_long", name, f"{_seconds(duration, limits.max_duration)} s > {limits.max_duration} s")


def _seconds(duration: float, limit: float) -> str:
    """``duration`` with two decimals, or as many more as it takes to print it on its side of ``limit``:
    0.4996 s against a 0.5 s minimum is "0.4996", never "0.50"."""
    for digits in range(2, 17):
        text = f"{duration:.{digits}f}"
        if float(text) != limit and (float(text) < limit) == (duration < limit):
            return text
    return repr(duration)


# --- speech or not ------------------------------------------------------------------------------------------
# An energy VAD with two checks that steady noise cannot pass. Frames are 25 ms every 10 ms; energy is the
# band 100-4000 Hz (voice: pitch harmonics and formants), so mains hum at 50 Hz carries almost none. A speech
# frame is (1) louder than an absolute floor, (2) louder than the clip's own quiet frames by a margin:
# speech rises and falls at the syllable rate while hum, fan noise or white noise stay level, and (3) has
# harmonic structure: its band spectrum is far from flat (white noise has flatness ~0.56, voiced speech
# well under 0.3). Unvoiced sounds fail (3); they are kept by the padding around the voiced span.
_VAD_FRAME_S, _VAD_HOP_S = 0.025, 0.010
_VAD_BAND_HZ = (100.0, 4000.0)
_VAD_FLOOR_DBFS = -55.0  # band RMS a frame must exceed; digital silence and dither are far below
_VAD_MARGIN_DB = 4.0  # above the clip's 10th-percentile frame
_VAD_MAX_FLATNESS = 0.3
_VAD_SMOOTH_FRAMES = 5
_VAD_PAD_S = 0.2  # kept around the first and last speech frame: onsets, fricatives, release
_VAD_CHUNK_FRAMES = 2048  # frames per FFT batch: a 10-minute recording never needs its whole spectrogram


@dataclass(frozen=True)
class SpeechSpan:
    """Where the speech is in a wave: samples ``[start, end)`` (padded), and seconds of speech frames."""

    start: int
    end: int
    speech_s: float


def speech_span(wave: np.ndarray, sample_rate: int) -> SpeechSpan:
    """Find the speech in mono ``wave`` (see the rules above); ``speech_s == 0`` when there is none."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    frame, hop = int(round(_VAD_FRAME_S * sample_rate)), max(1, int(round(_VAD_HOP_S * sample_rate)))
    if len(wave) < frame:
        return SpeechSpan(0, 0, 0.0)
    nfft = 1 << (frame - 1).bit_length()
    freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
    bins = np.flatnonzero((freqs >= _VAD_BAND_HZ[0]) & (freqs <= min(_VAD_BAND_HZ[1], sample_rate / 2)))
    band = slice(int(bins[0]), int(bins[-1]) + 1)
    win = np.hanning(frame).astype(np.float32)
    scale = 2.0 / (nfft * float(np.sum(win**2)))  # Parseval: a sine of amplitude A in band -> A^2 / 2
    frames = np.lib.stride_tricks.sliding_window_view(wave, frame)[::hop]
    energy, flatness = np.empty(len(frames)), np.empty(len(frames))
    for i in range(0, len(frames), _VAD_CHUNK_FRAMES):
        # scipy's FFT keeps float32 (numpy's computes in float64): half the time for the same decisions.
        spec = scipy.fft.rfft(frames[i : i + _VAD_CHUNK_FRAMES] * win, nfft, axis=1)[:, band]
        power = spec.real.astype(np.float64) ** 2 + spec.imag.astype(np.float64) ** 2 + 1e-20
        mean = power.mean(axis=1)
        energy[i : i + len(power)] = power.sum(axis=1) * scale
        flatness[i : i + len(power)] = np.exp(np.log(power).mean(axis=1)) / mean
    # Averaged over 50 ms: a hum's harmonics beat against the frame grid, which would read as modulation.
    smooth = np.convolve(energy, np.ones(_VAD_SMOOTH_FRAMES) / _VAD_SMOOTH_FRAMES, mode="same")
    energy_db = 10 * np.log10(smooth + 1e-12)
    floor = np.percentile(energy_db, 10)
    speech = (energy_db > _VAD_FLOOR_DBFS) & (energy_db > floor + _VAD_MARGIN_DB) & (flatness < _VAD_MAX_FLATNESS)
    idx = np.flatnonzero(speech)
    if not len(idx):
        return SpeechSpan(0, 0, 0.0)
    pad = int(round(_VAD_PAD_S * sample_rate))
    end = len(wave) if idx[-1] == len(frames) - 1 else int(idx[-1]) * hop + frame
    return SpeechSpan(max(0, int(idx[0]) * hop - pad), min(len(wave), end + pad), len(idx) * _VAD_HOP_S)


def require_speech(wave: np.ndarray, sample_rate: int, limits: Limits, name: str) -> SpeechSpan:
    """The clip's ``SpeechSpan``; ``AudioError("no_speech")`` when it holds less than ``limits.min_speech``
    seconds of speech (silence, hum, steady noise, a click or a short burst). ``min_speech=None``: no check."""
    span = speech_span(wave, sample_rate)
    if limits.min_speech is not None and span.speech_s < limits.min_speech:
        raise AudioError("no_speech", name, f"{span.speech_s:.2f} s of speech < {limits.min_speech} s")
    return span


def trim_silence(wave: np.ndarray, sample_rate: int, limits: Limits, name: str) -> np.ndarray:
    """``wave`` without its leading and trailing non-speech, after ``require_speech``; the one rule for every
    way of embedding a clip. With ``min_speech=None`` the wave comes back whole."""
    if limits.min_speech is None:
        return wave
    span = require_speech(wave, sample_rate, limits, name)
    return wave[span.start : span.end]


def resample(audio: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Mono float32 from ``in_rate`` to ``out_rate`` (soxr HQ); returns the input when rates match."""
    audio = np.asarray(audio, dtype=np.float32)
    if in_rate == out_rate:
        return audio
    return soxr.resample(audio, in_rate, out_rate, quality="HQ").astype(np.float32, copy=False)


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
