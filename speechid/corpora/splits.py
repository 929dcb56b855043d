"""Speaker-disjoint splits of a corpus: train, dev and test never share a speaker, as in Common Voice.

``--dev-speakers``/``--test-speakers`` name the speakers or give a count drawn with a seed among the
speakers with enough clips; the rest train.
"""

from __future__ import annotations

import numpy as np

from speechid.errors import ConfigError


def parse_speaker_choice(value: str | int | None) -> int | list[str] | None:
    """``--dev-speakers``/``--test-speakers``: a count ("4") or a comma-separated list of labels."""
    if value is None or isinstance(value, int):
        return value
    value = value.strip()
    if value.isdigit():
        return int(value)
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise ConfigError(f"{value!r}: give a number of speakers or a comma-separated list of speaker labels")
    return names


def choose_splits(
    clip_counts: dict[str, int],
    seed: int,
    dev_speakers: int | list[str] | None,
    test_speakers: int | list[str] | None,
    min_clips: int,
    fixed: dict[str, str] | None = None,
) -> dict[str, str]:
    """speaker -> split. Named speakers go where they are named; counts are drawn with ``seed`` among the
    speakers with at least ``min_clips`` clips; speakers with fewer clips, and the rest, train."""
    fixed = dict(fixed or {})
    split_of = {spk: fixed.get(spk, "") for spk in clip_counts}
    for split, choice in (("test", test_speakers), ("dev", dev_speakers)):
        if isinstance(choice, list):
            for spk in choice:
                if spk not in split_of:
                    known = ", ".join(sorted(split_of)[:8])
                    raise ConfigError(f"--{split}-speakers: no speaker {spk!r} in this corpus (e.g. {known})")
                if split_of[spk] and split_of[spk] != split:
                    raise ConfigError(f"--{split}-speakers: {spk!r} is already in {split_of[spk]}")
                split_of[spk] = split
    eligible = sorted(s for s, n in clip_counts.items() if not split_of[s] and n >= min_clips)
    order = [eligible[i] for i in np.random.default_rng(np.random.SeedSequence([seed, 7])).permutation(len(eligible))]
    n_eligible = len(eligible)
    for split, choice, fraction in (("test", test_speakers, 0.2), ("dev", dev_speakers, 0.15)):
        if isinstance(choice, list):
            continue
        if choice is None:  # a default: a share of the eligible speakers, none when too few to split
            n = max(1, int(round(fraction * n_eligible))) if n_eligible >= 3 else 0
        else:
            n = int(choice)
        if n > len(order):
            raise ConfigError(
                f"--{split}-speakers {n}: only {len(order)} speakers left with at least {min_clips} clips"
            )
        for spk in order[:n]:
            split_of[spk] = split
        order = order[n:]
    return {spk: split or "train" for spk, split in split_of.items()}
