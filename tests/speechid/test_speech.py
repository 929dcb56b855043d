"""The voice-activity rule (speechid.audio.speech_span / require_speech / trim_silence) on generated audio:
what is not speech is refused with reason no_speech, speech loses only its leading and trailing silence."""

import numpy as np
import pytest

from speechid import audio
from speechid.errors import AudioError
from tests.conftest import tone

RATE = 16_000
LIMITS = audio.INFERENCE_LIMITS


def _seconds(n: float) -> np.ndarray:
    return np.arange(int(n * RATE)) / RATE


def _silence(n: float = 2.0) -> np.ndarray:
    return np.zeros(int(n * RATE), np.float32)


def _hum(n: float = 2.0, mains: float = 50.0) -> np.ndarray:
    t = _seconds(n)  # mains hum with its harmonics, as a bad cable gives it
    return sum(0.3 / k * np.sin(2 * np.pi * mains * k * t + k) for k in range(1, 9)).astype(np.float32)


def _white(n: float = 2.0, amp: float = 0.1) -> np.ndarray:
    return (amp * np.random.default_rng(1).standard_normal(int(n * RATE))).astype(np.float32)


def _burst(speech: float = 0.15) -> np.ndarray:
    return np.concatenate([_silence(1.0), tone(speech, RATE, 150), _silence(1.0)])


NOT_SPEECH = {
    "digital silence": _silence(),
    "faint hiss": _white(amp=0.001),
    "50 Hz hum": _hum(),
    "60 Hz hum": _hum(mains=60.0),
    "white noise": _white(),
    "loud white noise": _white(amp=0.5),
    "noise rising and falling like syllables": _white() * (1 + 0.8 * np.sin(2 * np.pi * 4 * _seconds(2.0))),
    "steady tone": sum(0.3 / k * np.sin(2 * np.pi * 150 * k * _seconds(2.0)) for k in (1, 2, 3)).astype(np.float32),
    "0.15 s burst in silence": _burst(0.15),
    "shorter than a frame": tone(0.01, RATE),
}


@pytest.mark.parametrize("name", sorted(NOT_SPEECH))
def test_what_is_not_speech_gets_no_speech(name):
    wave = NOT_SPEECH[name]
    assert audio.speech_span(wave, RATE).speech_s < LIMITS.min_speech
    with pytest.raises(AudioError, match="no_speech") as e:
        audio.trim_silence(wave, RATE, LIMITS, name)
    assert e.value.reason == "no_speech" and e.value.source == name


def test_speech_keeps_its_middle_and_loses_its_silence():
    voice = tone(1.2, RATE, 140)
    for lead, tail in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.5), (0.8, 0.6)):
        wave = np.concatenate([_silence(lead), voice, _silence(tail)])
        span = audio.require_speech(wave, RATE, LIMITS, "w")
        start, end = int(lead * RATE), int(lead * RATE) + len(voice)
        assert span.start <= start and span.end >= end  # nothing of the voice is cut
        assert start - span.start <= 0.25 * RATE and span.end - end <= 0.25 * RATE  # padding only
        trimmed = audio.trim_silence(wave, RATE, LIMITS, "w")
        np.testing.assert_array_equal(trimmed, wave[span.start : span.end])


def test_speech_over_hum_and_noise_is_still_speech():
    voice = np.concatenate([_silence(0.5), tone(1.5, RATE, 180), _silence(0.5)])
    for background in (_hum(2.5) * 0.1, _white(2.5, amp=0.01)):
        span = audio.require_speech(voice + background[: len(voice)], RATE, LIMITS, "mixed")
        assert span.speech_s >= 1.0


def test_a_short_word_passes_and_the_rule_can_be_switched_off():
    audio.require_speech(_burst(0.4), RATE, LIMITS, "word")  # 0.4 s of speech: enough
    silent = _silence()
    np.testing.assert_array_equal(audio.trim_silence(silent, RATE, audio.NO_LIMITS, "s"), silent)
    strict = audio.Limits(min_speech=1.0)
    with pytest.raises(AudioError, match=r"no_speech \(0\.\d+ s of speech < 1\.0 s\)"):
        audio.require_speech(_burst(0.4), RATE, strict, "word")


def test_synthetic_voices_are_speech():
    from speechid.corpora import voices

    rng = np.random.default_rng(3)
    for _ in range(5):
        wave = voices.render_clip(voices.make_voice(rng), 2.0, rng)
        assert audio.speech_span(wave, RATE).speech_s >= 0.5  # synth voices pause between words
