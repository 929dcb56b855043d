"""Speaker-labelled clips -> a release in Common Voice layout that every speechid command reads unchanged.

Each corpus maker (``fotaq``, ``bass``, ``drascula``, ``asterisk``, ``kdeedu``, ``folder``) yields
``SourceClip`` items (``speechid.corpora.sources``): a speaker label (or
None when the source does not say who speaks), a file name, where it came from, and a way to read its
bytes. ``write_release`` then

1. decodes every clip once (quietly: decoder frame errors are counted, not printed) to measure it; a clip
   that does not decode, is too short or too long, holds too little speech (prep's ``no_speech`` rule), or
   has no speaker goes to ``failures.tsv`` with a reason;
2. splits the speakers, never the clips: train/dev/test are speaker-disjoint, chosen with a seed among the
   speakers with at least ``min_clips`` clips (the others train only), unless the caller names them;
3. writes ``<release>-<locale>.tar.gz`` per locale: ``clip_durations.tsv``, then ``clips/``, then the
   split TSVs with Common Voice's header (the order of the current Common Voice bundler), with fixed
   metadata so the same sources and seed give the same bytes; client_ids are stable hashes of the label;
4. writes ``speakers.tsv`` (speaker, client_ids, clips, seconds, split, source), ``aliases.tsv`` (every
   client_id and the true speaker behind it, and every clip planted under another voice's client_id: the
   ``--truth`` file of ``speechid dedup``, read by ``speechid.truth``), ``failures.tsv``
   and ``corpus.json`` (counts that reconcile: sources = written + failed).

Clip bytes are read twice (to measure, then to write) and never held all at once, so a folder corpus
larger than memory works.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tarfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from speechid import audio, outputs
from speechid.corpora import mislabels as planted_mislabels
from speechid.corpora.layout import (
    CV_HEADER,
    SPLITS,
    TSV_NAMES,
    tsv_bytes,
    tsv_text,
    write_small_tsv,
    write_tarball,
)
from speechid.corpora.sources import SourceClip, SourceFailure
from speechid.corpora.splits import choose_splits
from speechid.errors import AudioError, ConfigError

SPEAKERS_TSV, ALIASES_TSV, FAILURES_TSV, MANIFEST_JSON = "speakers.tsv", "aliases.tsv", "failures.tsv", "corpus.json"


@dataclass(frozen=True)
class ReleaseResult:
    """A written release: its folder and its ``corpus.json``; every path is derived from those two."""

    out_dir: str
    manifest: dict

    @property
    def archives(self) -> list[str]:
        return [os.path.join(self.out_dir, name) for name in self.manifest["archives"]]

    @property
    def speakers_tsv(self) -> str:
        return os.path.join(self.out_dir, SPEAKERS_TSV)

    @property
    def aliases_tsv(self) -> str:
        return os.path.join(self.out_dir, ALIASES_TSV)

    @property
    def failures_tsv(self) -> str:
        return os.path.join(self.out_dir, FAILURES_TSV)

    def table(self) -> str:
        """The speaker table a person reads: characters, clips and hours per split."""
        m = self.manifest
        lines = [f"{'split':<6} {'speakers':>8} {'clips':>7} {'hours':>7}"]
        for split in SPLITS:
            s = m["splits"][split]
            lines.append(f"{split:<6} {s['speakers']:>8} {s['clips']:>7} {s['hours']:>7.2f}")
        lines.append("")
        lines.append(f"{'speaker':<28} {'split':<6} {'clips':>6} {'minutes':>8}")
        for spk in m["speakers"]:
            lines.append(f"{spk['speaker']:<28} {spk['split']:<6} {spk['clips']:>6} {spk['seconds'] / 60:>8.1f}")
        return "\n".join(lines)

    def summary(self) -> str:
        m = self.manifest
        failed = ", ".join(f"{k} {v}" for k, v in m["failed_by_reason"].items()) or "none"
        return (
            f"wrote {', '.join(self.archives)}: {m['written']} clips of {len(m['speakers'])} speakers "
            f"({m['hours']:.2f} h); {m['sources']} sources = {m['written']} written + {m['failed']} failed "
            f"({failed}); {m['decoder_warnings']} clips decoded with decoder warnings; "
            f"speaker table {self.speakers_tsv}, failures {self.failures_tsv}"
        ) + self._empty_splits_note()

    def _empty_splits_note(self) -> str:
        empty = [s for s in SPLITS if not self.manifest["splits"][s]["clips"]]
        if not empty:
            return ""
        kept = ",".join(s for s in SPLITS if s not in empty)
        return (
            f"\nnote: no {' or '.join(empty)} speakers (too few speakers with --min-clips clips); "
            f"prep this release with --splits {kept}, or lower --min-clips"
        )


def client_id(label: str, alias: int = 0) -> str:
    """A stable, Common Voice-shaped (128 hex) client_id for a speaker label."""
    suffix = f"#alias{alias}" if alias else ""
    return hashlib.sha512(f"speechid-corpus:{label}{suffix}".encode()).hexdigest()


@dataclass
class _Measured:
    clip: SourceClip
    seconds: float


def _measure(clips: Iterable[SourceClip | SourceFailure], limits: audio.Limits, progress: Callable[[str], None]):
    """Decode each clip once: (measured clips, failures, clips whose decoder complained)."""
    kept: list[_Measured] = []
    failures: list[SourceFailure] = []
    warned = 0
    names: set[str] = set()
    for n, item in enumerate(clips, 1):
        if n % 1000 == 0:
            progress(f"measured {n} clips")
        if isinstance(item, SourceFailure):
            failures.append(item)
            continue
        if item.name in names:  # a maker bug, not the user's input
            raise ValueError(f"two clips named {item.name!r} ({item.origin})")
        names.add(item.name)
        if item.speaker is None:
            failures.append(SourceFailure(item.origin, "unlabelled", "the source does not say who speaks"))
            continue
        try:
            data = item.read()
        except OSError as e:
            failures.append(SourceFailure(item.origin, "unreadable", e.strerror or str(e), item.speaker))
            continue
        messages: list[str] = []
        try:
            wave = audio.decode(data, audio.SAMPLE_RATE, limits, name=item.origin, decoder_messages=messages)
            audio.require_speech(wave, audio.SAMPLE_RATE, limits, item.origin)  # prep's rule: no_speech fails here
        except AudioError as e:
            failures.append(SourceFailure(item.origin, e.reason, e.detail, item.speaker))
            continue
        warned += bool(messages)
        kept.append(_Measured(item, len(wave) / audio.SAMPLE_RATE))
    return kept, failures, warned


def write_release(
    out_dir: str,
    release: str,
    clips: Iterable[SourceClip | SourceFailure],
    seed: int = 0,
    dev_speakers: int | list[str] | None = None,
    test_speakers: int | list[str] | None = None,
    min_clips: int = 10,
    aliases: int = 0,
    limits: audio.Limits = audio.Limits(),
    sources: Iterable[str] = (),
    caveat: str = "",
    progress: Callable[[str], None] = lambda text: None,
    mislabels: int = 0,
) -> ReleaseResult:
    """Measure, split and write ``clips`` as ``<out_dir>/<release>-<locale>.tar.gz`` (see the module doc).

    ``aliases`` held-out (test, then dev) speakers are recorded under two client_ids each, alternating
    clip by clip, so dedup has planted ground truth. ``mislabels`` clips of test speakers are filed under
    another test speaker's client_id (``speechid.corpora.mislabels``), with a row each in aliases.tsv.
    ``sources`` are the files or folders read: the output
    may not contain or lie inside one. Raises ``ConfigError`` when no clip survives, ``OutputError`` when
    ``out_dir`` is not for this command to write (before any work).
    """
    sources = [os.fspath(x) for x in sources]
    with outputs.staged(out_dir, "corpus", sources, flag="OUT_DIR") as staging:
        manifest = _write_release(staging, release, clips, seed, dev_speakers, test_speakers, min_clips, aliases,
                                  limits, sources, caveat, progress, mislabels)
    return ReleaseResult(os.fspath(out_dir), manifest)


def _write_release(out_dir, release, clips, seed, dev_speakers, test_speakers, min_clips, aliases, limits, sources,
                   caveat, progress, mislabels=0) -> dict:
    """The work of ``write_release`` into ``out_dir`` (a staging folder); returns the manifest."""
    kept, failures, warned = _measure(clips, limits, progress)
    if not kept:
        reasons = Counter(f.reason for f in failures)
        where = ", ".join(sources) or release
        raise ConfigError(f"{where}: no clip with a speaker decodes ({dict(reasons) or 'no sources'})")
    by_speaker, fixed = _by_speaker(kept)
    split_of = choose_splits(
        {s: len(v) for s, v in by_speaker.items()}, seed, dev_speakers, test_speakers, min_clips, fixed
    )
    aliased = _aliased(by_speaker, split_of, aliases)
    layout = _Layout.of(by_speaker, split_of, aliased)
    moved = _plant_mislabels(layout.rows, dict(layout.truth), split_of, mislabels, seed)
    archives = _write_archives(out_dir, release, kept, layout, progress)
    write_small_tsv(os.path.join(out_dir, SPEAKERS_TSV), ("speaker", "client_ids", "clips", "seconds", "split",
                                                          "source"), layout.speaker_rows)
    write_small_tsv(os.path.join(out_dir, ALIASES_TSV), *planted_mislabels.truth_rows(layout.truth, moved))
    write_small_tsv(
        os.path.join(out_dir, FAILURES_TSV),
        ("source", "speaker", "reason", "detail"),
        [(tsv_text(f.origin), tsv_text(f.speaker), f.reason, tsv_text(" ".join(f.detail.split()))) for f in failures],
    )
    sources_n = len(kept) + len(failures)
    manifest = {
        "release": release,
        "sources": sources_n,
        "written": len(kept),
        "failed": len(failures),
        "failed_by_reason": dict(sorted(Counter(f.reason for f in failures).items())),
        "reconciliation": f"{sources_n} sources = {len(kept)} written + {len(failures)} failed",
        "decoder_warnings": warned,
        "hours": round(sum(m.seconds for m in kept) / 3600, 4),
        "seed": seed,
        "min_clips": min_clips,
        "aliased_speakers": sorted(aliased),
        "mislabelled_clips": len(moved),
        "splits": _per_split(by_speaker, split_of),
        "speakers": [
            {"speaker": r[0], "clips": r[2], "seconds": r[3], "split": r[4], "source": r[5]}
            for r in layout.speaker_rows
        ],
        "archives": archives,
        "source_paths": list(sources),
        "caveat": caveat,
    }
    with open(os.path.join(out_dir, MANIFEST_JSON), "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest


def _by_speaker(kept: list[_Measured]) -> tuple[dict[str, list[_Measured]], dict[str, str]]:
    """(speaker -> measured clips, speaker -> the split its source assigns); ``ConfigError`` for a speaker
    its source puts in two splits."""
    by_speaker: dict[str, list[_Measured]] = defaultdict(list)
    for m in kept:
        by_speaker[m.clip.speaker].append(m)
    fixed = {}
    for spk, items in by_speaker.items():
        given = {m.clip.split for m in items if m.clip.split}
        if len(given) > 1:
            raise ConfigError(f"speaker {spk!r} is listed in splits {sorted(given)}: splits must be speaker-disjoint")
        if given:
            fixed[spk] = given.pop()
    return by_speaker, fixed


def _aliased(by_speaker: dict[str, list[_Measured]], split_of: dict[str, str], aliases: int) -> set[str]:
    """The first ``aliases`` held-out speakers (test, then dev, by name) with 2+ clips."""
    held_out = [s for split in ("test", "dev") for s in sorted(split_of) if split_of[s] == split]
    held_out = [s for s in held_out if len(by_speaker[s]) >= 2]
    if aliases > len(held_out):
        raise ConfigError(f"--aliases {aliases}: only {len(held_out)} held-out speakers with 2+ clips")
    return set(held_out[:aliases])


@dataclass
class _Layout:
    """The release's rows (locale -> TSV name -> rows), clip durations (locale -> (clip, ms)), ground truth
    ((client_id, speaker) pairs) and speakers.tsv rows."""

    rows: dict[str, dict[str, list]]
    durations: dict[str, list]
    truth: list[tuple[str, str]]
    speaker_rows: list[tuple]

    @classmethod
    def of(cls, by_speaker: dict[str, list[_Measured]], split_of: dict[str, str], aliased: set[str]) -> _Layout:
        """Each speaker's clips by name in its split and validated.tsv, an aliased speaker's alternating
        between its two client_ids."""
        layout = cls(defaultdict(lambda: {k: [] for k in TSV_NAMES}), defaultdict(list), [], [])
        for spk in sorted(by_speaker):
            items = sorted(by_speaker[spk], key=lambda m: m.clip.name)
            ids = [client_id(spk)] + ([client_id(spk, 1)] if spk in aliased else [])
            layout.truth.extend((cid, spk) for cid in ids)
            split = split_of[spk]
            for k, m in enumerate(items):
                row = (ids[k % len(ids)], m.clip.name, "", 2, 0, "", "", "", m.clip.locale, "")
                layout.rows[m.clip.locale][split].append(row)
                layout.rows[m.clip.locale]["validated"].append(row)
                layout.durations[m.clip.locale].append((m.clip.name, int(round(m.seconds * 1000))))
            origins = sorted({tsv_text(m.clip.source) for m in items if m.clip.source})
            layout.speaker_rows.append(
                (spk, ",".join(ids), len(items), round(sum(m.seconds for m in items), 2), split, ";".join(origins))
            )
        return layout


def _write_archives(out_dir: str, release: str, kept: list[_Measured], layout: _Layout,
                    progress: Callable[[str], None]) -> list[str]:
    """One ``<release>-<locale>.tar.gz`` per locale, clip bytes read again as they are written; returns
    the archives' names."""
    archives = []
    for locale in sorted(layout.rows):
        prefix = f"{release}/{locale}"
        items = sorted((m for m in kept if m.clip.locale == locale), key=lambda m: m.clip.name)

        def members(prefix=prefix, items=items, locale=locale):
            yield f"{prefix}/clip_durations.tsv", tsv_bytes(("clip", "duration[ms]"), layout.durations[locale])
            for m in items:
                yield f"{prefix}/clips/{m.clip.name}", m.clip.read()
            for name in TSV_NAMES:
                yield f"{prefix}/{name}.tsv", tsv_bytes(CV_HEADER, layout.rows[locale][name])

        path = os.path.join(out_dir, f"{release}-{locale}.tar.gz")
        progress(f"writing {os.path.basename(path)}")
        write_tarball(path, members())
        archives.append(os.path.basename(path))
    return archives


def _per_split(by_speaker: dict[str, list[_Measured]], split_of: dict[str, str]) -> dict[str, dict]:
    return {
        split: {
            "speakers": sum(1 for s in split_of if split_of[s] == split),
            "clips": sum(len(by_speaker[s]) for s in split_of if split_of[s] == split),
            "hours": round(sum(m.seconds for s in split_of if split_of[s] == split for m in by_speaker[s]) / 3600, 4),
        }
        for split in SPLITS
    }


def _plant_mislabels(rows: dict, truth: dict[str, str], split_of: dict[str, str], n: int, seed: int
                     ) -> list[planted_mislabels.Mislabel]:
    """File ``n`` test speakers' clips under other test speakers' client_ids, in ``rows`` (locale -> TSV name
    -> rows) in place; returns them. Both voices are test voices, so each clip stays in its split."""
    if not n:
        return []
    test = [(r[1], r[0], truth[r[0]]) for by_name in rows.values() for r in by_name["test"]]
    if len({spk for _, _, spk in test}) < 2:
        raise ConfigError(f"--plant-mislabels {n}: needs two test speakers, this split has "
                          f"{sum(1 for s in split_of.values() if s == 'test')} (see --test-speakers)")
    try:
        moved = planted_mislabels.choose(test, n, seed)
    except ValueError as e:
        raise ConfigError(f"--plant-mislabels: {e}") from None
    new_id = {m.clip: m.client_id for m in moved}
    for by_name in rows.values():
        for name in ("test", "validated"):
            by_name[name] = [(new_id[r[1]], *r[1:]) if r[1] in new_id else r for r in by_name[name]]
    return moved


def sample_clips(archive: str, tsvs: Iterable[str], sample_rate: int, per_speaker: int, seed: int = 0
                 ) -> tuple[list[np.ndarray], list[str], list[str]]:
    """(waveforms, client_ids, clip paths) of the clips a release archive's ``tsvs`` (file names such as
    ``test.tsv``) list, at most ``per_speaker`` per client_id (a seeded sample), decoded at ``sample_rate``.

    For scoring trial lists straight from a release (the real-voice demo, bench_quality): the clips are
    read whole into memory, so it suits the small releases ``speechid corpus`` writes, not Common Voice.
    """
    wanted = set(tsvs)
    rows, data = {}, {}
    with tarfile.open(archive, "r:*") as tar:
        for m in tar:
            base = m.name.rsplit("/", 1)[-1]
            if "/clips/" in m.name:
                data[base] = tar.extractfile(m).read()
            elif base in wanted:
                text = tar.extractfile(m).read().decode("utf-8").splitlines()
                rows.update((r["path"], r["client_id"])
                            for r in csv.DictReader(text, delimiter="\t", quoting=csv.QUOTE_NONE))
    by_speaker: dict[str, list[str]] = defaultdict(list)
    for path in sorted(rows):
        by_speaker[rows[path]].append(path)
    rng = np.random.default_rng(seed)
    waves, labels, names = [], [], []
    for speaker in sorted(by_speaker):
        paths = by_speaker[speaker]
        if len(paths) > per_speaker:
            paths = sorted(rng.choice(paths, per_speaker, replace=False))
        for path in paths:
            waves.append(audio.decode(data[path], sample_rate, audio.NO_LIMITS, name=path))
            labels.append(speaker)
            names.append(path)
    return waves, labels, names
