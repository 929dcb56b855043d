"""On-the-fly, seeded waveform augmentation for training batches, in TensorFlow ops (runs inside tf.data).

Each crop of a ``[batch, samples]`` float32 batch independently, each effect with its own probability:

- gain: a random level change (the log-mel normalisation should not learn loudness as identity);
- band limit: an FFT mask with a random high-pass and low-pass corner, down to telephone band
  (300-3400 Hz): the real corpora are 11 kHz narrowband, users' recordings are not;
- reverberation: convolution with a synthetic room impulse response (exponentially decaying noise with a
  random RT60), normalised to keep the direct path's level;
- additive noise at a random SNR: coloured noise (white through a random one-pole filter) or babble
  (the sum of three other crops of the same batch, i.e. other speakers).

Determinism: every random draw is stateless, keyed by (seed, batch index), so the same seed gives the same
augmented batches whatever the parallelism. The formulas are plain so a reader can check them:
``x_noisy = x + n * rms(x) / rms(n) * 10^(-snr/20)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import tensorflow as tf


@dataclass(frozen=True)
class AugmentConfig:
    p_gain: float = 0.5
    gain_db: float = 6.0
    p_band: float = 0.3
    p_reverb: float = 0.3
    rt60: tuple[float, float] = (0.2, 0.8)
    rir_seconds: float = 0.25
    p_noise: float = 0.5
    p_babble: float = 0.3  # of the noisy crops, the share that get babble instead of coloured noise
    snr_db: tuple[float, float] = (5.0, 25.0)

    def to_json(self) -> dict:
        return asdict(self)


PRESETS = {"none": None, "standard": AugmentConfig()}


def preset(name: str) -> AugmentConfig | None:
    if name not in PRESETS:
        raise ValueError(f"augment={name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def _rms(x: tf.Tensor) -> tf.Tensor:
    return tf.sqrt(tf.reduce_mean(tf.square(x), axis=-1, keepdims=True) + 1e-10)


def _fft_filter(x: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    n = tf.shape(x)[-1]
    return tf.signal.irfft(tf.signal.rfft(x) * tf.cast(mask, tf.complex64), fft_length=[n])


def augment_batch(
    x: tf.Tensor, seed: tf.Tensor, sample_rate: int, config: AugmentConfig, group: int = 1
) -> tf.Tensor:
    """``x`` float32 ``[b, n]`` -> the same shape, augmented; ``seed`` an int64 ``[2]`` stateless seed.

    ``group``: consecutive rows that share a speaker (K of a P x K batch); babble is mixed from rows
    ``group``, ``2 group`` and ``3 group`` away, so it is always other speakers.
    """
    b, n = tf.shape(x)[0], tf.shape(x)[1]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 13)

    def u(i, lo=0.0, hi=1.0, shape=None):
        return tf.random.stateless_uniform(shape if shape is not None else [b, 1], seeds[i], lo, hi)

    def apply(i, p, y, fx):
        return tf.where(u(i) < p, fx, y)

    # gain
    gain = tf.pow(10.0, u(1, -config.gain_db, config.gain_db) / 20.0)
    x = apply(0, config.p_gain, x, x * gain)
    level = _rms(x)
    # band limit: high-pass corner 50-300 Hz, low-pass corner 3.4 kHz up to Nyquist
    bins = tf.shape(tf.signal.rfft(x))[-1]
    freqs = tf.linspace(0.0, sample_rate / 2.0, bins)[tf.newaxis, :]
    low = u(3, 50.0, 300.0)
    high = u(4, 3400.0, sample_rate / 2.0)
    mask = tf.sigmoid((freqs - low) / 20.0) * tf.sigmoid((high - freqs) / 100.0)
    x = apply(2, config.p_band, x, _fft_filter(x, mask))
    # reverberation: h[t] = noise[t] * exp(-6.9 t / rt60), direct path first
    taps = int(config.rir_seconds * sample_rate)
    t = tf.range(taps, dtype=tf.float32)[tf.newaxis, :] / sample_rate
    rt60 = u(6, *config.rt60)
    rir = tf.random.stateless_normal([b, taps], seeds[7]) * tf.exp(-6.9 * t / rt60)
    rir = tf.concat([tf.ones([b, 1]), 0.3 * rir[:, 1:]], axis=1)
    length = n + taps
    wet = tf.signal.irfft(
        tf.signal.rfft(tf.pad(x, [[0, 0], [0, taps]])) * tf.signal.rfft(tf.pad(rir, [[0, 0], [0, n]])),
        fft_length=[length],
    )[:, :n]
    wet = wet * _rms(x) / _rms(wet)
    x = apply(5, config.p_reverb, x, wet)
    # additive noise: coloured (one-pole low-pass of white noise, via its FFT response) or babble
    white = tf.random.stateless_normal([b, n], seeds[9])
    pole = u(10, 0.0, 0.95)
    omega = 3.14159265 * freqs / (sample_rate / 2.0)
    z = tf.exp(tf.complex(tf.zeros_like(omega), -omega))  # e^{-i w}
    response = 1.0 / tf.abs(1.0 - tf.cast(pole, tf.complex64) * z)
    coloured = _fft_filter(white, response)
    babble = tf.roll(x, group, axis=0) + tf.roll(x, 2 * group, axis=0) + tf.roll(x, 3 * group, axis=0)
    noise = tf.where(u(11) < config.p_babble, babble, coloured)
    snr = u(8, *config.snr_db)
    noisy = x + noise * _rms(x) / _rms(noise) * tf.pow(10.0, -snr / 20.0)
    x = apply(12, config.p_noise, x, noisy)
    # the level after the gain step: the other effects change colour and texture, not loudness
    x = x * level / _rms(x)
    return tf.clip_by_value(x, -1.0, 1.0)
