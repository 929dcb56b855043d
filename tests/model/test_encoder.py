"""speechid.Encoder on the tiny model: any format and rate in, the windowed and pooled embedding out."""

import numpy as np
import pytest

import speechid
from speechid.audio import encode, resample
from speechid.errors import AudioError, ConfigError
from speechid.model.windows import pool_embeddings, window_waveform

from .conftest import voice


@pytest.fixture(scope="module")
def enc(tiny_model):
    return speechid.Encoder.load(tiny_model[0])


def test_lazy_name_and_config(enc, tiny_model):
    assert speechid.Encoder is type(enc)
    assert enc.config["model_id"] == tiny_model[1]["model_id"]
    assert enc.sample_rate == 16_000 and enc.embedding_dim == 8 and enc.window_s == 1.0


def test_same_file_at_16_and_48_khz_gives_the_same_embedding(enc, tmp_path):
    # A 48 kHz recording and its 16 kHz copy (what any resampler would make of it).
    clip48 = voice(5, 2.3, seed=1, rate=48_000)
    (tmp_path / "a48.wav").write_bytes(encode(clip48, 48_000, "WAV"))
    (tmp_path / "a16.wav").write_bytes(encode(resample(clip48, 48_000, 16_000), 16_000, "WAV"))
    (tmp_path / "other.wav").write_bytes(encode(voice(9, 2.3, seed=1, rate=48_000), 48_000, "WAV"))
    e16, e48, other = enc.embed([tmp_path / "a16.wav", tmp_path / "a48.wav", tmp_path / "other.wav"])
    assert np.linalg.norm(e16 - e48) < 0.02
    assert np.linalg.norm(e16 - e48) < 0.1 * np.linalg.norm(e16 - other)
    # A waveform given with its rate is resampled the same way.
    np.testing.assert_allclose(enc.embed(clip48, sample_rate=48_000), e48, atol=2e-3)


def test_inputs_paths_bytes_arrays_and_lists(enc, tmp_path):
    wave = voice(3, 1.7, seed=2)
    data = encode(wave, 16_000, "FLAC")
    (tmp_path / "x.flac").write_bytes(data)
    from_path = enc.embed(str(tmp_path / "x.flac"))
    assert from_path.shape == (8,) and from_path.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(from_path), 1.0, atol=1e-5)
    np.testing.assert_allclose(enc.embed(data), from_path, atol=1e-6)
    np.testing.assert_allclose(enc.embed(wave), from_path, atol=1e-3)  # FLAC is PCM16: tiny rounding
    many = enc.embed([data, wave, str(tmp_path / "x.flac")])
    assert many.shape == (3, 8)


def test_long_clips_are_windowed_and_averaged(enc):
    long = voice(4, 4.3, seed=3)
    speech = enc.load_audio(long)  # what is embedded: 4.285 s once the quiet last 15 ms are trimmed
    assert 4.2 < len(speech) / 16_000 < 4.3
    windows = window_waveform(speech, 16_000, 1.0, 0.5)  # window 1.0 s, hop 0.5 s: 8, the last flush with the end
    assert len(windows) == 8
    want = pool_embeddings(enc.model(windows).numpy())
    np.testing.assert_allclose(enc.embed(long), want, atol=1e-5)


def test_speaker_enrolment_distance_and_verify(enc):
    a1, a2, b = voice(1, 2.0, seed=1), voice(1, 2.0, seed=2), voice(6, 2.0, seed=1)
    e = enc.embed([a1, a2, b])
    np.testing.assert_allclose(enc.embed_speaker([a1, a2]), pool_embeddings(e[:2]), atol=1e-6)
    d = enc.distance(a1, b)
    assert d == pytest.approx(float(np.linalg.norm(e[0] - e[2])), abs=1e-5)
    assert enc.distance(e[0], e[2]) == pytest.approx(d, abs=1e-5)  # embeddings are accepted as they are
    assert enc.verify(a1, b, threshold=d + 1e-3) == (True, pytest.approx(d, abs=1e-5))
    assert enc.verify(a1, b, threshold=d - 1e-3)[0] is False
    same, dist = enc.verify(a1, a1)
    assert same is True and dist == pytest.approx(0.0, abs=1e-5)


def test_bad_inputs_are_typed_errors(enc, tmp_path):
    with pytest.raises(AudioError, match="corrupt"):
        enc.embed(b"this is not audio at all" * 20)
    with pytest.raises(AudioError, match="too_short"):
        enc.embed(encode(np.zeros(800, np.float32), 16_000, "WAV"))
    silence = np.zeros(32_000, np.float32)
    for source in (silence, encode(silence, 16_000, "WAV")):  # a waveform and a file alike
        with pytest.raises(AudioError, match="no_speech") as e:
            enc.embed(source)
        assert e.value.reason == "no_speech"
    with pytest.raises(AudioError, match="no_speech"):
        enc.verdict(voice(1, 2.0, seed=1), silence)  # no verdict for a silent clip
    with pytest.raises(ConfigError):
        enc.embed(12345)
    with pytest.raises(ConfigError, match="not a model directory"):
        speechid.Encoder.load(str(tmp_path))
