"""Clip clusters: each voice in one cluster (aliases merged, mislabelled and unlabelled clips placed with
the voice they resemble), scored against the clips' true voices; the leftover clips' average linkage
against average linkage of those clips alone (exact reference); and why clips are not agglomerated by
separation from scratch."""

import numpy as np
import pytest

from speechid import config
from speechid.indexing import graph as g
from speechid.indexing import synthetic
from speechid.indexing.clusters import PLACEMENTS, clip_clusters, linkage_clusters
from speechid.indexing.mislabels import find_mislabels
from speechid.indexing.scores import pairwise_scores
from speechid.separation import Groups

from .test_mislabels import DIM, planted


def exact_graph(x, threshold):
    """Every pair under ``threshold`` (all pairs, no index): the reference range graph."""
    d = np.linalg.norm(x[:, None].astype(np.float64) - x[None], axis=-1)
    u, v = np.triu_indices(len(x), 1)
    keep = d[u, v] < threshold
    return g.RangeGraph(len(x), u[keep], v[keep], d[u, v][keep].astype(np.float32), threshold)


@pytest.fixture(scope="module")
def ops():
    from speechid.model.calibration import measure

    dev, dev_voice = synthetic.clustered_unit_vectors(12, 16, dim=DIM, spread=(0.4, 0.6), seed=99)
    return measure(dev, dev_voice, group_sizes=(1, 2, 4, 8), seed=0)


def _corpus(seed):
    """``planted`` (60 voices x 16, 12 mislabels) with voices 0-5 split in two ids (aliases) and every
    16th clip without an id. Returns (vectors, true voice, codes, alias-merged group per code)."""
    x, voice, codes, _ = planted(seed)
    alias = np.flatnonzero((voice < 6) & (np.arange(len(x)) % 2 == 1) & (codes == voice))
    codes[alias] = 60 + voice[alias]
    codes[::16] = -1
    groups = np.r_[np.arange(60), np.arange(6)]  # what a correct client_id merge gives
    return x, voice, codes, groups


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clusters_hold_one_voice(ops, seed):
    x, voice, codes, groups = _corpus(seed)
    pooled = Groups.of_labels(x[codes >= 0], codes[codes >= 0]).pooled_spread()
    found = find_mislabels(x, codes, 66, pooled, ops.flag_point().threshold, ops.clip_to_speaker_point().threshold)
    rg = exact_graph(x, ops.threshold)
    labels, placed = clip_clusters(x, rg, ops.threshold, codes, groups, found.flagged, found.resembles)
    ours = pairwise_scores(labels, voice)
    assert ours.precision >= 0.97 and ours.recall >= 0.95, ours
    linkage = pairwise_scores(linkage_clusters(x, rg, ops.threshold), voice)
    assert ours.precision > linkage.precision  # the label-free rule, for comparison
    assert set(np.flatnonzero(placed == PLACEMENTS.index("resembles"))) <= set(
        np.flatnonzero(found.flagged | (codes < 0)))
    assert (placed[(codes >= 0) & ~found.flagged] == PLACEMENTS.index("id")).all()
    assert labels[0] == 0 and np.all(np.diff(np.unique(labels, return_index=True)[1]) > 0)  # order of first row


def test_the_leftover_clips_are_average_linkage_of_those_clips_alone():
    x, voice = synthetic.clustered_unit_vectors(12, 6, dim=DIM, seed=5)
    rest = np.flatnonzero(voice >= 6)
    full = exact_graph(x, config.THRESHOLD)
    got = linkage_clusters(x, full, config.THRESHOLD, rest)
    sub = exact_graph(x[rest], config.THRESHOLD)
    want = g.average_linkage(x[rest], np.ones(rest.size), sub.u, sub.v, config.THRESHOLD)
    assert np.array_equal(got, want)
    # and in clip_clusters: nothing labelled, nothing resembled -> all of them by linkage
    codes = np.full(len(x), -1)
    labels, placed = clip_clusters(x, full, config.THRESHOLD, codes, np.zeros(0, np.int64), np.zeros(len(x), bool),
                                   np.full(len(x), -1))
    assert (placed == PLACEMENTS.index("linkage")).all()
    assert pairwise_scores(labels, linkage_clusters(x, full, config.THRESHOLD)).precision == 1.0
    assert pairwise_scores(labels, linkage_clusters(x, full, config.THRESHOLD)).recall == 1.0


def test_separation_agglomeration_from_single_clips_leaves_voices_in_pieces(ops):
    """Why clusters start from the ids (speechid.indexing.clusters): agglomerating clips by separation splits
    a voice's cloud along its spread, and the pieces' separation grows like that of two voices."""
    x, voice = synthetic.clustered_unit_vectors(30, 16, dim=DIM, spread=(0.4, 0.6), seed=0)
    pooled = Groups.of_labels(x, voice).pooled_spread()
    rg = exact_graph(x, ops.threshold)
    pieces = g.separation_linkage(Groups.of_labels(x, np.arange(len(x))), rg.u, rg.v, ops.merge_thresholds, pooled)
    s = pairwise_scores(pieces, voice)
    assert s.recall < 0.7 < s.precision, s
