"""Pairwise precision/recall of dedup's groupings against a ground truth (``speechid.truth``).

A pair of items is "together" in the prediction (same clip cluster, same merged group) and/or in the truth
(same true voice); precision and recall are over pairs, counted from the contingency table so that no pair
is ever listed. A clip's true voice is its own row of the truth file when it has one (a clip filed under
another voice's client_id), else that of its client_id.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairScores:
    """Pairwise precision/recall: a pair of items is "together" in the prediction and/or in the truth."""

    precision: float | None  # None when nothing was put together
    recall: float | None  # None when the truth puts nothing together
    predicted_pairs: int
    true_pairs: int
    correct_pairs: int
    items: int

    def __str__(self) -> str:
        def f(x):
            return "n/a" if x is None else f"{x:.3f}"

        return (f"precision {f(self.precision)} recall {f(self.recall)} "
                f"({self.correct_pairs} of {self.predicted_pairs} predicted pairs, {self.true_pairs} true pairs, "
                f"{self.items} items)")


def _pairs(counts: np.ndarray) -> int:
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def pairwise_scores(predicted: Sequence[Hashable] | np.ndarray, truth: Sequence[Hashable] | np.ndarray) -> PairScores:
    """Pairwise precision/recall of a clustering (``predicted[i]``) against true labels (``truth[i]``),
    counted from the contingency table, so it never lists the pairs."""
    p = np.unique(np.asarray(predicted), return_inverse=True)[1].reshape(-1).astype(np.int64)
    t = np.unique(np.asarray(truth), return_inverse=True)[1].reshape(-1).astype(np.int64)
    if p.size != t.size:
        raise ValueError(f"{p.size} predicted labels for {t.size} true ones")
    if p.size == 0:
        return PairScores(None, None, 0, 0, 0, 0)
    pred_pairs = _pairs(np.bincount(p))
    true_pairs = _pairs(np.bincount(t))
    correct = _pairs(np.unique(p * (t.max() + 1) + t, return_counts=True)[1])
    return PairScores(
        precision=correct / pred_pairs if pred_pairs else None,
        recall=correct / true_pairs if true_pairs else None,
        predicted_pairs=pred_pairs, true_pairs=true_pairs, correct_pairs=correct, items=int(p.size),
    )


def score_groups(groups: Mapping[str, Hashable], truth: Mapping[str, str]) -> PairScores:
    """Client_id merges (client_id -> group) against the truth (client_id -> true speaker), over the ids both
    know: a pair of ids is predicted if they share a group and true if they share a speaker."""
    ids = sorted(set(groups) & set(truth))
    return pairwise_scores([str(groups[i]) for i in ids], [str(truth[i]) for i in ids])


def true_voices(clip_ids: Sequence[str], speaker_ids: Sequence[str | None], truth: Mapping[str, str],
                clip_truth: Mapping[str, str] | None = None) -> list[str | None]:
    """Each clip's true voice: its clip row (``clip_truth``: clip -> voice), else its client_id's; None when
    the truth knows neither."""
    clip_truth = clip_truth or {}
    return [clip_truth[c] if c in clip_truth else truth.get(s) if s is not None else None
            for c, s in zip(clip_ids, speaker_ids, strict=True)]


def score_clusters(clusters: Sequence[Hashable], voices: Sequence[str | None]) -> PairScores:
    """Clip clusters against the clips' true voices (``true_voices``), over the clips whose voice is known."""
    known = [(c, v) for c, v in zip(clusters, voices, strict=True) if v is not None]
    return pairwise_scores([k[0] for k in known], [k[1] for k in known])
