"""A synthetic Common Voice release: learnable voices, real layout, seeded bytes.

``make_corpus`` writes ``<out>/cv-corpus-synth-<locale>.tar.gz`` laid out like a Common Voice release
(``cv-corpus-synth/<locale>/clips/*.mp3`` at 48 kHz mono, and train/dev/test/validated/invalidated/other
TSVs with Common Voice 7.0's header), plus ``<out>/aliases.tsv`` (ground truth: every client_id and the
true speaker behind it, and with ``mislabels`` every clip filed under another voice's client_id:
``speechid.corpora.mislabels``) and, with ``plant_faults``, ``<out>/faults.tsv`` (each planted bad row or clip and
the outcome a correct pipeline must report).

Each speaker is a stable voice from a source-filter synthesiser: a glottal pulse train with its own
fundamental frequency and intonation range, jitter and shimmer, spectral tilt and breathiness, shaped by a
vocal tract whose formants are scaled by the speaker's vocal-tract length and nudged by a personal vowel
"accent", at a personal speaking rate. Each clip varies what is said (a random string of vowel, fricative
and stop segments), the loudness, a mild channel filter and background noise, so identity is learnable but
no single trivial cue (level, noise, bandwidth) gives it away.

Determinism: every clip draws from ``SeedSequence([seed, clip index])`` and the tarball is written with
fixed metadata (mtime 0, sorted members, gzip mtime 0), so the same arguments give the same bytes whatever
the number of worker processes.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy import signal

from speechid import outputs
from speechid.audio import encode, resample
from speechid.corpora import mislabels as planted_mislabels
from speechid.corpora.release import (
    CV_HEADER,
    TSV_NAMES,
    tsv_bytes,
    write_small_tsv,
    write_tarball,
)

RELEASE = "cv-corpus-synth"
OUT_RATE = 48_000  # Common Voice ships 48 kHz MP3
_SYN_RATE = 16_000  # synthesis rate; upsampled to 48 kHz before encoding
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
_WORDS = (
    "the quick voice carries over quiet water while seven birds sing about morning light and a "
    "river runs past old stone houses where children count the stars every summer night"
).split()


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


@dataclass
class SynthResult:
    tarball: str
    aliases_tsv: str
    faults_tsv: str | None
    speakers: int
    client_ids: int
    clips: int
    rows: dict = field(default_factory=dict)  # TSV name -> data rows
    mislabels: int = 0  # clips filed under another voice's client_id (their rows in aliases.tsv)

    def summary(self) -> str:
        rows = ", ".join(f"{k} {v}" for k, v in self.rows.items())
        return (
            f"wrote {self.tarball}: {self.speakers} speakers under {self.client_ids} client_ids, "
            f"{self.clips} clips"
            + (f" ({self.mislabels} filed under another voice's client_id)" if self.mislabels else "")
            + f"; TSV rows: {rows}; ground truth {self.aliases_tsv}"
            + (f"; planted faults {self.faults_tsv}" if self.faults_tsv else "")
        )


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


def synthesize(voice: Voice, duration: float, rng: np.random.Generator, rate: int = _SYN_RATE) -> np.ndarray:
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
    sos = signal.butter(2, [hp, lp], btype="band", fs=_SYN_RATE, output="sos")
    x = signal.sosfilt(sos, x)
    # Background noise at 18-40 dB SNR, pink-ish.
    snr = rng.uniform(18, 40)
    noise = signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(len(x)))
    x = x / (np.std(x) + 1e-9)
    x = x + noise / (np.std(noise) + 1e-9) * 10 ** (-snr / 20)
    level = 10 ** (rng.uniform(-30, -16) / 20)  # RMS in dBFS
    x = x / (np.sqrt(np.mean(x**2)) + 1e-9) * level
    return np.clip(x, -0.99, 0.99).astype(np.float32)


def _client_id(seed: int, speaker: int, alias: int) -> str:
    return hashlib.sha512(f"speechid-synth:{seed}:{speaker}:{alias}".encode()).hexdigest()


def _to_mp3(audio16k: np.ndarray, rate: int = OUT_RATE, channels: int = 1) -> bytes:
    up = resample(audio16k, _SYN_RATE, rate)
    if channels == 2:  # a stereo clip with slightly different channels
        up = np.stack([up, np.roll(up, 3) * 0.9], axis=1)
    return encode(up, rate, fmt="MP3")


@dataclass(frozen=True)
class _ClipJob:
    index: int
    seed: int
    voice: Voice
    duration: float
    rate: int = OUT_RATE
    channels: int = 1


def _render_job(job: _ClipJob) -> bytes:
    rng = np.random.default_rng(np.random.SeedSequence([job.seed, 1, job.index]))
    return _to_mp3(render_clip(job.voice, job.duration, rng), job.rate, job.channels)


def make_corpus(
    out_dir: str,
    speakers: int = 20,
    clips_per_speaker: int = 10,
    seed: int = 0,
    aliases: int = 0,
    plant_faults: bool = False,
    locale: str = "en",
    min_duration: float = 1.5,
    max_duration: float = 4.0,
    extra_fraction: float = 0.03,
    workers: int | None = None,
    heldout_clips: int | None = None,
    mislabels: int = 0,
) -> SynthResult:
    """Write a synthetic Common Voice release into ``out_dir`` (see the module docstring).

    ``heldout_clips``: clips of each dev and test speaker (default ``clips_per_speaker``): more of them let
    calibration measure speaker-level operating points for bigger groups of clips. ``aliases`` speakers are
    drawn among the test speakers (the test split grows to hold them) and their clips alternate between two
    client_ids: a model trained on both ids of a voice would have learned to tell them apart, and a
    deduplication run meets ids no model was trained on. ``mislabels`` clips of test speakers are filed under
    another test speaker's client_id (``speechid.corpora.mislabels``; at least two test speakers then)."""
    heldout_clips = _check_sizes(speakers, clips_per_speaker, aliases, heldout_clips, mislabels)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    voices = distinct_voices(speakers, rng)
    split_of, aliased = _assign_splits(speakers, aliases, mislabels, rng)
    plan = _Plan(seed, locale, rng, (min_duration, max_duration))
    for spk, voice in enumerate(voices):
        plan.add_speaker(spk, voice, split_of[spk], spk in aliased,
                         clips_per_speaker if split_of[spk] == "train" else heldout_clips)
    moved = plan.move_mislabels(mislabels)
    plan.add_unvalidated(voices, int(round(extra_fraction * speakers * clips_per_speaker)))
    if plant_faults:
        spk = next(s for s in range(speakers) if split_of[s] == "train")
        plan.plant_faults(voices[spk], _client_id(seed, spk, 0))
    clip_bytes = plan.render(workers)
    tar_name = f"{RELEASE}-{locale}.tar.gz"
    with outputs.staged(out_dir, "synth", flag="OUT_DIR") as staging:  # a fresh folder: no stale faults.tsv can survive
        write_tarball(os.path.join(staging, tar_name), plan.members(clip_bytes))
        write_small_tsv(os.path.join(staging, "aliases.tsv"), *planted_mislabels.truth_rows(plan.truth, moved))
        if plant_faults:
            write_small_tsv(os.path.join(staging, "faults.tsv"), ("path", "expected"), plan.faults)
    return SynthResult(
        tarball=os.path.join(out_dir, tar_name),
        aliases_tsv=os.path.join(out_dir, "aliases.tsv"),
        faults_tsv=os.path.join(out_dir, "faults.tsv") if plant_faults else None,
        speakers=speakers,
        client_ids=len(plan.truth),
        clips=len(clip_bytes),
        rows={k: len(v) for k, v in plan.rows.items()},
        mislabels=len(moved),
    )


def _check_sizes(speakers: int, clips_per_speaker: int, aliases: int, heldout_clips: int | None,
                 mislabels: int) -> int:
    """``ValueError`` naming the first size that does not fit; returns the clips of a held-out speaker."""
    if speakers < 3:
        raise ValueError(f"speakers={speakers}: need at least 3 (train, dev and test are speaker-disjoint)")
    if clips_per_speaker < 1:
        raise ValueError(f"clips_per_speaker={clips_per_speaker}: need at least 1")
    if not 0 <= aliases <= speakers:
        raise ValueError(f"aliases={aliases}: must be between 0 and speakers={speakers}")
    heldout_clips = clips_per_speaker if heldout_clips is None else int(heldout_clips)
    if heldout_clips < 1:
        raise ValueError(f"heldout_clips={heldout_clips}: need at least 1")
    if aliases and heldout_clips < 2:
        raise ValueError("aliases need at least 2 clips per speaker (one under each client_id)")
    if mislabels < 0:
        raise ValueError(f"mislabels={mislabels}: must be at least 0")
    return heldout_clips


def _assign_splits(speakers: int, aliases: int, mislabels: int, rng: np.random.Generator
                   ) -> tuple[dict[int, str], set[int]]:
    """Speaker-disjoint splits, like Common Voice: (speaker -> split, the aliased speakers). Aliased and
    mislabelled speakers are test speakers (never trained on)."""
    order = rng.permutation(speakers)
    n_held = max(1, int(round(0.1 * speakers)))
    n_test = max(n_held, aliases, 2 if mislabels else 0)
    if n_test + n_held >= speakers:
        raise ValueError(f"aliases={aliases}, mislabels={mislabels}: the test split holds the aliased and "
                         f"mislabelled speakers, and {n_test} test plus {n_held} dev speakers leave none of "
                         f"{speakers} to train on")
    split_of = {}
    for rank, spk in enumerate(order):
        split_of[int(spk)] = "test" if rank < n_test else ("dev" if rank < n_test + n_held else "train")
    aliased = set(int(s) for s in rng.choice(order[:n_test], size=aliases, replace=False)) if aliases else set()
    return split_of, aliased


class _Plan:
    """The release being planned: clips to render (in order: each clip's index seeds its audio), TSV rows,
    the ground truth, the planted faults. Every draw comes from ``rng`` in plan order, so a seed gives the
    same release."""

    def __init__(self, seed: int, locale: str, rng: np.random.Generator, durations: tuple[float, float]):
        self.seed, self.locale, self.rng, self.durations = seed, locale, rng, durations
        self.clip_base = 20_000_000 + (seed % 1000) * 100_000
        self.jobs: list[_ClipJob] = []
        self.rows: dict[str, list] = {k: [] for k in TSV_NAMES}
        self.truth: list[tuple[str, str]] = []
        self.truth_of: dict[str, str] = {}
        self.faults: list[tuple[str, str]] = []
        self.special: dict[str, bytes] = {}  # clip path -> bytes that replace its rendering

    def clip_path(self, index: int) -> str:
        return f"common_voice_{self.locale}_{self.clip_base + index}.mp3"

    def new_clip(self, voice: Voice, duration: float, rate: int = OUT_RATE, channels: int = 1) -> str:
        index = len(self.jobs)
        self.jobs.append(_ClipJob(index, self.seed, voice, duration, rate, channels))
        return self.clip_path(index)

    def random_duration(self) -> float:
        return float(self.rng.uniform(*self.durations))

    def row(self, cid: str, path: str, voice: Voice, up: int = 2, down: int = 0) -> tuple:
        rng = self.rng
        words = rng.choice(_WORDS, size=int(rng.integers(4, 10)))
        sentence = " ".join(words).capitalize() + "."
        age = ("", "twenties", "thirties", "fourties", "fifties")[int(rng.integers(5))]
        gender = voice.sex if rng.random() < 0.7 else ""
        return (cid, path, sentence, up, down, age, gender, "", self.locale, "")

    def add_speaker(self, spk: int, voice: Voice, split: str, aliased: bool, clips: int) -> None:
        """A voice's ``clips`` in its split and validated.tsv, alternating between its client_ids."""
        ids = [_client_id(self.seed, spk, 0)] + ([_client_id(self.seed, spk, 1)] if aliased else [])
        self.truth.extend((cid, f"speaker_{spk:05d}") for cid in ids)
        self.truth_of.update((cid, f"speaker_{spk:05d}") for cid in ids)
        for k in range(clips):
            path = self.new_clip(voice, self.random_duration())
            r = self.row(ids[k % len(ids)], path, voice, up=int(self.rng.integers(2, 6)),
                         down=int(self.rng.integers(0, 2)))
            self.rows[split].append(r)
            self.rows["validated"].append(r)

    def move_mislabels(self, n: int) -> list[planted_mislabels.Mislabel]:
        """``n`` test clips filed under another test voice's client_id: the same row, under the new id, in
        every TSV that lists it."""
        moved = planted_mislabels.choose([(r[1], r[0], self.truth_of[r[0]]) for r in self.rows["test"]], n,
                                         self.seed)
        if moved:
            new_id = {m.clip: m.client_id for m in moved}
            for name in ("test", "validated"):
                self.rows[name] = [(new_id[r[1]], *r[1:]) if r[1] in new_id else r for r in self.rows[name]]
        return moved

    def add_unvalidated(self, voices: list[Voice], n: int) -> None:
        """``n`` clips that only invalidated.tsv lists and ``n`` only other.tsv lists, as in a real release."""
        for name in ("invalidated", "other"):
            for _ in range(n):
                spk = int(self.rng.integers(len(voices)))
                path = self.new_clip(voices[spk], self.random_duration())
                up, down = (0, 2) if name == "invalidated" else (1, 0)
                self.rows[name].append(self.row(_client_id(self.seed, spk, 0), path, voices[spk], up, down))

    def _planted(self, voice: Voice, cid: str, reason: str, data: bytes | None = None, **clip) -> None:
        path = self.new_clip(voice, clip.pop("duration", 2.0), **clip)
        if data is not None:
            self.special[path] = data
        self.rows["train"].append(self.row(cid, path, voice))
        self.faults.append((path, reason))

    def plant_faults(self, voice: Voice, cid: str) -> None:
        """Train rows of one train voice (client_id ``cid``), each with the outcome prep must report."""
        self._planted(voice, cid, "empty", b"")
        self._planted(voice, cid, "corrupt", np.random.default_rng(self.seed).bytes(4000))
        self._planted(voice, cid, "truncated")  # bytes cut in half once rendered
        self._planted(voice, cid, "too_short", duration=0.2)
        self._planted(voice, cid, "too_long", duration=35.0)
        self._planted(voice, cid, "ok_converted", rate=44_100, channels=2)  # stereo 44.1 kHz: converted, not failed
        hiss = 0.003 * np.random.default_rng(self.seed + 1).standard_normal(2 * _SYN_RATE).astype(np.float32)
        self._planted(voice, cid, "no_speech", _to_mp3(hiss))  # a silent recording: 2 s of faint room noise
        missing = self.clip_path(99_999)
        self.rows["train"].append(self.row(cid, missing, voice))
        self.faults.append((missing, "missing_clip"))
        dup = self.rows["train"][0]
        self.rows["train"].append(dup)
        self.faults.append((dup[1], "duplicate"))
        malformed = self.clip_path(99_998)
        self.rows["train"].append(f"{cid}\t{malformed}\tonly three fields")
        self.faults.append((malformed, "malformed_row"))

    def render(self, workers: int | None) -> dict[str, bytes]:
        """Every planned clip's MP3 bytes by path, rendered in ``workers`` processes, faults applied."""
        with ProcessPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
            audio = list(pool.map(_render_job, self.jobs, chunksize=8))
        clip_bytes = {self.clip_path(j.index): a for j, a in zip(self.jobs, audio, strict=True)}
        for path, reason in self.faults:
            if reason == "truncated":
                clip_bytes[path] = clip_bytes[path][: len(clip_bytes[path]) // 2]
        clip_bytes.update(self.special)
        return clip_bytes

    def members(self, clip_bytes: dict[str, bytes]) -> list[tuple[str, bytes]]:
        """The tarball's members: the clips, sorted, then the TSVs."""
        prefix = f"{RELEASE}/{self.locale}"
        members = [(f"{prefix}/clips/{path}", clip_bytes[path]) for path in sorted(clip_bytes)]
        members += [(f"{prefix}/{name}.tsv", tsv_bytes(CV_HEADER, self.rows[name])) for name in TSV_NAMES]
        return members
