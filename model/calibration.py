"""Measure a model's operating points on labelled speakers it never trained on (``speechid calibrate``).

Clip level: every pair of clips (exhaustive up to ``max_pairs``, then a seeded sample) -> same and different
distance lists -> the named points of ``speechid.operating_points`` from the ROC of
``speechid.model.evaluation.error_rates``:

* ``far_X``: the largest threshold whose FAR does not exceed X (``evaluation.frr_at_far``); ``seed`` is
  ``far_1.7%``, the seed's specificity of 98.3%;
* ``eer``: where FAR and FRR cross (``evaluation.eer``);
* ``at_0.83``: the rates at the seed's threshold.

Speaker level, for n in ``group_sizes`` (m = n): seeded trials of n clips of a speaker against n other
clips (same speaker, disjoint clips) or against n clips of another speaker, scored by their separation
(``speechid.separation``, the statistic dedup merges client_ids on; spreads pooled over the dev
speakers). A size is measured only when at least two speakers have 2n clips; its curve runs over
separations 0 to ``SPEAKER_CURVE_MAX``. Besides the clip level's named points it holds ``frr_1%`` and
``merge``, the lower of ``far_0.1%`` and ``frr_1%``: where dedup merges client_ids.

Enough to mean something (``sample_problem``): at least ``MIN_SPEAKERS`` (10) dev speakers and at least
``MIN_SAME_PAIRS`` (50) same-speaker clip pairs, so that one wrongly judged pair moves the FRR by at most 2
points (2 speakers of 4 clips give 12 pairs: one error is 8 points, and "FAR 0.00%" is a statement about a
single pair of voices). ``measure`` records a sample below that as ``measured_on["warning"]`` (config.json
keeps it, an index copies it); ``calibrate`` refuses such a sample unless forced.

``calibrate`` embeds a prepared split with a model directory and rewrites its config.json atomically.
"""

from __future__ import annotations

import os

import numpy as np

from speechid.config import THRESHOLD
from speechid.errors import ConfigError
from speechid.model import evaluation as ev
from speechid.model.encoder import Encoder
from speechid.model.model_dir import read_config, write_operating_points
from speechid.operating_points import (
    CURVE_STEP,
    MERGE_DEFAULT,
    SEED_FAR,
    SPEAKER_CURVE_MAX,
    SPEAKER_CURVE_STEP,
    LevelPoints,
    OperatingPoint,
    OperatingPoints,
    pct,
    point_words,
)
from speechid.separation import Groups, separation

TARGET_FARS = {"seed": SEED_FAR, "far_1%": 0.01, "far_0.1%": 0.001}
MERGE_FRR = 0.01  # the speaker level's frr_1% point, the cap of its merge point
GROUP_SIZES = (1, 2, 3, 5, 8, 12, 20)
MIN_SPEAKERS = 10  # dev speakers: fewer, and FAR rests on a handful of pairs of voices
MIN_SAME_PAIRS = 50  # same-speaker clip pairs: one error then moves the FRR by at most 2 points


def sample_problem(speakers) -> str | None:
    """Why operating points measured on clips of these ``speakers`` (one label per clip) would mean nothing,
    or None when there are at least MIN_SPEAKERS speakers and MIN_SAME_PAIRS same-speaker pairs."""
    counts = np.unique(np.asarray(speakers), return_counts=True)[1]
    same_pairs = int((counts * (counts - 1) // 2).sum())
    if len(counts) >= MIN_SPEAKERS and same_pairs >= MIN_SAME_PAIRS:
        return None
    return (f"{len(counts)} speakers and {same_pairs} same-speaker pairs ({int(counts.sum())} clips), fewer than "
            f"the {MIN_SPEAKERS} speakers and {MIN_SAME_PAIRS} same-speaker pairs operating points need to mean "
            "anything")


def level_points(level: str, n: int, m: int, same: np.ndarray, diff: np.ndarray,
                 reference: float | None, speakers: int = 0) -> LevelPoints:
    """The named points and the FAR/FRR curve of one level from its same/different score lists (clip:
    Euclidean distances; speaker: separations). ``reference``: a threshold to record the rates at."""
    same = np.asarray(same, np.float64)
    diff = np.asarray(diff, np.float64)
    points = {}
    for name, far in TARGET_FARS.items():
        frr, t = ev.frr_at_far(same, diff, far)
        points[name] = OperatingPoint(name, t, ev.rates_at(same, diff, t)[0], frr)
    rate, t = ev.eer(same, diff)
    points["eer"] = OperatingPoint("eer", t, rate, rate)
    if level == "speaker":
        # frr_1%: the smallest threshold that rejects at most 1% of same-voice trials. One voice's separation
        # does not grow with the group size, so past this point a higher threshold buys almost no recall and
        # only admits the closest pairs of voices, which a few dev speakers cannot rule out at 0.1%.
        k = min(same.size - 1, int(np.ceil((1.0 - MERGE_FRR) * same.size)))
        t = float(np.sort(same)[k]) + 1e-9
        points["frr_1%"] = OperatingPoint("frr_1%", t, *ev.rates_at(same, diff, t))
        low = min(points["far_0.1%"], points["frr_1%"], key=lambda p: p.threshold)
        points[MERGE_DEFAULT] = OperatingPoint(MERGE_DEFAULT, low.threshold, low.far, low.frr)
    if reference is not None:
        points[f"at_{reference:g}"] = OperatingPoint(f"at_{reference:g}", float(reference),
                                                     *ev.rates_at(same, diff, reference))
    step, top = (CURVE_STEP, 2.0) if level == "clip" else (SPEAKER_CURVE_STEP, SPEAKER_CURVE_MAX)
    grid = np.arange(int(round(top / step)) + 1) * step
    far = np.searchsorted(np.sort(diff), grid, side="left") / diff.size
    frr = 1.0 - np.searchsorted(np.sort(same), grid, side="left") / same.size
    return LevelPoints(level, n, m, int(same.size), int(diff.size), points, tuple(far.tolist()), tuple(frr.tolist()),
                       step, int(speakers))


def clip_distances(emb: np.ndarray, labels: np.ndarray, max_pairs: int = 2_000_000, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(same, different) Euclidean distances over every pair of clips, or ``max_pairs`` seeded ones."""
    n = len(emb)
    iu = np.triu_indices(n, k=1)
    if iu[0].size > max_pairs:
        pick = np.random.default_rng(seed).choice(iu[0].size, max_pairs, replace=False)
        iu = (iu[0][pick], iu[1][pick])
    d = np.sqrt(np.maximum(2.0 - 2.0 * np.einsum("ij,ij->i", emb[iu[0]], emb[iu[1]]), 0.0))
    same = labels[iu[0]] == labels[iu[1]]
    return d[same], d[~same]


def group_separations(emb: np.ndarray, labels: np.ndarray, n: int, trials: int, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(same, different) separations of seeded n-clip vs n-clip group trials, and the number of speakers
    they were drawn from (those with 2n clips); None if fewer than two have.

    Same: 2n clips of one speaker split in two halves. Different: n clips of one speaker against n of
    another. Spreads are shrunk toward the pooled spread of all the speakers given."""
    rng = np.random.default_rng(seed)
    by_spk = [np.flatnonzero(labels == s) for s in np.unique(labels)]
    able = [c for c in by_spk if len(c) >= 2 * n]
    if len(able) < 2:
        return None
    pooled = Groups.of_labels(emb, labels).pooled_spread()
    rows = np.empty((trials, 4, n), np.int64)  # per trial: same half 1, same half 2, different a, different b
    for t in range(trials):
        c = able[rng.integers(len(able))]
        pick = rng.choice(c, 2 * n, replace=False)
        i, j = rng.choice(len(able), 2, replace=False)
        rows[t] = [pick[:n], pick[n:], rng.choice(able[i], n, replace=False), rng.choice(able[j], n, replace=False)]
    groups = Groups.of_labels(emb[rows.reshape(-1)], np.repeat(np.arange(4 * trials), n), 4 * trials)
    first = np.arange(trials) * 4
    return (separation(groups, first, first + 1, pooled), separation(groups, first + 2, first + 3, pooled),
            len(able))


def measure(emb: np.ndarray, speakers, *, measured_on: dict | None = None, group_sizes=GROUP_SIZES,
            group_trials: int = 4000, seed: int = 0) -> OperatingPoints:
    """Operating points of unit embeddings ``emb`` [n, D] labelled by ``speakers`` (speakers not trained on).

    The clip level also records ``at_<seed's threshold>`` (``speechid.config.THRESHOLD``), for comparison."""
    emb = np.asarray(emb, np.float64)
    labels = np.unique(np.asarray(speakers), return_inverse=True)[1].reshape(-1)
    if len(emb) != labels.size:
        raise ConfigError(f"{len(emb)} embeddings for {labels.size} speaker labels")
    same, diff = clip_distances(emb, labels, seed=seed)
    if same.size == 0 or diff.size == 0:
        raise ConfigError(f"calibration needs two speakers and a speaker with two clips; got {len(emb)} clips "
                          f"of {labels.max() + 1 if labels.size else 0} speakers")
    clip = level_points("clip", 1, 1, same, diff, reference=THRESHOLD, speakers=int(labels.max()) + 1)
    speaker = []
    for n in group_sizes:
        got = group_separations(emb, labels, n, group_trials, seed=seed + n)
        if got is not None:
            speaker.append(level_points("speaker", n, n, got[0], got[1], reference=None, speakers=got[2]))
    info = {"clips": int(len(emb)), "speakers": int(labels.max() + 1), "seed": int(seed), **(measured_on or {})}
    problem = sample_problem(labels)
    if problem:
        info["warning"] = f"measured on {problem}"
    # the stored form (rounded to 6 decimals), so the thresholds in use are exactly those config.json holds
    return OperatingPoints.from_dict(OperatingPoints(clip, tuple(speaker), info).to_dict())


def summary(ops: OperatingPoints) -> str:
    """A few lines for a person: each level's named thresholds and rates."""
    lines = [f"operating points on {ops.measured_on.get('speakers')} {ops.measured_on.get('split', '')} speakers "
             f"({ops.measured_on.get('clips')} clips); default: the {point_words(ops.default)} = {ops.threshold:.3f}"]
    if ops.measured_on.get("warning"):
        lines.append(f"  warning: {ops.measured_on['warning']}")
    for lp in (ops.clip, *ops.speaker):
        pts = ", ".join(f"{k} {p.threshold:.3f} (FAR {pct(p.far, '.2f')}, FRR {pct(p.frr, '.1f')})"
                        for k, p in lp.points.items())
        lines.append(f"  {lp.level} {lp.n} vs {lp.m} ({lp.speakers} speakers): {pts}")
    return "\n".join(lines)


def calibrate(model_dir: str, data_dir: str, split: str = "dev", max_clips: int | None = 2000, seed: int = 0,
              force: bool = False, log=print) -> OperatingPoints:
    """Embed ``split`` of ``data_dir`` with the model, measure its operating points, rewrite config.json.

    A split too small to mean anything (``sample_problem``) is refused with a ConfigError before the model
    loads, unless ``force``: then the points are written with the warning in ``measured_on``."""
    from speechid.model.data import load_clips  # TensorFlow

    read_config(model_dir)  # a bad model directory is named before the data is read
    clips, speakers, _ = load_clips(data_dir, split, max_clips=max_clips, seed=seed)
    problem = sample_problem(speakers)
    if problem and not force:
        raise ConfigError(f"{data_dir}: the {split} split holds {problem}; calibrate on more labelled speakers, "
                          "or force it (--force) to record the points with this warning in config.json")
    encoder = Encoder.load(model_dir)
    ops = measure(encoder.embed_waveforms(clips), speakers, seed=seed,
                  measured_on={"data": os.path.abspath(data_dir), "split": split})
    write_operating_points(model_dir, ops)
    log(summary(ops))
    return ops
