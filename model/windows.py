"""THE inference windowing: how a clip of any length becomes one embedding.

Used by ``speechid.Encoder``, by the evaluation and the trainer's dev EER, and by the bulk embed pipeline,
so a clip gets the same embedding whichever way it is embedded. NumPy only (no TensorFlow import).

A clip is cut into windows of ``window_s`` seconds every ``hop_s`` seconds; each window is embedded by the
serving model and the window embeddings are averaged and L2-normalised (``pool_embeddings``).

Edges, precisely (W = window samples, H = hop samples, n = clip samples):
- n <= W: one window, the clip zero-padded at the end to W samples (the trainer pads short crops the
  same way).
- n > W: windows start at 0, H, 2H, ... while they fit (start + W <= n). If the last of them stops
  short of the end, one more window is taken flush with the end (``audio[n-W:]``), so every sample is
  covered and no window holds padding; that tail window overlaps its neighbour more than H does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def window_samples(sample_rate: int, window_s: float) -> int:
    return int(round(window_s * sample_rate))


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start offsets of the windows of a clip of ``num_samples`` (see the module docstring)."""
    if window < 1 or hop < 1:
        raise ValueError(f"window ({window}) and hop ({hop}) must be at least one sample")
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts


def window_waveform(audio: np.ndarray, sample_rate: int, window_s: float, hop_s: float) -> np.ndarray:
    """Mono waveform ``[n]`` -> float32 windows ``[n_windows, window_samples]`` (module docstring)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    w = window_samples(sample_rate, window_s)
    h = max(1, int(round(hop_s * sample_rate)))
    if len(audio) <= w:
        out = np.zeros((1, w), np.float32)
        out[0, : len(audio)] = audio
        return out
    starts = window_starts(len(audio), w, h)
    return np.stack([audio[s : s + w] for s in starts])


def pool_embeddings(emb: np.ndarray) -> np.ndarray:
    """Window embeddings ``[n, D]`` -> one unit vector ``[D]`` (mean, then L2-normalise)."""
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] == 0:
        raise ValueError(f"expected [n>0, D] window embeddings, got shape {emb.shape}")
    mean = emb.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    # Windows that cancel out exactly are not a real case; keep the result finite anyway.
    return (mean / norm if norm > 0 else mean).astype(np.float32)


def embed_clips(
    predict: Callable[[np.ndarray], np.ndarray],
    clips: Sequence[np.ndarray],
    sample_rate: int,
    window_s: float,
    hop_s: float,
    batch_windows: int = 64,
) -> np.ndarray:
    """Embed many clips: window each, run ``predict`` on batches of up to ``batch_windows`` windows, pool.

    ``predict`` maps float32 ``[b, window_samples]`` to ``[b, D]``. Returns float32 ``[len(clips), D]``.
    """
    out: list[np.ndarray] = []
    pending: list[np.ndarray] = []  # windows of the clips waiting for a batch
    counts: list[int] = []  # windows per pending clip

    def flush() -> None:
        allw = np.concatenate(pending)
        emb = np.concatenate(
            [np.asarray(predict(allw[s : s + batch_windows]), np.float32) for s in range(0, len(allw), batch_windows)]
        )
        for chunk in np.split(emb, np.cumsum(counts)[:-1]):
            out.append(pool_embeddings(chunk))
        pending.clear()
        counts.clear()

    # Stream: only about one batch of windows is held at a time, whatever the number of clips.
    for clip in clips:
        w = window_waveform(clip, sample_rate, window_s, hop_s)
        pending.append(w)
        counts.append(len(w))
        if sum(counts) >= batch_windows:
            flush()
    if pending:
        flush()
    if not out:
        raise ValueError("no clips to embed")
    return np.stack(out)
