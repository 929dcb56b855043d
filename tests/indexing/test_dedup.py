"""Dedup: no chaining, planted aliases found with pairwise precision/recall, suspicious labels, outputs."""

import itertools
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from speechid import config
from speechid.errors import ConfigError
from speechid.indexing import build_index, dedup, evaluate_dedup, pairwise_scores, synthetic
from speechid.indexing.dedup import score_groups
from speechid.indexing.graph import average_linkage, single_linkage

from .conftest import write_embeddings

DIM = 32


def _chain_points(dim=DIM):
    """A, B, C on a great circle: |AB| = |BC| = 0.6 (< 0.83), |AC| = 2 sin(theta) = 1.14 (> 0.83)."""
    theta = 2 * np.arcsin(0.3)
    pts = np.zeros((3, dim), np.float32)
    pts[:, 0], pts[:, 1] = np.cos([0, theta, 2 * theta]), np.sin([0, theta, 2 * theta])
    return pts


def test_chain_of_three_points_is_not_merged_end_to_end():
    p = _chain_points()
    d = np.linalg.norm(p[:, None] - p[None], axis=-1)
    assert d[0, 1] < config.THRESHOLD and d[1, 2] < config.THRESHOLD and d[0, 2] > config.THRESHOLD
    u, v = np.array([0, 1]), np.array([1, 2])
    assert len(set(single_linkage(3, u, v))) == 1  # what plain connected components would do
    labels = average_linkage(p, np.ones(3), u, v, config.THRESHOLD)
    assert labels[0] != labels[2]
    assert len(set(labels)) == 2  # B joins one end


def test_chain_of_three_voices_is_not_merged(tmp_path):
    """Clouds of clips around A, B, C; every A-B and B-C clip pair is under the threshold, no A-C pair is."""
    rng = np.random.default_rng(5)
    x, voice = synthetic.clips_around(_chain_points(), [8, 8, 8], 0.05, rng)
    ids = np.array(["A", "B", "C"])[voice]
    emb = write_embeddings(tmp_path / "emb", x, ids)
    build_index(emb, tmp_path / "idx", threshold=config.THRESHOLD)
    res = dedup(tmp_path / "idx", tmp_path / "out")
    assert res.summary["single_linkage_clusters"] == 1  # the chain is connected...
    clips = pq.read_table(tmp_path / "out" / "clips.parquet").to_pydict()
    cluster = dict(zip(clips["row"], clips["cluster"], strict=True))
    assert {cluster[i] for i in range(8)}.isdisjoint({cluster[i] for i in range(16, 24)})  # ...but not merged
    groups = pq.read_table(tmp_path / "out" / "speaker_groups.parquet").to_pydict()
    group = dict(zip(groups["speaker_id"], groups["group"], strict=True))
    assert group["A"] != group["C"]
    pairs = pq.read_table(tmp_path / "out" / "speaker_pairs.parquet").to_pylist()
    proposed = {(p["speaker_a"], p["speaker_b"]) for p in pairs}
    assert proposed >= {("A", "B"), ("B", "C")} or proposed >= {("B", "A"), ("C", "B")}
    assert sum(p["merged"] for p in pairs) == 1


@pytest.fixture(scope="module")
def aliased(tmp_path_factory):
    """40 voices x 12 clips; voices 0-3 are split 6/6 under a second id; one clip of voice 10 is labelled as
    voice 20's. Returns (root, truth client_id -> true speaker, row of the mislabelled clip)."""
    root = tmp_path_factory.mktemp("aliased")
    x, voice = synthetic.clustered_unit_vectors(40, 12, dim=DIM, spread=(0.4, 0.55), seed=3)
    ids = np.array([f"v{i:02d}" for i in voice], dtype=object)
    for s in range(4):
        rows = np.flatnonzero(voice == s)[6:]
        ids[rows] = f"v{s:02d}-alias"
    wrong = int(np.flatnonzero(voice == 10)[3])
    ids[wrong] = "v20"
    truth = {i: i.removesuffix("-alias") for i in set(ids)}
    emb = write_embeddings(root / "emb", x, ids)
    build_index(emb, root / "flat", kind="flat", threshold=config.THRESHOLD)
    build_index(emb, root / "ivf", kind="ivf", nlist=8, nprobe=2, threshold=config.THRESHOLD)
    return root, truth, wrong


def test_planted_aliases_are_found_with_precision_and_recall(aliased):
    root, truth, wrong = aliased
    res = dedup(root / "flat", root / "out", truth=truth)
    sp = res.scores["speakers"]
    assert (sp.precision, sp.recall, sp.true_pairs, sp.predicted_pairs) == (1.0, 1.0, 4, 4)
    # Clip pairs: the one mislabelled clip sits with its true voice (v10), which the client_id truth counts
    # as 11 wrong pairs; everything else is right.
    cl = res.scores["clips"]
    assert cl.predicted_pairs - cl.correct_pairs == 11 and cl.recall > 0.95
    assert res.summary["merged_groups"] == 4 and res.summary["speakers_in_merged_groups"] == 8
    groups = pq.read_table(root / "out" / "speaker_groups.parquet").to_pydict()
    group = dict(zip(groups["speaker_id"], groups["group"], strict=True))
    assert all(group[f"v{s:02d}"] == group[f"v{s:02d}-alias"] for s in range(4))
    pairs = pq.read_table(root / "out" / "speaker_pairs.parquet").to_pylist()
    merged = [p for p in pairs if p["merged"]]
    assert len(merged) == 4
    for p in merged:
        assert p["centroid_distance"] < config.THRESHOLD and p["cross_pairs"] > 0
        assert 0 < p["mean_cross_distance"] < config.THRESHOLD
        assert p["centroid_distance"] <= p["rms_cross_distance"] + 1e-6

    # the same numbers when the demo scores the written output
    again = evaluate_dedup(root / "out", truth)
    assert again["speakers"] == sp and again["clips"] == res.scores["clips"]

    summary = json.loads((root / "out" / "summary.json").read_text())
    assert summary["scores"]["speakers"]["recall"] == 1.0 and summary["distance"] == "euclidean"
    assert summary["clips"] == 480 and summary["speakers"] == 44
    text = (root / "out" / "summary.txt").read_text()
    assert "merged groups" in text and "v00 + v00-alias" in text.replace("v00-alias + v00", "v00 + v00-alias")
    assert len(text.splitlines()) < 40


def test_mislabelled_clip_is_flagged_suspicious(aliased):
    root, truth, wrong = aliased
    dedup(root / "flat", root / "out-sus")
    sus = pq.read_table(root / "out-sus" / "suspicious.parquet").to_pylist()
    assert [s["row"] for s in sus] == [wrong]
    assert sus[0]["speaker_id"] == "v20" and sus[0]["top_other_speaker"] == "v10"
    assert sus[0]["other_fraction"] > 0.5


def test_ivf_dedup_agrees_with_exact(aliased):
    root, truth, _ = aliased
    exact = dedup(root / "flat", root / "d-flat", level="speaker")
    approx = dedup(root / "ivf", root / "d-ivf", level="speaker", truth=truth)
    found = np.isin(exact.graph.keys(), approx.graph.keys()).mean()
    assert found >= 0.95, found
    assert approx.scores["speakers"].recall == 1.0 and approx.scores["speakers"].precision == 1.0
    assert sorted(os.listdir(root / "d-ivf")) == [".speechid.json", "speaker_groups.parquet",
                                                  "speaker_pairs.parquet", "summary.json", "summary.txt"]


def test_level_and_threshold_are_checked(aliased, tmp_path):
    root, _, _ = aliased
    with pytest.raises(ConfigError, match="level"):
        dedup(root / "flat", tmp_path / "x", level="voices")
    with pytest.raises(ConfigError, match="threshold"):
        dedup(root / "flat", tmp_path / "x", threshold=-1)
    res = dedup(root / "flat", tmp_path / "tight", threshold=0.2, level="clip")
    assert res.summary["threshold"] == 0.2 and res.summary["pairs_under_threshold"] == 0
    assert sorted(os.listdir(tmp_path / "tight")) == [".speechid.json", "clips.parquet", "summary.json",
                                                      "summary.txt", "suspicious.parquet"]


def test_pairwise_scores_match_brute_force():
    rng = np.random.default_rng(0)
    pred, true = rng.integers(0, 5, 40), rng.integers(0, 7, 40)
    pairs = list(itertools.combinations(range(40), 2))
    p_pairs = {(i, j) for i, j in pairs if pred[i] == pred[j]}
    t_pairs = {(i, j) for i, j in pairs if true[i] == true[j]}
    s = pairwise_scores(pred, true)
    assert (s.predicted_pairs, s.true_pairs, s.correct_pairs) == (len(p_pairs), len(t_pairs), len(p_pairs & t_pairs))
    assert s.precision == pytest.approx(len(p_pairs & t_pairs) / len(p_pairs))
    assert pairwise_scores(["a", "b"], ["x", "y"]).precision is None
    g = score_groups({"a": 1, "b": 1, "c": 2, "unknown": 1}, {"a": "s", "b": "s", "c": "s"})
    assert (g.precision, g.recall, g.items) == (1.0, pytest.approx(1 / 3), 3)


def test_clips_without_speaker_ids_still_cluster(tmp_path):
    x, voice = synthetic.clustered_unit_vectors(5, 6, dim=DIM, seed=1)
    emb = write_embeddings(tmp_path / "emb", x, [None] * len(x))
    build_index(emb, tmp_path / "idx", threshold=config.THRESHOLD)
    res = dedup(tmp_path / "idx", tmp_path / "out", truth={})
    assert res.summary["speakers"] == 0 and res.summary["merged_groups"] == 0
    assert res.summary["clip_clusters"] == 5 and res.summary["suspicious_clips"] == 0
    assert res.scores["speakers"].items == 0


def test_calibrated_index_merges_at_the_speaker_level_point(aliased, tmp_path):
    """An index carrying a model's operating points: clip decisions at its seed point, client_id merges at the
    speaker-level point for each pair's clip counts, and the precision/recall curve equals dedup rerun at
    each threshold (the exact reference)."""
    from speechid.indexing import SpeakerIndex
    from speechid.model.calibration import measure

    root, truth, _ = aliased
    # "dev speakers": other voices of the same generator, never in the index
    dev, dev_voice = synthetic.clustered_unit_vectors(30, 12, dim=DIM, spread=(0.4, 0.55), seed=11)
    ops = measure(dev, dev_voice, group_sizes=(2, 3, 5), seed=0)
    emb = str(root / "emb")
    build_index(emb, tmp_path / "cal", kind="flat", operating_points=ops, operating_points_model_id="model-a")
    idx = SpeakerIndex.load(tmp_path / "cal")
    assert idx.threshold == ops.threshold and idx.operating_points.to_dict() == ops.to_dict()
    res = dedup(tmp_path / "cal", tmp_path / "out", truth=truth)
    assert res.summary["threshold"] == ops.threshold and "seed operating point" in res.summary["threshold_meaning"]
    sp = res.scores["speakers"]
    assert sp.recall == 1.0 and sp.precision >= 0.8  # 4 aliases found; at most one family neighbour joins
    pairs = pq.read_table(tmp_path / "out" / "speaker_pairs.parquet").to_pydict()
    want = ops.merge_thresholds(np.array(pairs["clips_a"]), np.array(pairs["clips_b"]))
    assert np.allclose(pairs["merge_threshold"], want, atol=1e-6)
    assert set(pairs["merge_threshold"]) <= {float(np.float32(lp.points["far_0.1%"].threshold)) for lp in ops.speaker}
    text = (tmp_path / "out" / "summary.txt").read_text()
    assert "speaker-level points on dev speakers" in text and "precision%" in text
    curve = {c["threshold"]: c for c in res.summary["merge_curve"]}
    for t in (0.5, 0.8, 1.0):
        again = dedup(tmp_path / "cal", tmp_path / f"u{t}", truth=truth, merge_threshold=t, level="speaker")
        s = again.scores["speakers"]
        assert (curve[t]["precision"], curve[t]["recall"]) == (s.precision, s.recall)
    # a model of another id cannot lend its operating points
    from speechid.indexing.store import ModelMismatchError

    with pytest.raises(ModelMismatchError):
        build_index(emb, tmp_path / "other", operating_points=ops, operating_points_model_id="model-b")


def test_uncalibrated_index_without_threshold_asks_for_one(aliased, tmp_path):
    root, _, _ = aliased
    build_index(str(root / "emb"), tmp_path / "bare", kind="flat")
    with pytest.raises(ConfigError, match="give a threshold"):
        dedup(tmp_path / "bare", tmp_path / "out")
    res = dedup(tmp_path / "bare", tmp_path / "out", threshold=0.83)
    assert "uncalibrated" in res.summary["merge_rule"]
