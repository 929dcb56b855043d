"""Planted mislabels: clips of one voice filed under another voice's client_id, with the ground truth.

Common Voice has them (a clip recorded on someone else's session, a shared account); ``speechid dedup``
flags a clip far from its own client_id's voice, and ``--truth`` scores the flags against the rows
``truth_rows`` adds to aliases.tsv (``speechid.truth``: ``client_id<TAB>true_speaker<TAB>clip``).

``choose`` works on (clip, client_id, true speaker) triples of the clips that may move, so ``speechid
synth`` and ``speechid corpus`` plant the same way. Both pass only TEST speakers' clips: a mislabel in train
teaches the model the wrong voice, and one in dev becomes a "same voice" trial of calibration, where 1% of
those trials sets the ``frr_1%`` point that dedup's thresholds rest on. Each chosen clip keeps its path and
its split (both voices are test voices), so every count still reconciles; only its client_id changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from speechid.truth import CLIP_COLUMN, TRUTH_COLUMNS

KEEP_OWN = 3  # clips an id keeps of its own voice: enough for the rest of them to say what its voice is
TARGET_OWN = 2  # an id receives mislabels only if it has at least this many clips of its own voice


@dataclass(frozen=True)
class Mislabel:
    """One planted mislabel: ``clip`` (the TSV path) of ``true_speaker``, moved from its own client_id
    (``from_client_id``) to ``client_id``, another voice's."""

    clip: str
    client_id: str
    true_speaker: str
    from_client_id: str


def choose(clips: Sequence[tuple[str, str, str]], n: int, seed: int) -> list[Mislabel]:
    """``n`` mislabels among ``clips`` ((path, client_id, true speaker) triples), seeded.

    Target ids are taken in a seeded order, round robin, so no id receives more than ceil(n / ids); each
    gets a clip of another voice, taken from the id that has given fewest so far, and every id keeps at
    least ``KEEP_OWN`` of its own clips. Raises ``ValueError`` when the clips cannot hold ``n`` mislabels."""
    if n <= 0:
        return []
    rows = sorted(clips)
    voice_of = {cid: spk for _, cid, spk in rows}
    own = Counter(cid for _, cid, _ in rows)
    voices = len(set(voice_of.values()))
    movable = sum(max(0, c - KEEP_OWN) for c in own.values())
    targets = sorted(cid for cid, c in own.items() if c >= TARGET_OWN)
    if voices < 2 or n > movable or not targets:
        raise ValueError(f"{n} mislabels: {voices} voices under {len(own)} client_ids can move {movable} clips "
                         f"(each id keeps {KEEP_OWN} of its own); need two voices and more clips")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    order = [targets[i] for i in rng.permutation(len(targets))]
    given: Counter = Counter()
    moved: set[str] = set()
    out = []
    for k in range(n):
        target = order[k % len(order)]
        cands = [(given[cid], i) for i, (path, cid, spk) in enumerate(rows)
                 if spk != voice_of[target] and path not in moved and own[cid] - given[cid] > KEEP_OWN]
        if not cands:
            raise ValueError(f"{n} mislabels: no clip of another voice is left to file under {target}")
        fewest = min(c for c, _ in cands)
        pick = [i for c, i in cands if c == fewest]
        path, cid, spk = rows[pick[int(rng.integers(len(pick)))]]
        given[cid] += 1
        moved.add(path)
        out.append(Mislabel(path, target, spk, cid))
    return out


def truth_rows(id_rows: Iterable[tuple[str, str]], mislabels: Sequence[Mislabel]) -> tuple[tuple, list]:
    """(header, rows) of aliases.tsv: the client_id rows, then one row per mislabelled clip. Without
    mislabels the file keeps its two columns."""
    id_rows = list(id_rows)
    if not mislabels:
        return TRUTH_COLUMNS, id_rows
    return ((*TRUTH_COLUMNS, CLIP_COLUMN),
            [(cid, spk, "") for cid, spk in id_rows] + [(m.client_id, m.true_speaker, m.clip) for m in mislabels])
