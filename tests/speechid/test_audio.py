import io
import os

import numpy as np
import pytest
import soundfile as sf

from speechid import audio
from speechid.errors import AudioError
from tests.conftest import tone

FORMATS = [("WAV", None), ("FLAC", None), ("OGG", "VORBIS"), ("MP3", None)]


def _rms(x):
    return float(np.sqrt(np.mean(np.square(x))))


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 48_000])
@pytest.mark.parametrize("fmt,subtype", FORMATS)
def test_decodes_every_format_and_rate_to_16k_mono(rate, fmt, subtype):
    if fmt == "MP3" and rate == 22_050:
        pass  # MPEG-2 rate, supported by LAME: keep it in the grid
    x = tone(1.2, rate)
    y = audio.decode(audio.encode(x, rate, fmt, subtype), name=f"tone.{fmt.lower()}")
    assert y.dtype == np.float32 and y.ndim == 1
    # Lossy codecs pad a little at the edges; the duration stays within 60 ms.
    assert abs(len(y) / 16_000 - 1.2) < 0.06
    assert _rms(y) == pytest.approx(_rms(x), rel=0.15)


def test_stereo_is_averaged_to_mono():
    left = tone(1.0, 44_100)
    stereo = np.stack([left, -left * 0.0 + left * 0.5], axis=1)
    y = audio.decode(audio.encode(stereo, 44_100, "WAV"), sample_rate=44_100)
    np.testing.assert_allclose(y, left * 0.75, atol=1e-3)


def test_wav_roundtrip_is_exact_at_the_same_rate():
    x = tone(0.8, 16_000)
    y = audio.decode(audio.encode(x, 16_000, "WAV", "FLOAT"))
    np.testing.assert_allclose(y, x, atol=1e-7)


def test_path_input_and_name_in_errors(tmp_path):
    p = tmp_path / "a.flac"
    p.write_bytes(audio.encode(tone(1.0, 48_000), 48_000, "FLAC"))
    assert len(audio.decode(str(p))) == 16_000
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"")
    with pytest.raises(AudioError) as e:
        audio.decode(bad)
    assert e.value.reason == "empty" and str(bad) in str(e.value)


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty"),
        (np.random.default_rng(0).bytes(5000), "corrupt"),
        (b"\x00\x00\x00\x20ftypM4A " + bytes(100), "unsupported"),
    ],
)
def test_bad_bytes_give_typed_reasons(data, reason):
    with pytest.raises(AudioError) as e:
        audio.decode(data, name="clip-x")
    assert e.value.reason == reason
    assert "clip-x" in str(e.value)
    assert "0x" not in str(e.value)  # no object addresses in messages


@pytest.mark.parametrize("fmt,subtype", [("MP3", None), ("WAV", None), ("FLAC", None)])
def test_truncated_files(fmt, subtype):
    raw = audio.encode(tone(2.0, 48_000), 48_000, fmt, subtype)
    with pytest.raises(AudioError) as e:
        audio.decode(raw[: len(raw) // 2], name="cut")
    assert e.value.reason in ("truncated", "corrupt")
    if fmt in ("MP3", "WAV"):
        assert e.value.reason == "truncated"


def test_zero_samples_is_empty():
    raw = audio.encode(np.zeros(0, np.float32), 16_000, "WAV")
    with pytest.raises(AudioError) as e:
        audio.decode(raw)
    assert e.value.reason == "empty"


def test_duration_and_byte_limits():
    short = audio.encode(tone(0.2), 16_000, "WAV")
    with pytest.raises(AudioError) as e:
        audio.decode(short)
    assert e.value.reason == "too_short"
    assert len(audio.decode(short, limits=audio.NO_LIMITS)) == 3200
    long = audio.encode(tone(3.0), 16_000, "WAV")
    with pytest.raises(AudioError) as e:
        audio.decode(long, limits=audio.Limits(max_duration=2.0))
    assert e.value.reason == "too_long"
    with pytest.raises(AudioError) as e:
        audio.decode(long, limits=audio.Limits(max_bytes=1000))
    assert e.value.reason == "too_large"


@pytest.mark.parametrize("seconds, limits, detail", [
    (0.4996, audio.Limits(min_duration=0.5), "0.4996 s < 0.5 s"),  # never "0.50 s < 0.5 s"
    (0.2, audio.Limits(min_duration=0.5), "0.20 s < 0.5 s"),
    (30.004, audio.Limits(max_duration=30.0), "30.004 s > 30.0 s"),
    (0.49999999, audio.Limits(min_duration=0.5), "0.49999999 s < 0.5 s"),
])
def test_a_duration_outside_the_limits_is_printed_with_enough_digits_to_be_outside(seconds, limits, detail):
    with pytest.raises(AudioError) as e:
        audio.check_duration(seconds, limits, "clip.wav")
    assert e.value.detail == detail


def test_lying_header_cannot_force_a_big_allocation():
    # A FLAC stream longer than the limit is refused after reading at most max_duration of samples.
    raw = audio.encode(tone(6.0), 16_000, "FLAC")
    with pytest.raises(AudioError) as e:
        audio.decode(raw, limits=audio.Limits(max_duration=1.0))
    assert e.value.reason == "too_long"


def test_pcm16_roundtrip_precision():
    x = tone(0.5) * 2.5  # clips beyond [-1, 1]
    y = audio.from_pcm16(audio.to_pcm16(x))
    np.testing.assert_allclose(y, np.clip(x, -1, 1), atol=1 / 32767 + 1e-7)


def test_error_pickles_with_its_fields():
    import pickle

    e = pickle.loads(pickle.dumps(AudioError("truncated", "a.mp3", "detail")))
    assert (e.reason, e.source, e.detail) == ("truncated", "a.mp3", "detail")


def test_soundfile_reads_mp3_from_memory():
    # Guards the stack: libsndfile in the soundfile wheel must have MP3 support.
    assert "MP3" in sf.available_formats()
    raw = audio.encode(tone(1.0, 48_000), 48_000, "MP3")
    assert sf.info(io.BytesIO(raw)).samplerate == 48_000


def damaged_mp3() -> bytes:
    """An MP3 with a few bytes overwritten mid-stream: libmpg123 complains on stderr, then recovers."""
    data = bytearray(audio.encode(tone(3.0, 11_025, 200.0), 11_025, fmt="MP3"))
    rng = np.random.default_rng(0)
    for pos in rng.integers(500, len(data) - 500, 3):
        data[pos : pos + 8] = rng.bytes(8)
    return bytes(data)


def test_decoder_messages_are_captured_not_printed(capfd):
    messages: list[str] = []
    y = audio.decode(damaged_mp3(), 16_000, name="damaged.mp3", decoder_messages=messages)
    assert len(y) > 2.5 * 16_000
    assert messages and any("mpg123" in m or "MPEG" in m for m in messages)
    assert audio.decode(damaged_mp3(), 16_000).shape == y.shape  # no list given: dropped
    out, err = capfd.readouterr()
    assert "mpg123" not in err and "MPEG" not in err
    # fd 2 works again afterwards
    os.write(2, b"after-decode\n")
    assert "after-decode" in capfd.readouterr().err


def test_a_forked_child_captures_into_its_own_scratch_file():
    import multiprocessing

    messages: list[str] = []
    audio.decode(damaged_mp3(), 16_000, decoder_messages=messages)  # the parent has its scratch file now
    parent_file = os.fstat(audio._NativeStderr._scratch.fileno()).st_ino
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child_messages, child_file = pool.apply(_decode_damaged_mp3_in_child)
    assert child_messages == messages
    assert child_file != parent_file  # an inherited file would be truncated under the parent's feet


def _decode_damaged_mp3_in_child() -> tuple[list[str], int]:
    messages: list[str] = []
    audio.decode(damaged_mp3(), 16_000, decoder_messages=messages)
    return messages, os.fstat(audio._NativeStderr._scratch.fileno()).st_ino
