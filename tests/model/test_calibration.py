"""Operating points: named thresholds checked against brute force, group statistics against all cross pairs,
the config.json block round-trips through its one reader, and verdicts name their threshold."""

import json

import numpy as np
import pytest

from speechid.errors import ConfigError
from speechid.indexing import synthetic
from speechid.model import calibration
from speechid.operating_points import SEED_FAR, OperatingPoints, verdict_text


def brute_far_point(same, diff, far):
    """Largest candidate threshold (every score and past the max) with FAR <= far; its FAR and FRR."""
    cands = np.append(np.unique(np.r_[same, diff]), np.nextafter(max(same.max(), diff.max()), np.inf))
    ok = [t for t in cands if np.mean(diff < t) <= far]
    t = max(ok)
    return t, np.mean(diff < t), np.mean(same >= t)


def test_named_points_match_brute_force():
    rng = np.random.default_rng(1)
    same = rng.normal(0.6, 0.12, 700)
    diff = rng.normal(1.05, 0.12, 3000)
    lp = calibration.level_points("clip", 1, 1, same, diff, reference=0.83)
    for name, far in (("seed", SEED_FAR), ("far_1%", 0.01), ("far_0.1%", 0.001)):
        t, far_t, frr_t = brute_far_point(same, diff, far)
        p = lp.points[name]
        assert p.threshold == pytest.approx(t) and p.far == pytest.approx(far_t) and p.frr == pytest.approx(frr_t)
        assert p.far <= far
    assert lp.points["far_0.1%"].threshold <= lp.points["far_1%"].threshold <= lp.points["seed"].threshold
    ref = lp.points["at_0.83"]
    assert ref.far == pytest.approx(np.mean(diff < 0.83)) and ref.frr == pytest.approx(np.mean(same >= 0.83))
    eer = lp.points["eer"]
    assert abs(np.mean(diff < eer.threshold) - np.mean(same >= eer.threshold)) < 0.01
    # the stored curve is exact at its grid points and interpolates between them
    assert lp.rates(0.8) == pytest.approx((np.mean(diff < 0.8), np.mean(same >= 0.8)))


def test_group_statistic_is_the_rms_over_all_cross_pairs():
    x, voice = synthetic.clustered_unit_vectors(6, 8, dim=16, seed=2)
    same, diff = calibration.group_distances(x.astype(np.float64), voice, 3, trials=50, seed=0)
    assert same.shape == diff.shape == (50,)
    # the formula behind it, against the mean over all 3 x 3 cross pairs
    a, b = x[:3].astype(np.float64), x[8:11].astype(np.float64)
    brute = np.mean([np.sum((p - q) ** 2) for p in a for q in b])
    assert np.sqrt(2 - 2 * a.mean(0) @ b.mean(0)) == pytest.approx(np.sqrt(brute))
    # groups of 1 are single clips: the clip level's distances
    s1, d1 = calibration.group_distances(x.astype(np.float64), voice, 1, trials=400, seed=0)
    d = np.linalg.norm(x[:, None].astype(np.float64) - x[None], axis=-1)
    within = d[(voice[:, None] == voice[None]) & ~np.eye(len(x), dtype=bool)]
    assert np.abs(s1[:, None] - within[None]).min(axis=1).max() < 1e-5
    assert calibration.group_distances(x.astype(np.float64), voice, 5, trials=10) is None  # 8 clips < 2 * 5


def test_measure_round_trips_and_orders_levels():
    x, voice = synthetic.clustered_unit_vectors(12, 16, dim=24, seed=5)
    ops = calibration.measure(x, [f"s{v}" for v in voice], measured_on={"split": "dev"}, seed=0)
    assert [lp.n for lp in ops.speaker] == [2, 3, 5, 8]
    assert ops.threshold == ops.clip.points["seed"].threshold
    again = OperatingPoints.from_dict(json.loads(json.dumps(ops.to_dict())))
    assert again.threshold == pytest.approx(ops.threshold)
    assert [lp.n for lp in again.speaker] == [2, 3, 5, 8]
    # group means shrink the same-speaker noise: the 8-clip groups separate better than single clips
    assert ops.speaker[-1].points["eer"].far <= ops.clip.points["eer"].far
    # a pair of groups uses the largest calibrated size not above the smaller group
    t = ops.merge_thresholds(np.array([1, 4, 6, 40]), np.array([9, 9, 5, 12]))
    want = [ops.speaker[i].points["far_0.1%"].threshold for i in (0, 1, 2, 3)]
    assert t.tolist() == pytest.approx(want)
    assert ops.merge_thresholds(np.array([3]), np.array([3]), threshold=0.5).tolist() == [0.5]


def test_verdicts_name_threshold_and_meaning():
    x, voice = synthetic.clustered_unit_vectors(8, 6, dim=16, seed=3)
    ops = calibration.measure(x, voice, group_sizes=(2,), seed=0)
    t = ops.threshold
    text = ops.verdict(t - 0.1)
    assert text.startswith(f"same: {t - 0.1:.3f} < {t:.3f} (seed operating point: FAR ")
    assert "on dev speakers" in text
    assert ops.verdict(t + 0.1).startswith("different:")
    assert "FAR ~" in ops.verdict(0.5, threshold=1.234)  # a threshold between named points: the curve's rates
    assert verdict_text(0.9, 0.83) == "different: 0.900 >= 0.830 (threshold given, not calibrated on this model)"


def test_malformed_block_is_refused():
    x, voice = synthetic.clustered_unit_vectors(8, 6, dim=16, seed=3)
    block = calibration.measure(x, voice, group_sizes=(2,), seed=0).to_dict()
    del block["clip"]["points"]["seed"]
    with pytest.raises(ConfigError, match="no operating point 'seed'"):
        OperatingPoints.from_dict(block, "m/config.json")
    with pytest.raises(ConfigError, match="m/config.json"):
        OperatingPoints.from_dict({"clip": {"level": "clip"}}, "m/config.json")
    with pytest.raises(ConfigError, match="two speakers"):
        calibration.measure(x[:3], ["a", "b", "c"])


def test_calibrate_rewrites_config_and_keeps_model_id(tiny_model, tiny_data, tmp_path):
    """The exported model already holds dev operating points; `speechid calibrate` on other labelled data
    replaces them (threshold included) atomically, the model_id stays, and the Encoder's verdicts follow."""
    import shutil

    import speechid
    from speechid.model.export import read_config

    model_dir = str(tmp_path / "model")
    shutil.copytree(tiny_model[0], model_dir)
    before = read_config(model_dir)
    assert OperatingPoints.from_dict(before["operating_points"]).threshold == before["threshold"]
    ops = calibration.calibrate(model_dir, tiny_data, split="test", seed=1, log=lambda s: None)
    after = read_config(model_dir)
    assert after["model_id"] == before["model_id"] and after["threshold"] == ops.threshold
    assert after["operating_points"]["measured_on"]["split"] == "test"
    enc = speechid.Encoder.load(model_dir)
    assert enc.threshold == ops.threshold
    assert enc.verdict_for(ops.threshold / 2).startswith(f"same: {ops.threshold / 2:.3f} < {ops.threshold:.3f}")
    assert enc.verdict_for(2.0, threshold=0.83).startswith("different: 2.000 >= 0.830 (")
    after["threshold"] = 0.83  # a hand-edited threshold that disagrees with the block is refused
    (tmp_path / "model" / "config.json").write_text(json.dumps(after))
    with pytest.raises(ConfigError, match="not the operating points' default"):
        read_config(model_dir)
