"""A model's operating points: which distance means "same person", and what that threshold costs.

Measured on dev speakers the model never trained on (``speechid.model.calibration``) and stored in the
model's config.json under ``operating_points``; an index built from the model carries the same block
(``speechid.indexing.build``). This module is the one reader of that block: ``OperatingPoints.from_dict``
validates it, ``clip_threshold`` says which clip-level threshold applies (given, else the default) and what
it means, and every verdict text is made here, so each one names its threshold and its error rates (in the
words of ``pct``, the one percent formatter)::

    same: 0.612 < 0.741 (FAR 1.7% point (the original project's specificity): FAR 1.7% / FRR 38.1% on dev speakers)

Two levels:

* ``clip``: one clip against one clip (``compare``, ``Encoder.verify``, ``query``, clip clusters);
* ``speaker``: a group of n clips against a group of m clips, scored by their ``separation``
  (``speechid.separation``: the distance between the groups' mean embeddings in standard errors of that
  difference; about 1 for one voice whatever the sizes, growing like sqrt(n) between voices). It is
  calibrated for a few n (= m); a pair of groups of sizes a and b uses the largest calibrated n <= min(a, b)
  (the same-voice side does not depend on n, so a larger pair keeps its FRR and only gains on FAR).
  Client_id merges in ``speechid dedup`` are decided at this level.

Named points at each level: ``seed`` (the SpeechIdentity seed's specificity, 98.3%: FAR 1.7%), ``far_1%``,
``far_0.1%``, ``eer`` and ``at_<reference>`` (FAR/FRR at the original project's 0.83). The model's default clip
threshold is its ``seed`` point; dedup merges ids at the speaker level's ``merge`` point: ``far_0.1%`` (a corpus
of N ids compares N^2/2 pairs of them, so a merge needs a much lower FAR than one verification), but no
higher than ``frr_1%``, where 99% of same-voice trials already pass (one voice's separation does not grow
with the clips, so a higher threshold would only admit the closest pairs of voices, which a dev set of a few
speakers cannot measure at 0.1%).
Dedup flags a clip as not its client_id's voice at ``flag_point``: the n = 1 speaker level's FRR 0.1%, read
off its stored curve (every clip of a corpus is tested, so the FRR is the share of a clean corpus flagged;
``speechid.indexing.mislabels``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speechid.errors import ConfigError

SEED_SPECIFICITY = 0.983  # the seed's operating point at 0.83 (sensitivity 60.2%, specificity 98.3%)
SEED_FAR = round(1.0 - SEED_SPECIFICITY, 6)
CLIP_DEFAULT = "seed"  # the model's default "same person" threshold
MERGE_DEFAULT = "merge"  # the speaker-level point dedup merges client_ids at: min(far_0.1%, frr_1%)
# Dedup flags a clip as not its client_id's voice at the n = 1 speaker level's FRR 0.1% (read off its curve):
# every clip of a corpus is tested, so the point's FRR is the share of a clean corpus flagged
# (speechid.indexing.mislabels says why 0.1% and not the named frr_1%).
FLAG_FRR = 0.001
FLAG_POINT = "frr_0.1%"
CURVE_STEP = 0.01  # the stored clip-level FAR/FRR curve: Euclidean thresholds 0, 0.01, ..., 2.0
SPEAKER_CURVE_STEP = 0.05  # the speaker level's: separations 0, 0.05, ..., SPEAKER_CURVE_MAX
SPEAKER_CURVE_MAX = 20.0
LEVELS = ("clip", "speaker")
STATISTICS = {"clip": "euclidean", "speaker": "separation"}  # what each level's thresholds are thresholds of


def pct(x: float | None, spec: str | None = None, unit: str = "%") -> str:
    """A fraction as a percentage for people: "n/a" for None or NaN; by default two significant digits below
    1% and one decimal above (FAR 0.17% / FRR 38.1%); ``spec``, a format spec for 100 x, instead (".2g",
    "5.0f"); ``unit`` after the number."""
    if x is None or not np.isfinite(x):
        return "n/a"
    if spec is None:
        spec = ".2g" if 0 < x < 0.01 else ".1f"
    return f"{100 * x:{spec}}{unit}"


# The named points in words, for people: config.json keeps the short keys. "seed" is the key of the point at
# the original project's specificity (its 0.83 threshold kept 98.3% of different-speaker pairs apart).
POINT_WORDS = {
    "seed": "FAR 1.7% point (the original project's specificity)",
    "far_1%": "FAR 1% point",
    "far_0.1%": "FAR 0.1% point",
    "eer": "equal-error point",
    "frr_1%": "FRR 1% point",
    "merge": "merge point",
    FLAG_POINT: "FRR 0.1% point",
}


def point_words(name: str) -> str:
    """A named point as a person reads it (``at_0.83``: the original project's threshold)."""
    if name.startswith("at_"):
        return f"the original project's {name[3:]}"
    return POINT_WORDS.get(name, name)


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold (Euclidean; "same" as ``is_same`` decides) and its error rates on the dev trials."""

    name: str
    threshold: float
    far: float  # different-speaker trials accepted
    frr: float  # same-speaker trials rejected

    def meaning(self) -> str:
        return f"{point_words(self.name)}: FAR {pct(self.far)} / FRR {pct(self.frr)} on dev speakers"


@dataclass(frozen=True)
class LevelPoints:
    """The named points of one level (clip: n = m = 1; speaker: n-clip groups vs m-clip groups)."""

    level: str
    n: int
    m: int
    same_trials: int
    different_trials: int
    points: dict  # name -> OperatingPoint
    far_curve: tuple  # FAR at thresholds 0, step, 2 step, ...
    frr_curve: tuple
    step: float = CURVE_STEP
    speakers: int = 0  # dev speakers the trials were drawn from (0: not recorded)

    @property
    def speaker_pairs(self) -> int:
        """Distinct pairs of dev speakers behind the different-speaker trials: a FAR much below 1 / this
        number rests on the few closest pairs of voices, not on a population."""
        return self.speakers * (self.speakers - 1) // 2

    @property
    def statistic(self) -> str:
        return STATISTICS[self.level]

    def rates(self, threshold: float) -> tuple[float, float]:
        """(FAR, FRR) at ``threshold``, interpolated on the stored curve (exact at the grid points)."""
        grid = np.arange(len(self.far_curve)) * self.step
        return float(np.interp(threshold, grid, self.far_curve)), float(np.interp(threshold, grid, self.frr_curve))

    def point_at_frr(self, frr: float, name: str) -> OperatingPoint:
        """The lowest threshold of the stored curve that rejects at most ``frr`` of the same-voice trials,
        with its rates (on the curve's grid: at most one step above the exact point). For a point the
        calibration does not name, on any stored model."""
        curve = np.asarray(self.frr_curve)
        ok = np.flatnonzero(curve <= frr)
        i = int(ok[0]) if ok.size else curve.size - 1
        return OperatingPoint(name, i * self.step, float(self.far_curve[i]), float(curve[i]))

    def point(self, name: str) -> OperatingPoint:
        if name not in self.points:
            raise ConfigError(f"no operating point {name!r} at the {self.level} level (have {', '.join(self.points)})")
        return self.points[name]

    def describe(self, threshold: float, prefer: str | None = None) -> str:
        """What ``threshold`` means at this level: a named point's rates (``prefer`` first, when several
        points share the threshold), or the curve's."""
        named = sorted(self.points.values(), key=lambda p: (p.name != prefer, abs(p.threshold - threshold)))
        for p in named:
            if abs(p.threshold - threshold) < 5e-7:
                return p.meaning()
        far, frr = self.rates(threshold)
        return f"FAR ~{pct(far)} / FRR ~{pct(frr)} on dev speakers"

    def to_dict(self) -> dict:
        return {
            "level": self.level, "statistic": self.statistic, "n": self.n, "m": self.m,
            "same_trials": self.same_trials,
            "different_trials": self.different_trials, "speakers": self.speakers,
            "points": {k: {"threshold": round(p.threshold, 6), "far": round(p.far, 6), "frr": round(p.frr, 6)}
                       for k, p in self.points.items()},
            "curve": {"step": self.step, "far": [round(x, 5) for x in self.far_curve],
                      "frr": [round(x, 5) for x in self.frr_curve]},
        }

    @classmethod
    def from_dict(cls, d: dict, where: str) -> LevelPoints:
        try:
            points = {k: OperatingPoint(k, float(v["threshold"]), float(v["far"]), float(v["frr"]))
                      for k, v in d["points"].items()}
            curve = d["curve"]
            if not float(curve["step"]) > 0 or len(curve["far"]) != len(curve["frr"]):
                raise ValueError("curve step or lengths")
            lp = cls(str(d["level"]), int(d["n"]), int(d["m"]), int(d["same_trials"]), int(d["different_trials"]),
                     points, tuple(float(x) for x in curve["far"]), tuple(float(x) for x in curve["frr"]),
                     float(curve["step"]), int(d.get("speakers", 0)))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"{where}: malformed operating point level ({e})") from None
        if lp.level not in LEVELS or not points or any(not 0 < p.threshold for p in points.values()):
            raise ConfigError(f"{where}: malformed operating point level {d.get('level')!r}")
        if d.get("statistic", "euclidean") != lp.statistic:
            raise ConfigError(f"{where}: the {lp.level} level holds thresholds of {d.get('statistic', 'euclidean')!r}, "
                              f"not {lp.statistic!r}")
        return lp


@dataclass(frozen=True)
class OperatingPoints:
    """Every level's points, and where they were measured (``measured_on``: data, split, speakers, clips)."""

    clip: LevelPoints
    speaker: tuple  # LevelPoints by increasing n
    measured_on: dict
    default: str = CLIP_DEFAULT
    merge: str = MERGE_DEFAULT
    stale_speaker_levels: int = 0  # speaker levels of an older statistic that were left out on reading

    def no_speaker_level(self) -> str:
        """Why there are no speaker-level points, and what to do."""
        if self.stale_speaker_levels:
            return ("the model's speaker-level operating points are of an older statistic: run `speechid calibrate "
                    "--model M --data D` to measure them again")
        return ("no speaker-level operating points were measured (dev speakers had too few clips): run "
                "`speechid calibrate` on data with more clips per speaker")

    @property
    def threshold(self) -> float:
        """The default clip-level "same person" threshold."""
        return self.clip.point(self.default).threshold

    def speaker_level(self, n_clips: int) -> LevelPoints:
        """The speaker level calibrated for the largest n <= ``n_clips`` (the smallest n if none is)."""
        if not self.speaker:
            raise ConfigError(self.no_speaker_level())
        fit = [lp for lp in self.speaker if lp.n <= n_clips]
        return fit[-1] if fit else self.speaker[0]

    def flag_point(self) -> OperatingPoint:
        """Where dedup calls a clip not its client_id's voice: one clip against the rest of its id's clips is
        decided at the n = 1 speaker level (as ``query --by speaker`` decides a clip against a speaker), at
        ``FLAG_FRR`` of its calibrated curve."""
        return self.speaker_level(1).point_at_frr(FLAG_FRR, FLAG_POINT)

    def clip_to_speaker_point(self) -> OperatingPoint:
        """Where one clip is "same" as a speaker's clips: the n = 1 speaker level's default point, the rule of
        ``query --by speaker`` (and of the id a flagged clip resembles in dedup)."""
        return self.speaker_level(1).point(self.default)

    def merge_thresholds(self, counts_a: np.ndarray, counts_b: np.ndarray, threshold: float | None = None
                         ) -> np.ndarray:
        """Per pair of groups (clip counts a, b): the speaker-level separation threshold they merge under.

        With ``threshold`` given, that one number for every pair."""
        n = np.minimum(np.asarray(counts_a), np.asarray(counts_b))  # float counts of merged groups are fine
        if threshold is not None:
            return np.full(n.shape, float(threshold))
        ns = np.array([lp.n for lp in self.speaker])
        ts = np.array([lp.point(self.merge).threshold for lp in self.speaker])
        if not ns.size:
            raise ConfigError(self.no_speaker_level() + "; or give a merge threshold explicitly")
        i = np.clip(np.searchsorted(ns, n, side="right") - 1, 0, ns.size - 1)
        return ts[i]

    def verdict(self, distance: float, threshold: float | None = None, n_clips: int | None = None) -> str:
        """"same: 0.612 < 0.741 (FAR 1.7% point (...): FAR 1.7% / FRR 38% on dev speakers)"."""
        level = self.clip if n_clips is None else self.speaker_level(n_clips)
        name = self.default if n_clips is None else self.merge
        if threshold is None:
            threshold = level.point(name).threshold
        return verdict_text(distance, threshold, level.describe(threshold, prefer=name))

    def to_dict(self) -> dict:
        return {"distance": "euclidean", "default": self.default, "merge": self.merge,
                "measured_on": dict(self.measured_on), "clip": self.clip.to_dict(),
                "speaker": [lp.to_dict() for lp in self.speaker]}

    @classmethod
    def from_dict(cls, d: dict, where: str = "operating_points") -> OperatingPoints:
        """The validated block (a ConfigError naming ``where`` when anything is missing or malformed)."""
        if not isinstance(d, dict) or "clip" not in d:
            raise ConfigError(f"{where}: malformed operating_points block (no clip level)")
        levels = d.get("speaker", [])
        # Speaker levels stored before the separation statistic (thresholds of RMS cross distances) are left
        # out: the clip level still serves, and dedup asks for ``speechid calibrate``.
        current = [x for x in levels if not isinstance(x, dict) or "statistic" in x]
        speaker = tuple(sorted((LevelPoints.from_dict(x, where) for x in current), key=lambda lp: lp.n))
        ops = cls(LevelPoints.from_dict(d["clip"], where), speaker, dict(d.get("measured_on", {})),
                  str(d.get("default", CLIP_DEFAULT)), str(d.get("merge", MERGE_DEFAULT)),
                  stale_speaker_levels=len(levels) - len(current))
        ops.clip.point(ops.default)  # the default must exist
        for lp in speaker:
            lp.point(ops.merge)
        return ops


def clip_threshold(ops: OperatingPoints | None, *given: float | None, fallback: float | None = None
                   ) -> tuple[float | None, str]:
    """The clip-level "same person" threshold to use and what it means: the first of ``given`` that is set (in
    order: one call's, then one fixed for an index at build), else the operating points' default, else
    ``fallback`` (an uncalibrated model's config.json threshold, the seed's); None when there is none. The
    meaning is the clip level's words for it ("" without operating points: the caller says uncalibrated)."""
    t = next((float(x) for x in given if x is not None), None)
    if ops is None:
        return (t if t is not None else None if fallback is None else float(fallback)), ""
    t = ops.threshold if t is None else t
    return t, ops.clip.describe(t, prefer=ops.default)


def is_same(distance, threshold):
    """The one "same person" rule: the Euclidean distance is strictly below the threshold.

    Scalars give a bool; arrays (of distances, thresholds or both) give a boolean array, element-wise."""
    same = np.less(distance, threshold)
    return bool(same) if np.ndim(same) == 0 else same


def verdict_word(distance: float, threshold: float) -> str:
    """"same" or "different": the verdict column of every output."""
    return "same" if is_same(distance, threshold) else "different"


def verdict_text(distance: float, threshold: float, meaning: str | None = None) -> str:
    """The one verdict format: "same: 0.612 < 0.741 (what the threshold means)"."""
    same = is_same(distance, threshold)
    why = meaning or "threshold given, not calibrated on this model"
    return f"{verdict_word(distance, threshold)}: {distance:.3f} {'<' if same else '>='} {threshold:.3f} ({why})"
