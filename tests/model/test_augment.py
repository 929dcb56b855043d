"""Training augmentation: seeded, shape- and level-preserving, and each effect does what it says."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from speechid.model.augment import AugmentConfig, augment_batch, preset
from tests.conftest import tone

RATE = 16_000
OFF = AugmentConfig(p_gain=0.0, p_band=0.0, p_reverb=0.0, p_noise=0.0)


def batch(n=8, seconds=1.0):
    return tf.constant(np.stack([tone(seconds, RATE, 120.0 + 40 * i, amp=0.2) for i in range(n)]))


def run(x, config, seed=(1, 2), group=1):
    return augment_batch(x, tf.constant(seed, tf.int64), RATE, config, group=group).numpy()


def test_same_seed_same_batch_other_seed_other_batch():
    x = batch()
    a, b, c = run(x, preset("standard")), run(x, preset("standard")), run(x, preset("standard"), seed=(1, 3))
    assert a.shape == x.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.all(np.abs(a) <= 1.0)


def test_everything_off_is_the_identity():
    x = batch()
    np.testing.assert_allclose(run(x, OFF), x.numpy(), atol=1e-6)


def test_noise_lands_at_the_drawn_snr():
    x = batch()
    cfg = dataclasses.replace(OFF, p_noise=1.0, p_babble=0.0, snr_db=(10.0, 10.0))
    x = x.numpy()
    y = run(tf.constant(x), cfg)
    # the final level restore scales signal and noise alike: y = s x + s n; s by least squares
    s = np.sum(y * x, axis=1, keepdims=True) / np.sum(x * x, axis=1, keepdims=True)
    noise = y - s * x
    snr = 10 * np.log10(np.sum((s * x) ** 2, axis=1) / np.sum(noise**2, axis=1))
    np.testing.assert_allclose(snr, 10.0, atol=0.5)
    np.testing.assert_allclose(np.sqrt(np.mean(y**2, axis=1)), np.sqrt(np.mean(x**2, axis=1)), rtol=1e-3)


def test_babble_comes_from_other_speakers():
    # 4 speakers x K=2 rows of pure sines: babble for a row mixes rows 2, 4 and 6 away, never its own speaker's
    freqs = (110, 170, 230, 290)
    t = np.arange(RATE) / RATE
    x = np.stack([0.2 * np.sin(2 * np.pi * freqs[i // 2] * t) for i in range(8)]).astype(np.float32)
    cfg = dataclasses.replace(OFF, p_noise=1.0, p_babble=1.0, snr_db=(0.0, 0.0))
    y = run(tf.constant(x), cfg, group=2)
    s = np.sum(y[0] * x[0]) / np.sum(x[0] * x[0])
    spectrum = np.abs(np.fft.rfft(y[0] - s * x[0]))  # 1 Hz bins
    assert spectrum[[170, 230, 290]].min() > 100 * spectrum[110]


def test_band_limit_removes_high_frequencies():
    x = np.stack([np.random.default_rng(i).normal(0, 0.1, RATE).astype(np.float32) for i in range(16)])
    cfg = dataclasses.replace(OFF, p_band=1.0)
    y = run(tf.constant(x), cfg)
    hi = np.abs(np.fft.rfft(y, axis=1))[:, 7800:].mean()
    mid = np.abs(np.fft.rfft(y, axis=1))[:, 1000:3000].mean()
    assert hi < 0.5 * mid


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="standard"):
        preset("loud")
