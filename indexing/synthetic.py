"""Seeded clustered unit vectors that look like speaker embeddings, for tests and benchmarks.

Each speaker has a centre on the unit sphere; centres come in a few families (think accents or recording
set-ups), so the nearest other voice is closer than a random direction. A clip is its speaker's centre
plus isotropic noise, re-normalised; each speaker gets its own noise level, so some voices are tight and
some straddle the threshold, as real ones do. Like ``faiss.contrib.datasets.SyntheticDataset``, the same
arguments give the same vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def speaker_centres(n_speakers: int, dim: int, families: int = 8, family_weight: float = 0.7,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """Unit centres: normalize(family_weight * family direction + own direction). With the default weight two
    voices of one family are ~1.16 apart (Euclidean), of different families ~1.41."""
    rng = rng or np.random.default_rng(0)
    fam = normalize(rng.standard_normal((max(1, families), dim), dtype=np.float32))
    own = normalize(rng.standard_normal((n_speakers, dim), dtype=np.float32))
    which = rng.integers(0, len(fam), size=n_speakers)
    return normalize(family_weight * fam[which] + own)


def clips_around(centres: np.ndarray, sizes: Sequence[int] | np.ndarray, spread: np.ndarray | float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``sizes[s]`` clips around each centre with noise ``spread[s]``: (vectors [n, dim], speaker of each row).

    Two clips of one speaker are about sqrt(2) * spread / sqrt(1 + spread^2) apart (0.55 at spread 0.45,
    0.79 at 0.65)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    spread = np.broadcast_to(np.asarray(spread, dtype=np.float32), (len(sizes),))
    dim = centres.shape[1]
    x = rng.standard_normal((labels.size, dim), dtype=np.float32)
    x *= (spread[labels] / np.sqrt(dim))[:, None]
    x += centres[labels]
    return normalize(x), labels


def clustered_unit_vectors(n_speakers: int, clips_per_speaker: int | Sequence[int], dim: int = 128,
                           spread: tuple[float, float] = (0.4, 0.6), families: int = 8, seed: int = 0
                           ) -> tuple[np.ndarray, np.ndarray]:
    """(unit vectors float32 [n, dim], true speaker of each row) for ``n_speakers`` voices.

    ``clips_per_speaker``: one number for all, or one per speaker. ``spread``: the range each speaker's
    noise level is drawn from.
    """
    rng = np.random.default_rng(seed)
    centres = speaker_centres(n_speakers, dim, families, rng=rng)
    sizes = np.broadcast_to(np.asarray(clips_per_speaker, dtype=np.int64), (n_speakers,))
    spreads = rng.uniform(spread[0], spread[1], size=n_speakers).astype(np.float32)
    return clips_around(centres, sizes, spreads, rng)


def heavy_tailed_sizes(n_rows: int, mean: float = 20.0, max_size: int = 400, seed: int = 0) -> np.ndarray:
    """Clips per speaker summing to ``n_rows``: geometric-like (many small voices, a few large ones)."""
    rng = np.random.default_rng(seed)
    sizes = []
    total = 0
    while total < n_rows:
        s = np.minimum(rng.geometric(1.0 / mean, size=max(16, int((n_rows - total) / mean) + 16)), max_size)
        sizes.append(s)
        total += int(s.sum())
    sizes = np.concatenate(sizes)
    cut = np.searchsorted(np.cumsum(sizes), n_rows)
    sizes = sizes[: cut + 1].copy()
    sizes[-1] -= int(sizes.sum()) - n_rows
    return sizes[sizes > 0]
