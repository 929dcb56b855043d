"""Synthetic voices: a source-filter synthesiser whose speakers are learnable and tell apart.

Each speaker (``Voice``) is a stable voice: a glottal pulse train with its own fundamental frequency and
intonation range, jitter and shimmer, spectral tilt and breathiness, shaped by a vocal tract whose formants
are scaled by the speaker's vocal-tract length and nudged by a personal vowel "accent", at a personal
speaking rate. Each utterance varies what is said (a random string of vowel, fricative and stop segments);
``render_clip`` adds the loudness, a mild channel filter and background noise, so identity is learnable but
no single trivial cue (level, noise, bandwidth) gives it away. The formant targets are Peterson & Barney's
vowel averages; ``speechid.corpora.synth`` lays the clips out as a Common Voice release.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

SYN_RATE = 16_000  # synthesis rate
_FRAME = 160  # 10 ms control frames for the time-varying vocal tract

# Male-reference formants (Hz) of a few vowels (Peterson & Barney averages).
_VOWELS = np.array(
    [
        [270, 2290, 3010, 3500],
        [400, 2000, 2550, 3500],
        [730, 1090, 2440, 3400],
        [570, 840, 2410, 3300],
        [300, 870, 2240, 3300],
        [660, 1720, 2410, 3400],
        [520, 1190, 2390, 3400],
        [490, 1350, 1690, 3300],
    ],
    dtype=np.float64,
)
_BANDWIDTHS = np.array([70.0, 100.0, 140.0, 200.0])


@dataclass(frozen=True)
class Voice:
    """A speaker's fixed traits."""

    f0: float  # mean fundamental frequency (Hz)
    f0_range: float  # intonation spread (semitones)
    vtl: float  # formant scale (vocal-tract length: higher = shorter tract)
    accent: tuple  # per-vowel, per-formant multiplicative offsets (8 x 4)
    tilt: float  # one-pole low-pass coefficient on the glottal source
    jitter: float
    shimmer: float
    breath: float  # aspiration noise relative to the voiced source
    rate: float  # segment duration multiplier (slower > 1)
    sex: str




# How far apart two voices' source and filter are, in units of a just-audible difference of each trait
# (3 semitones of mean pitch, 4% of vocal-tract length, 0.1 of source tilt): what the model hears most.
_TRAIT_UNITS = {"f0": 3.0, "vtl": 0.04, "tilt": 0.1}
VOICE_CANDIDATES = 32  # candidates drawn per voice by distinct_voices (best-candidate sampling)


def trait_distance(a: Voice, b: Voice) -> float:
    """Distance between two voices' core traits (pitch in semitones, vocal-tract length, tilt), in units of
    ``_TRAIT_UNITS``; voices of different sexes never share a pitch or tract range, so they are far apart."""
    if a.sex != b.sex:
        return float("inf")
    st = 12.0 * np.log2(a.f0 / b.f0) / _TRAIT_UNITS["f0"]
    return float(np.sqrt(st**2 + ((a.vtl - b.vtl) / _TRAIT_UNITS["vtl"]) ** 2
                         + ((a.tilt - b.tilt) / _TRAIT_UNITS["tilt"]) ** 2))


def distinct_voices(n: int, rng: np.random.Generator, candidates: int = VOICE_CANDIDATES) -> list[Voice]:
    """``n`` voices spread out in source and filter: each is the farthest (``trait_distance``) from the
    voices already chosen among ``candidates`` random ones (Mitchell's best-candidate sampling).

    Independent draws put some pairs of voices within a fraction of a semitone, 1% of tract length and 0.02
    of tilt of each other: two speakers nobody, and no model, could tell apart, which then read as dedup
    misses. Best-candidate sampling keeps the same ranges and randomness but no near-twins."""
    voices: list[Voice] = []
    for _ in range(n):
        options = [make_voice(rng) for _ in range(max(1, candidates))]
        if voices:
            gaps = [min(trait_distance(v, w) for w in voices) for v in options]
            voices.append(options[int(np.argmax(gaps))])
        else:
            voices.append(options[0])
    return voices


def make_voice(rng: np.random.Generator) -> Voice:
    sex = "female" if rng.random() < 0.5 else "male"
    if sex == "male":
        f0, vtl = rng.uniform(85, 150), rng.uniform(0.88, 1.02)
    else:
        f0, vtl = rng.uniform(165, 255), rng.uniform(1.05, 1.22)
    return Voice(
        f0=f0,
        f0_range=rng.uniform(0.8, 3.5),
        vtl=vtl,
        accent=tuple(map(tuple, rng.uniform(0.9, 1.1, size=(len(_VOWELS), 4)))),
        tilt=rng.uniform(0.55, 0.95),
        jitter=rng.uniform(0.003, 0.025),
        shimmer=rng.uniform(0.02, 0.15),
        breath=rng.uniform(0.01, 0.25),
        rate=rng.uniform(0.75, 1.35),
        sex=sex,
    )


def _resonator_poly(freqs: np.ndarray, bws: np.ndarray, rate: int) -> np.ndarray:
    """Denominator polynomial of a cascade of two-pole resonators."""
    a = np.array([1.0])
    for f, bw in zip(freqs, bws, strict=True):
        r = np.exp(-np.pi * bw / rate)
        a = np.convolve(a, [1.0, -2.0 * r * np.cos(2 * np.pi * f / rate), r * r])
    return a


def synthesize(voice: Voice, duration: float, rng: np.random.Generator, rate: int = SYN_RATE) -> np.ndarray:
    """One utterance of ``voice`` lasting about ``duration`` seconds, float32 at ``rate``, clean."""
    n = int(duration * rate)
    n_frames = n // _FRAME + 1
    # Segment plan: vowels carry the identity, fricatives and stops make it speech-like.
    kinds, lengths, vowels = [], [], []
    total = 0
    while total < n_frames:
        kind = rng.choice(3, p=[0.62, 0.23, 0.15])  # 0 vowel, 1 fricative, 2 stop/closure
        base = (8, 20) if kind == 0 else ((5, 12) if kind == 1 else (3, 8))
        length = max(2, int(rng.integers(*base) * voice.rate))
        kinds.append(kind)
        lengths.append(length)
        vowels.append(int(rng.integers(len(_VOWELS))))
        total += length
    frame_kind = np.repeat(kinds, lengths)[:n_frames]
    frame_vowel = np.repeat(vowels, lengths)[:n_frames]
    # Formant targets per frame, smoothed so the tract glides between segments.
    accent = np.asarray(voice.accent)
    targets = _VOWELS[frame_vowel] * accent[frame_vowel] * voice.vtl
    kernel = np.hanning(7)
    kernel /= kernel.sum()
    targets = np.stack([np.convolve(targets[:, j], kernel, mode="same") for j in range(4)], axis=1)
    targets[:3] = targets[3]
    targets[-3:] = targets[-4]
    targets = np.minimum(targets, rate / 2 - 400)

    # Voicing and amplitude envelopes (per sample), with short ramps at segment edges.
    voiced = np.repeat((frame_kind == 0).astype(np.float64), _FRAME)[:n]
    fric = np.repeat((frame_kind == 1).astype(np.float64), _FRAME)[:n]
    ramp = np.hanning(161)
    ramp /= ramp.sum()
    voiced = np.convolve(voiced, ramp, mode="same")
    fric = np.convolve(fric, ramp, mode="same")

    # Fundamental: declination + slow intonation + jitter.
    t = np.arange(n) / rate
    semis = voice.f0_range * (
        np.sin(2 * np.pi * rng.uniform(0.3, 1.2) * t + rng.uniform(0, 2 * np.pi))
        + 0.5 * np.sin(2 * np.pi * rng.uniform(1.5, 3.0) * t + rng.uniform(0, 2 * np.pi))
    ) / 1.5 - 1.5 * t / max(duration, 1e-3)
    f0 = voice.f0 * 2.0 ** (semis / 12.0)
    f0 *= 1.0 + voice.jitter * np.repeat(rng.standard_normal(n // 80 + 1), 80)[:n]
    phase = np.cumsum(f0 / rate)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    pulses *= 1.0 + voice.shimmer * np.repeat(rng.standard_normal(n // 80 + 1), 80)[:n]
    # Glottal source: pulse train through a speaker-specific spectral tilt, plus aspiration.
    source = signal.lfilter([1.0 - voice.tilt], [1.0, -voice.tilt], pulses)
    source = source - signal.lfilter([1.0], [1.0, -0.995], source) * 0.005  # remove DC drift
    source = source / (np.std(source) + 1e-9)
    aspiration = rng.standard_normal(n) * voice.breath
    excitation = (source + aspiration) * voiced

    # Time-varying vocal tract: one 8th-order all-pole filter per 10 ms frame, state carried across frames.
    out = np.empty(n)
    zi = np.zeros(8)
    bws = _BANDWIDTHS * (0.8 + 0.4 * voice.vtl)
    for i in range(n_frames):
        s, e = i * _FRAME, min(n, (i + 1) * _FRAME)
        if s >= e:
            break
        a = _resonator_poly(targets[i], bws, rate)
        out[s:e], zi = signal.lfilter([a.sum()], a, excitation[s:e], zi=zi)
    # Fricatives: band-passed noise whose centre depends on the tract length.
    centre = min(rate / 2 - 600, rng.uniform(2500, 5200) * voice.vtl)
    b, a = signal.butter(2, [centre * 0.7, min(rate / 2 - 100, centre * 1.3)], btype="band", fs=rate)
    noise = signal.lfilter(b, a, rng.standard_normal(n)) * fric
    out = out / (np.std(out) + 1e-9) + 0.6 * noise / (np.std(noise) + 1e-9) * (fric.mean() > 0)
    return out.astype(np.float32)


def render_clip(voice: Voice, duration: float, rng: np.random.Generator) -> np.ndarray:
    """An utterance as a user's microphone would record it: loudness, channel, noise. float32 at 16 kHz."""
    x = synthesize(voice, duration, rng).astype(np.float64)
    # Mild channel: a high-pass and a low-pass at random corners.
    hp = rng.uniform(60, 200)
    lp = rng.uniform(5000, 7600)
    sos = signal.butter(2, [hp, lp], btype="band", fs=SYN_RATE, output="sos")
    x = signal.sosfilt(sos, x)
    # Background noise at 18-40 dB SNR, pink-ish.
    snr = rng.uniform(18, 40)
    noise = signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(len(x)))
    x = x / (np.std(x) + 1e-9)
    x = x + noise / (np.std(noise) + 1e-9) * 10 ** (-snr / 20)
    level = 10 ** (rng.uniform(-30, -16) / 20)  # RMS in dBFS
    x = x / (np.sqrt(np.mean(x**2)) + 1e-9) * level
    return np.clip(x, -0.99, 0.99).astype(np.float32)
