"""A synthetic Common Voice release: learnable voices, real layout, seeded bytes.

``make_corpus`` writes ``<out>/cv-corpus-synth-<locale>.tar.gz`` laid out like a Common Voice release
(``cv-corpus-synth/<locale>/clips/*.mp3`` at 48 kHz mono, and train/dev/test/validated/invalidated/other
TSVs with Common Voice 7.0's header), plus ``<out>/aliases.tsv`` (ground truth: every client_id and the
true speaker behind it, and with ``mislabels`` every clip filed under another voice's client_id:
``speechid.corpora.mislabels``) and, with ``plant_faults``, ``<out>/faults.tsv`` (each planted bad row or clip and
the outcome a correct pipeline must report).

Each speaker is a stable voice of ``speechid.corpora.voices`` (a source-filter synthesiser); each clip
varies what is said, the loudness, the channel and the noise, so identity is learnable but no single
trivial cue gives it away. The layout and the TSV header are those Common Voice's releases ship (version
7.0's header).

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

from speechid import outputs
from speechid.audio import encode, resample
from speechid.corpora import mislabels as planted_mislabels
from speechid.corpora.layout import (
    CV_HEADER,
    TSV_NAMES,
    tsv_bytes,
    write_small_tsv,
    write_tarball,
)
from speechid.corpora.voices import (
    SYN_RATE,
    Voice,
    distinct_voices,
    render_clip,
)

RELEASE = "cv-corpus-synth"
OUT_RATE = 48_000  # Common Voice ships 48 kHz MP3

_WORDS = (
    "the quick voice carries over quiet water while seven birds sing about morning light and a "
    "river runs past old stone houses where children count the stars every summer night"
).split()


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

def _client_id(seed: int, speaker: int, alias: int) -> str:
    return hashlib.sha512(f"speechid-synth:{seed}:{speaker}:{alias}".encode()).hexdigest()


def _to_mp3(audio16k: np.ndarray, rate: int = OUT_RATE, channels: int = 1) -> bytes:
    up = resample(audio16k, SYN_RATE, rate)
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
        hiss = 0.003 * np.random.default_rng(self.seed + 1).standard_normal(2 * SYN_RATE).astype(np.float32)
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
