"""Verification metrics on speaker-disjoint splits: EER, minDCF, FRR at a target FAR, and the pictures.

Scores are Euclidean distances between unit embeddings: a trial is accepted ("same person") when its
distance is below the threshold, so for a threshold t

    FRR(t) = share of same-speaker trials with d >= t   (misses)
    FAR(t) = share of different-speaker trials with d < t (false alarms)

EER is where the two curves cross (linear interpolation between the two sweep points that bracket the
crossing, so hand-made lists give exact values); minDCF is NIST's normalised detection cost
min_t [C_miss P_miss(t) p + C_fa P_fa(t) (1 - p)] / min(C_miss p, C_fa (1 - p)) with C_miss = C_fa = 1.

``evaluate`` embeds a split with a model directory's serving model (the same windowing as
``speechid.Encoder``), draws seeded balanced trials, and writes metrics.json plus a boxplot of same vs
different distances (the original project's picture), a DET curve and distance histograms.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from contextlib import nullcontext

import numpy as np

from speechid import outputs
from speechid.config import THRESHOLD
from speechid.errors import ConfigError
from speechid.model.encoder import Encoder
from speechid.operating_points import is_same, pct

METRICS_JSON = "metrics.json"
P_TARGETS = (0.01, 0.05)


def error_rates(same: np.ndarray, diff: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FRR, FAR) at every distinct cut, for t at each score and past the max.

    The sorted-search form of ``rates_at``: side="left" counts the scores strictly below t, the ones
    ``is_same`` accepts."""
    same = np.asarray(same, np.float64)
    diff = np.asarray(diff, np.float64)
    if same.size == 0 or diff.size == 0:
        raise ConfigError(f"need same and different trials, got {same.size} same and {diff.size} different")
    t = np.unique(np.concatenate([same, diff]))
    t = np.append(t, np.nextafter(t[-1], np.inf))
    frr = np.searchsorted(np.sort(same), t, side="left") / same.size  # same with d >= t are rejected
    far = np.searchsorted(np.sort(diff), t, side="left") / diff.size  # diff with d < t are accepted
    frr = 1.0 - frr
    return t, frr, far


def eer(same: np.ndarray, diff: np.ndarray) -> tuple[float, float]:
    """(equal error rate, threshold at it). FRR falls and FAR rises with t; interpolate their crossing."""
    t, frr, far = error_rates(same, diff)
    gap = frr - far  # decreasing in t
    i = int(np.argmax(gap <= 0))  # first cut where FAR has caught up with FRR
    if i == 0:
        return float(frr[0]), float(t[0])
    g0, g1 = gap[i - 1], gap[i]
    w = g0 / (g0 - g1) if g0 != g1 else 0.0
    rate = frr[i - 1] + w * (frr[i] - frr[i - 1])
    return float(rate), float(t[i - 1] + w * (t[i] - t[i - 1]))


def min_dcf(same: np.ndarray, diff: np.ndarray, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    _, frr, far = error_rates(same, diff)
    dcf = c_miss * frr * p_target + c_fa * far * (1.0 - p_target)
    return float(dcf.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))


def frr_at_far(same: np.ndarray, diff: np.ndarray, target_far: float) -> tuple[float, float]:
    """(FRR, threshold) at the largest threshold whose FAR does not exceed ``target_far``."""
    t, frr, far = error_rates(same, diff)
    ok = np.flatnonzero(far <= target_far)
    i = int(ok[-1])  # far[0] == 0 always (nothing is below the smallest score), so ok is never empty
    return float(frr[i]), float(t[i])


def rates_at(same: np.ndarray, diff: np.ndarray, threshold: float) -> tuple[float, float]:
    """(FAR, FRR) at one threshold: different-speaker trials accepted, same-speaker trials rejected."""
    return (float(np.mean(is_same(np.asarray(diff, np.float64), threshold))),
            float(np.mean(~is_same(np.asarray(same, np.float64), threshold))))


def verification_metrics(same: np.ndarray, diff: np.ndarray, threshold: float, target_far: float = 0.01) -> dict:
    """Every figure of metrics.json that depends only on the two distance lists."""
    same = np.asarray(same, np.float64)
    diff = np.asarray(diff, np.float64)
    e, e_t = eer(same, diff)
    frr_t, t_far = frr_at_far(same, diff, target_far)
    ref_far, ref_frr = rates_at(same, diff, THRESHOLD)
    return {
        "distance": "euclidean",
        "eer": e,
        "eer_threshold": e_t,
        "min_dcf": {f"{p:g}": min_dcf(same, diff, p) for p in P_TARGETS},
        "threshold": float(threshold),
        "sensitivity": float(np.mean(is_same(same, threshold))),  # same-speaker trials accepted
        "specificity": float(np.mean(~is_same(diff, threshold))),  # different-speaker trials rejected
        "target_far": float(target_far),
        "frr_at_target_far": frr_t,
        "threshold_at_target_far": t_far,
        # the original project's threshold on these same trials, so every rate quoted beside the default's
        # comes from one data set
        "at_reference": {"threshold": THRESHOLD, "far": ref_far, "frr": ref_frr},
        "same_trials": int(same.size),
        "different_trials": int(diff.size),
        "trials": int(same.size + diff.size),
        "same_distance_mean": float(same.mean()),
        "different_distance_mean": float(diff.mean()),
    }


def make_trials(speakers: list[str], n_trials: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded balanced trials over clips labelled ``speakers``: (pairs [n, 2] of clip indices, same [n]).

    Half are same-speaker pairs drawn without replacement from all such pairs, half different-speaker
    pairs drawn without replacement; when fewer same pairs exist than half of ``n_trials``, all of them
    are used and as many different pairs are drawn, so the trial list stays balanced.
    """
    if n_trials < 2:
        raise ConfigError(f"trials={n_trials}: need at least 2")
    rng = np.random.default_rng(seed)
    labels = np.unique(np.asarray(speakers), return_inverse=True)[1]
    by_spk = [np.flatnonzero(labels == s) for s in range(labels.max() + 1)]
    same_pairs = np.concatenate(
        [np.stack([c[iu[0]], c[iu[1]]], axis=1) for c in by_spk for iu in [np.triu_indices(len(c), k=1)]]
    ).astype(np.int64)
    if len(same_pairs) == 0 or len(by_spk) < 2:
        raise ConfigError(
            f"trials need a speaker with two clips and two speakers; "
            f"got {len(speakers)} clips of {len(by_spk)} speakers"
        )
    n_same = min(n_trials // 2, len(same_pairs))
    same_pairs = same_pairs[rng.choice(len(same_pairs), n_same, replace=False)]
    n = len(labels)
    n_diff_total = (n * (n - 1)) // 2 - sum(len(c) * (len(c) - 1) // 2 for c in by_spk)
    n_diff = min(n_same, n_diff_total)
    diff: set[tuple[int, int]] = set()
    while len(diff) < n_diff:
        a = rng.integers(0, n, size=2 * (n_diff - len(diff)) + 8)
        b = rng.integers(0, n, size=a.size)
        for i, j in zip(a, b, strict=True):
            if labels[i] != labels[j] and len(diff) < n_diff:
                diff.add((int(min(i, j)), int(max(i, j))))
    diff_pairs = np.array(sorted(diff), dtype=np.int64).reshape(-1, 2)
    diff_pairs = diff_pairs[rng.permutation(len(diff_pairs))]
    pairs = np.concatenate([same_pairs, diff_pairs])
    same = np.concatenate([np.ones(len(same_pairs), bool), np.zeros(len(diff_pairs), bool)])
    return pairs, same


def all_pairs_eer(embeddings: np.ndarray, speakers: list[str]) -> float:
    """EER over every pair of clips (the trainer's dev figure: exhaustive, no sampling noise)."""
    emb = np.asarray(embeddings, np.float64)
    labels = np.unique(np.asarray(speakers), return_inverse=True)[1]
    d = np.sqrt(np.maximum(2.0 - 2.0 * emb @ emb.T, 0.0))
    iu = np.triu_indices(len(emb), k=1)
    same = labels[iu[0]] == labels[iu[1]]
    return eer(d[iu][same], d[iu][~same])[0]


def _threshold_marks(threshold: float, reference: float | None) -> list[tuple[float, str, str]]:
    """(value, label, colour) for each threshold drawn on the pictures: the one decided at, and the original
    project's (``speechid.config.THRESHOLD``)."""
    marks = [(float(threshold), f"threshold {threshold:.3f}", "#d62728")]  # red: the bars are blue and grey
    if reference is not None and abs(reference - threshold) > 5e-4:
        marks.append((float(reference), f"original project's {reference:g}", "black"))
    return marks


def plot_figures(same: np.ndarray, diff: np.ndarray, threshold: float, output_dir: str, title: str = "",
                 reference: float | None = None) -> list[str]:
    """Boxplot, DET curve and histograms as PNGs in ``output_dir``; returns the paths.

    Each picture marks ``threshold`` (the one decided at) and, when given, ``reference`` (``evaluate`` gives
    the seed's ``speechid.config.THRESHOLD``, for comparison); the DET curve also marks the EER point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    same = np.asarray(same, np.float64)
    diff = np.asarray(diff, np.float64)
    marks = _threshold_marks(threshold, reference)
    paths = []

    def save(fig, name):
        path = os.path.join(output_dir, name)
        fig.tight_layout()
        fig.savefig(path + ".tmp.png", dpi=110, bbox_inches="tight")  # no label cut at the edge
        os.replace(path + ".tmp.png", path)
        plt.close(fig)
        paths.append(path)

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.boxplot([same, diff])
    ax.set_xticks([1, 2], ["same speaker", "different speakers"])
    for t, label, colour in marks:
        ax.axhline(t, color=colour, linestyle="--", label=label)
    ax.set_ylabel("Euclidean distance")
    ax.set_title(title or "Distances between embeddings")
    ax.legend(loc="lower right")
    save(fig, "boxplot.png")

    _, frr, far = error_rates(same, diff)
    e, e_t = eer(same, diff)
    lo = 1e-4

    def probit(x):
        return norm.ppf(np.clip(x, lo, 1 - lo))

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(probit(far), probit(frr), color="tab:blue", label="DET")
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8])
    ax.set_xticks(norm.ppf(ticks), [f"{100 * v:g}" for v in ticks])
    ax.set_yticks(norm.ppf(ticks), [f"{100 * v:g}" for v in ticks])
    ax.plot(norm.ppf([lo, 1 - lo]), norm.ppf([lo, 1 - lo]), color="grey", linestyle=":", linewidth=0.8)
    ax.plot(probit(e), probit(e), "o", color="black", label=f"EER {pct(e, '.1f')} (at {e_t:.3f})")
    for t, label, colour in marks:
        t_far, t_frr = rates_at(same, diff, t)
        ax.plot(probit(t_far), probit(t_frr), "s", color=colour,
                label=f"{label}: FAR {pct(t_far, '.1f')}, FRR {pct(t_frr, '.1f')}")
    ax.set_xlim(norm.ppf(0.0005), norm.ppf(0.9))
    ax.set_ylim(norm.ppf(0.0005), norm.ppf(0.9))
    ax.set_xlabel("false acceptance rate (%)")
    ax.set_ylabel("false rejection rate (%)")
    ax.set_title("DET curve")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=9)
    save(fig, "det.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0.0, 2.0, 61)
    ax.hist(same, bins=bins, alpha=0.65, density=True, color="tab:blue", label="same speaker")
    ax.hist(diff, bins=bins, alpha=0.5, density=True, color="tab:grey", label="different speakers")
    for t, label, colour in marks:
        ax.axvline(t, color=colour, linestyle="--", linewidth=1.8, label=label)
    ax.set_xlabel("Euclidean distance between the two clips' embeddings")
    ax.set_ylabel("density")
    ax.legend(fontsize=9)
    ax.set_title("Distance histograms: same vs different speakers")
    save(fig, "histograms.png")
    return paths


def write_json(path: str, obj: dict) -> None:
    """Write JSON atomically (temp file, then rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def evaluate(
    model_dir: str,
    data_dir: str,
    split: str = "test",
    threshold: float | None = None,
    target_far: float = 0.01,
    trials: int = 20_000,
    seed: int = 0,
    output_dir: str | None = None,
    max_clips: int | None = None,
    truth: Mapping[str, str] | None = None,
    log=print,
    clip_truth: Mapping[str, str] | None = None,
) -> dict:
    """Embed ``split`` of ``data_dir`` with the model in ``model_dir`` and score seeded balanced trials.

    ``truth`` (client_id -> true speaker, e.g. a synthetic release's aliases.tsv): trials are labelled by
    true speaker, so two client_ids of one voice are never scored as a different-speaker trial;
    ``clip_truth`` (clip_id -> true speaker: the clip rows of aliases.tsv) does the same for a clip filed
    under another voice's client_id.

    Writes metrics.json and the PNGs to ``output_dir`` (default ``model_dir``) and metrics.json also to
    ``model_dir`` (the model directory describes its last evaluation). ``threshold`` defaults to the
    model's config.json threshold. Returns the metrics dict.
    """
    from speechid.model.data import load_clips  # TensorFlow

    start = time.time()
    encoder = Encoder.load(model_dir)
    threshold = encoder.resolve_threshold(threshold)[0]
    if not 0.0 < target_far < 1.0:
        raise ConfigError(f"target_far={target_far}: must be between 0 and 1")
    output_dir = output_dir or model_dir
    # A folder of its own is staged and published under the rules of speechid.outputs (refused up front
    # when it is a user's folder or holds the model or data); the default writes into the model directory.
    separate = os.path.abspath(output_dir) != os.path.abspath(model_dir)
    if separate:
        outputs.check_output(output_dir, "evaluate", [model_dir, data_dir])

    clips, speakers, clip_ids = load_clips(data_dir, split, max_clips=max_clips, seed=seed)
    if truth is not None:
        speakers = [truth.get(s, s) for s in speakers]
    if clip_truth:
        speakers = [clip_truth.get(c, s) for c, s in zip(clip_ids, speakers, strict=True)]
    emb = encoder.embed_waveforms(clips)
    pairs, same = make_trials(speakers, trials, seed=seed)
    dist = np.linalg.norm(emb[pairs[:, 0]] - emb[pairs[:, 1]], axis=1)
    metrics = verification_metrics(dist[same], dist[~same], threshold=threshold, target_far=target_far)
    metrics.update(
        {
            "split": split,
            "data_dir": os.path.abspath(data_dir),
            "clips": len(clips),
            "speakers": len(set(speakers)),
            "seed": seed,
            "model_id": encoder.config.get("model_id"),
            "data_fingerprint": encoder.config.get("data_fingerprint"),
            "wall_s": round(time.time() - start, 2),
        }
    )
    title = f"{split}: EER {pct(metrics['eer'], '.2f')}, {metrics['trials']} trials"
    target = outputs.staged(output_dir, "evaluate", [model_dir, data_dir]) if separate else nullcontext(model_dir)
    with target as folder:
        figures = plot_figures(dist[same], dist[~same], threshold, folder, title, reference=THRESHOLD)
        metrics["figures"] = [os.path.basename(p) for p in figures]
        write_json(os.path.join(folder, METRICS_JSON), metrics)
    if separate:
        write_json(os.path.join(model_dir, METRICS_JSON), metrics)
    log(
        f"{split}: EER {pct(metrics['eer'], '.2f')} | minDCF(0.01) {metrics['min_dcf']['0.01']:.3f} | "
        f"at {threshold:g}: sensitivity {pct(metrics['sensitivity'], '.1f')}, "
        f"specificity {pct(metrics['specificity'], '.1f')} | FRR {pct(metrics['frr_at_target_far'], '.1f')} "
        f"at FAR {100 * target_far:g}% | {metrics['trials']} trials, {metrics['speakers']} speakers"
    )
    return metrics
