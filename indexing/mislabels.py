"""Mislabelled clips: a clip far from its own client_id's voice at the speaker level, and the id it resembles.

The rule (``find_mislabels``). A clip x of a client_id with n clips is compared with the REST of that id
(leave-one-out: n - 1 clips, their mean and their own spread, shrunk toward the pooled spread as every
group's is in ``speechid.separation``), by the statistic ``query --by speaker`` decides a clip against a
speaker with::

    separation = |x - m| / sqrt(W (1 + 1/m))          (about 1 when x is the id's voice)

and flagged when that is at or over the model's flag point (``OperatingPoints.flag_point``): the n = 1
speaker level at FRR 0.1%, read off its calibrated curve. Why that point: every clip of the corpus is
tested, so the point's FRR is the share of a clean corpus flagged, the mirror of merges (N ids make N^2/2
pairs, so merges need a low FAR; N clips make N tests, so flags need a low FRR). On seeded stand-ins for the
demo's embeddings (100 voices of 24 clips, 16-d, clip EER 1-4%, 24 planted mislabels, operating points
measured on 10 other voices) the level's named ``frr_1%`` point flagged 0.25-0.5% of clean clips: 30-39
flags for 24 planted, precision 0.6-0.8; FRR 0.1% flagged 0-0.1% of them, precision 0.9-1.0 at recall
0.8-1.0. The leave-one-out separation is tighter than the calibration's one-clip-vs-one-clip trials (the
clip meets its own id's spread, not the pooled one), so a clean corpus is flagged below the point's FRR.
On ``make demo`` (seed 0, 24 planted among 2,396 clips): 28 flags, precision 0.79, recall 0.92, 0.25% of
the other clips flagged; the 21 flags that resemble another id: precision 1.0, recall 0.875. The 6 false
flags are all clips of voices the model trained on (5 train, 1 dev; their leave-one-out 99.9th percentile
is 1.90 and 1.82, held-out test voices' 1.41: a model squeezes the clips it learned and leaves a few
outliers), none resembles another id, and they rank last by evidence.

Not tested: clips of ids with fewer than ``MIN_ID_CLIPS`` clips (of two clips, either could be the
stranger), and clips without a client_id. Not found by this rule: an id whose clips are half one voice and
half another (a shared account), since the rest of such an id is itself a mix.

Resembles: for each flagged clip (and each clip without a client_id), its separation from every OTHER
client_id (that id's clips less its flagged ones); the smallest is found exactly with one FAISS
inner-product search, since sep^2 = (|x|^2 - 2 x.m + |m|^2) / c is the inner product of [x, |x|^2, 1] with
[-2 m / c, 1 / c, |m|^2 / c], c = W (1 + 1/m). The id is named as resembled when that separation is under
the "same" point of ``query --by speaker`` (``OperatingPoints.clip_to_speaker_point``).

Evidence, by which flags are ranked: the clip's separation from its own id less its separation from the
nearest other id (how much better another id's voice explains it, in standard errors); a clip far from
every voice (a noisy recording) ranks below one that another id explains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow as pa

from speechid.indexing.build import add_by_code
from speechid.operating_points import pct
from speechid.separation import PRIOR_DOF, Groups, spreads

MIN_ID_CLIPS = 3  # clips an id needs for its clips to be tested: the rest of it then has two or more


def id_sums(vectors: np.ndarray, codes: np.ndarray, n_spk: int) -> tuple[np.ndarray, np.ndarray]:
    """(sum of each id's vectors, float64 [n_spk, D]; its clip count), over the rows with a code >= 0."""
    sums = np.zeros((n_spk, vectors.shape[1]), np.float64)
    counts = np.zeros(n_spk, np.int64)
    add_by_code(sums, counts, codes, vectors)
    return sums, counts


def leave_one_out(vectors: np.ndarray, codes: np.ndarray, n_spk: int, pooled: float,
                  prior_dof: float = PRIOR_DOF, chunk: int = 1 << 16) -> np.ndarray:
    """Per clip, its separation from the rest of its client_id's clips (see the module docstring); NaN for a
    clip without an id or of an id with fewer than ``MIN_ID_CLIPS`` clips. Unit vectors, in row blocks of
    ``chunk`` (memory: the id sums and one block in float64)."""
    out = np.full(len(vectors), np.nan)
    sums, counts = id_sums(vectors, codes, n_spk)
    rows = np.flatnonzero(codes >= 0)
    rows = rows[counts[codes[rows]] >= MIN_ID_CLIPS]
    for s in range(0, rows.size, chunk):
        r = rows[s:s + chunk]
        c, x = codes[r], np.asarray(vectors[r], np.float64)
        m = counts[c] - 1.0
        rest = sums[c] - x
        ss = np.maximum(m - np.einsum("ij,ij->i", rest, rest) / m, 0.0)  # sum |y - mean|^2 over unit vectors y
        w = (ss + prior_dof * pooled) / (m - 1.0 + prior_dof)
        out[r] = np.linalg.norm(x - rest / m[:, None], axis=1) / np.sqrt(w * (1.0 + 1.0 / m))
    return out


def nearest_ids(x: np.ndarray, ids: Groups, pooled: float, exclude: np.ndarray, prior_dof: float = PRIOR_DOF
                ) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``x``, the group of ``ids`` (with clips) it is closest to by separation, other than
    ``exclude`` (a code per row, -1: none): (code, separation); (-1, NaN) where there is none. Exact: one
    flat inner-product search (module docstring), then the winner's separation again in float64."""
    x = np.asarray(x, np.float64)
    code = np.full(len(x), -1, np.int64)
    sep = np.full(len(x), np.nan)
    have = np.flatnonzero(ids.counts > 0)
    if not len(x) or not have.size:
        return code, sep
    n = ids.counts[have]
    mean = ids.sums[have] / n[:, None]
    c = spreads(ids, pooled, prior_dof)[have] * (1.0 + 1.0 / n)
    keys = np.column_stack([-2.0 * mean / c[:, None], 1.0 / c, np.einsum("ij,ij->i", mean, mean) / c])
    queries = np.column_stack([x, np.einsum("ij,ij->i", x, x), np.ones(len(x))])
    index = faiss.IndexFlatIP(keys.shape[1])
    index.add(np.ascontiguousarray(-keys, np.float32))  # the largest inner product is the smallest separation
    _, found = index.search(np.ascontiguousarray(queries, np.float32), min(2, have.size))
    found = np.where(found >= 0, have[np.maximum(found, 0)], -1)
    first_ok = found[:, 0] != np.asarray(exclude)
    pick = np.where(first_ok, found[:, 0], found[:, 1] if found.shape[1] > 1 else -1)
    ok = pick >= 0
    code[ok] = pick[ok]
    p = pick[ok]
    d2 = np.sum((x[ok] - ids.sums[p] / ids.counts[p, None]) ** 2, axis=1)
    sep[ok] = np.sqrt(d2 / (spreads(ids, pooled, prior_dof)[p] * (1.0 + 1.0 / ids.counts[p])))
    return code, sep


@dataclass(frozen=True)
class Mislabels:
    """Per clip (row order of the index): ``separation`` from the rest of its own id (NaN: not tested),
    ``flagged``; per clip searched (the flagged ones and those without an id; -1 / NaN for the others), the
    ``nearest`` other id (speaker code) by separation and that ``nearest_separation``; ``resembles``: the
    nearest id where it is under the "same" point, else -1."""

    separation: np.ndarray
    flagged: np.ndarray
    nearest: np.ndarray
    nearest_separation: np.ndarray
    resembles: np.ndarray
    threshold: float | None  # the flag threshold; None: nothing flagged (no speaker-level points, none given)
    same_threshold: float | None

    @property
    def evidence(self) -> np.ndarray:
        """Own separation less the nearest other id's (past the flag threshold where no other id exists)."""
        other = np.where(np.isnan(self.nearest_separation), self.threshold or 0.0, self.nearest_separation)
        return self.separation - other


def find_mislabels(vectors: np.ndarray, codes: np.ndarray, n_spk: int, pooled: float, threshold: float | None,
                   same_threshold: float | None) -> Mislabels:
    """Flag clips at ``threshold`` (a separation) and name the id each resembles under ``same_threshold``
    (see the module docstring). Clips without an id (code -1) are searched too: ``speechid.indexing.clusters``
    places them with the id they resemble."""
    sep = leave_one_out(vectors, codes, n_spk, pooled)
    flagged = np.zeros(len(sep), bool) if threshold is None else ~np.isnan(sep) & (sep >= threshold)
    ids = Groups.of_sums(*id_sums(vectors, np.where(flagged, -1, codes), n_spk)) if n_spk else None
    nearest = np.full(len(sep), -1, np.int64)
    nearest_sep = np.full(len(sep), np.nan)
    rows = np.flatnonzero(flagged | (codes < 0))
    if ids is not None and rows.size:
        nearest[rows], nearest_sep[rows] = nearest_ids(np.asarray(vectors)[rows], ids, pooled, codes[rows])
    resembles = np.full(len(sep), -1, np.int64)
    if same_threshold is not None:
        under = (nearest >= 0) & (nearest_sep < same_threshold)
        resembles[under] = nearest[under]
    return Mislabels(sep, flagged, nearest, nearest_sep, resembles, threshold, same_threshold)


def flags_table(found: Mislabels, clips: pa.Table, speakers: pa.Array, codes: np.ndarray,
                cluster: np.ndarray) -> pa.Table:
    """The flagged clips, strongest evidence first: suspicious.parquet."""
    rows = np.flatnonzero(found.flagged)
    rows = rows[np.argsort(-found.evidence[rows], kind="stable")]

    def ids(c):
        return speakers.take(pa.array(np.where(c >= 0, c, 0))).to_pylist() if len(speakers) else [None] * len(c)

    near, res = found.nearest[rows], found.resembles[rows]
    return pa.table({
        "row": pa.array(rows, pa.int64()), "clip_id": clips.column("clip_id").take(pa.array(rows)),
        "speaker_id": clips.column("speaker_id").take(pa.array(rows)),
        "separation": found.separation[rows].astype(np.float32),
        "threshold": np.full(rows.size, found.threshold or np.nan, np.float32),
        "nearest_other_speaker": pa.array([s if c >= 0 else None for s, c in zip(ids(near), near, strict=True)],
                                          pa.string()),
        "nearest_other_separation": found.nearest_separation[rows].astype(np.float32),
        "resembles": pa.array([s if c >= 0 else None for s, c in zip(ids(res), res, strict=True)], pa.string()),
        "evidence": found.evidence[rows].astype(np.float32),
        "cluster": np.asarray(cluster, np.int64)[rows],
    })


# -- scoring against a ground truth --------------------------------------------------------------------


@dataclass(frozen=True)
class FlagScores:
    """Flags against the planted mislabels (aliases.tsv's clip rows): precision, recall, and how many clean
    clips were flagged; ``resembles_right``: found mislabels whose resembled id is an id of their true voice."""

    precision: float | None  # None when nothing was flagged
    recall: float | None  # None when no planted mislabel is in the index
    flagged: int
    planted: int
    found: int
    clean_clips: int
    clean_flagged: int
    resembles_right: int

    @property
    def clean_rate(self) -> float | None:
        return self.clean_flagged / self.clean_clips if self.clean_clips else None

    def __str__(self) -> str:
        def f(x):
            return "n/a" if x is None else f"{x:.3f}"

        rate = pct(self.clean_rate, ".2f")
        return (f"precision {f(self.precision)} recall {f(self.recall)} ({self.found} of {self.flagged} flags are "
                f"planted mislabels, of {self.planted} planted; {self.clean_flagged} of {self.clean_clips} clean "
                f"clips flagged, {rate}; {self.resembles_right} of {self.found} found name an id of their true "
                "voice)")


def score_flags(clip_ids: Sequence[str], speaker_ids: Sequence[str | None], flagged: np.ndarray,
                resembles: Sequence[str | None], clip_truth: Mapping[str, str], truth: Mapping[str, str]
                ) -> FlagScores:
    """Flags (per clip of the index, with the id each resembles) against ``clip_truth`` (clip -> true voice,
    the mislabelled clips) and ``truth`` (client_id -> true voice). Clean clips: the clips with a client_id
    that are not planted."""
    planted = np.array([c in clip_truth for c in clip_ids], bool)
    labelled = np.array([s is not None for s in speaker_ids], bool)
    flagged = np.asarray(flagged, bool)
    hit = flagged & planted
    right = sum(1 for i in np.flatnonzero(hit)
                if resembles[i] is not None and truth.get(resembles[i]) == clip_truth[clip_ids[i]])
    clean = labelled & ~planted
    return FlagScores(
        precision=float(hit.sum() / flagged.sum()) if flagged.any() else None,
        recall=float(hit.sum() / planted.sum()) if planted.any() else None,
        flagged=int(flagged.sum()), planted=int(planted.sum()), found=int(hit.sum()),
        clean_clips=int(clean.sum()), clean_flagged=int((flagged & clean).sum()), resembles_right=int(right),
    )
