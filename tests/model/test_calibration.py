"""Operating points: named thresholds checked against brute force, group separations against their
definition, the config.json block round-trips through its one reader (old speaker levels are left out), and
verdicts name their threshold."""

import itertools
import json

import numpy as np
import pytest

from speechid.errors import ConfigError
from speechid.indexing import synthetic
from speechid.model import calibration
from speechid.operating_points import SEED_FAR, SPEAKER_CURVE_STEP, OperatingPoints, verdict_text
from speechid.separation import PRIOR_DOF


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


def brute_separation(a, b, pooled):
    """The separation of clip arrays a and b from its definition (``speechid.separation``): |mean a - mean b| /
    sqrt(W_a / n_a + W_b / n_b), W = (sum of squared distances from the group's mean + PRIOR_DOF * pooled) /
    (clips - 1 + PRIOR_DOF)."""
    def spread(g):
        return (((g - g.mean(0)) ** 2).sum() + PRIOR_DOF * pooled) / (len(g) - 1 + PRIOR_DOF)

    return np.linalg.norm(a.mean(0) - b.mean(0)) / np.sqrt(spread(a) / len(a) + spread(b) / len(b))


def test_group_separations_are_separations_of_disjoint_groups_of_the_speakers_clips():
    """Every trial's value is the definition's separation of two disjoint n-clip groups: of one speaker
    (same) or of two speakers (different), with the spread pooled over all the speakers given. With 4 clips a
    speaker, every such pair of groups can be listed."""
    x, voice = synthetic.clustered_unit_vectors(6, 4, dim=16, seed=2)
    x = x.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # unit to float64 precision (a group's spread assumes it)
    clips = [x[voice == s] for s in range(6)]
    pooled = sum(((c - c.mean(0)) ** 2).sum() for c in clips) / (len(x) - 6)
    for n in (1, 2):
        groups = [(s, g) for s in range(6) for g in itertools.combinations(range(4), n)]
        same_all, diff_all = [], []
        for (s, g), (t, h) in itertools.combinations(groups, 2):
            if s != t:
                diff_all.append(brute_separation(clips[s][list(g)], clips[t][list(h)], pooled))
            elif not set(g) & set(h):
                same_all.append(brute_separation(clips[s][list(g)], clips[t][list(h)], pooled))
        same, diff, speakers = calibration.group_separations(x, voice, n, trials=60, seed=0)
        assert same.shape == diff.shape == (60,) and speakers == 6
        assert np.abs(same[:, None] - np.array(same_all)[None]).min(axis=1).max() < 1e-9
        assert np.abs(diff[:, None] - np.array(diff_all)[None]).min(axis=1).max() < 1e-9
    # n = 1: one clip against one, each with the pooled spread: the clip distance over sqrt(2 * pooled)
    s1, _, _ = calibration.group_separations(x, voice, 1, trials=50, seed=0)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    within = d[(voice[:, None] == voice[None]) & ~np.eye(len(x), dtype=bool)]
    assert np.abs((s1 * np.sqrt(2 * pooled))[:, None] - within[None]).min(axis=1).max() < 1e-9
    assert calibration.group_separations(x, voice, 3, trials=10) is None  # 4 clips < 2 * 3


def test_one_voice_is_about_one_apart_and_two_voices_grow_apart_with_the_group_size():
    x, voice = synthetic.clustered_unit_vectors(20, 24, dim=32, seed=2)
    medians = {}
    for n in (2, 8):
        same, diff, _ = calibration.group_separations(x.astype(np.float64), voice, n, trials=300, seed=0)
        medians[n] = np.median(same), np.median(diff)
        assert 0.6 < medians[n][0] < 1.6, medians
    assert medians[8][1] > 1.5 * medians[2][1] > 3 * medians[2][0]  # 2.9 and 5.6 here


def test_measure_round_trips_and_orders_levels():
    x, voice = synthetic.clustered_unit_vectors(12, 16, dim=24, seed=5)
    ops = calibration.measure(x, [f"s{v}" for v in voice], measured_on={"split": "dev"}, seed=0)
    assert [lp.n for lp in ops.speaker] == [1, 2, 3, 5, 8]  # GROUP_SIZES with 2n <= 16 clips a speaker
    assert ops.threshold == ops.clip.points["seed"].threshold
    block = json.loads(json.dumps(ops.to_dict()))
    assert block["clip"]["statistic"] == "euclidean" and {lp["statistic"] for lp in block["speaker"]} == {"separation"}
    again = OperatingPoints.from_dict(block)
    assert again.threshold == pytest.approx(ops.threshold) and again.stale_speaker_levels == 0
    assert [lp.n for lp in again.speaker] == [1, 2, 3, 5, 8]
    assert again.to_dict() == ops.to_dict()
    for lp in ops.speaker:  # separations: no point at the clip level's 0.83, a curve of separations
        assert lp.statistic == "separation" and lp.step == SPEAKER_CURVE_STEP and "at_0.83" not in lp.points
        assert len(lp.far_curve) == round(20.0 / SPEAKER_CURVE_STEP) + 1
    # the stored speaker-level curve is exact at its grid points (the trials measure() drew for n = 2)
    labels = np.unique([f"s{v}" for v in voice], return_inverse=True)[1]  # as measure() numbers them
    same, diff, _ = calibration.group_separations(x.astype(np.float64), labels, 2, 4000, seed=2)
    assert ops.speaker[1].rates(2.0) == pytest.approx((np.mean(diff < 2.0), np.mean(same >= 2.0)))
    # groups separate better than single clips, and bigger groups better still; the merge points rise with n
    assert ops.speaker[-1].points["eer"].far <= ops.clip.points["eer"].far
    ts = [lp.points["far_0.1%"].threshold for lp in ops.speaker]
    assert ts == sorted(ts) and ts[0] < ts[-1]
    # the merge point is far_0.1%, capped at frr_1% (where 99% of same-voice trials pass); one voice's
    # separation does not grow with n, so frr_1% stays put while far_0.1% rises past it
    for lp in ops.speaker:
        p = lp.points
        assert p["merge"].threshold == min(p["far_0.1%"].threshold, p["frr_1%"].threshold)
        assert p["frr_1%"].frr <= 0.01 and p["frr_1%"].frr > 0.005
    frr1 = [lp.points["frr_1%"].threshold for lp in ops.speaker]
    assert max(frr1) < 1.3 * min(frr1)
    assert ops.speaker[-1].points["merge"].threshold < ops.speaker[-1].points["far_0.1%"].threshold
    # a pair of groups uses the largest calibrated size not above the smaller group
    t = ops.merge_thresholds(np.array([1, 4, 6, 40, 2.0]), np.array([9, 9, 5, 12, 7.0]))
    want = [ops.speaker[i].points["merge"].threshold for i in (0, 2, 3, 4, 1)]
    assert t.tolist() == pytest.approx(want)
    assert ops.merge_thresholds(np.array([3]), np.array([3]), threshold=0.5).tolist() == [0.5]


def test_verdicts_name_threshold_and_meaning():
    x, voice = synthetic.clustered_unit_vectors(8, 6, dim=16, seed=3)
    ops = calibration.measure(x, voice, group_sizes=(2,), seed=0)
    t = ops.threshold
    text = ops.verdict(t - 0.1)
    assert text.startswith(f"same: {t - 0.1:.3f} < {t:.3f} (FAR 1.7% point (the original project's specificity): FAR ")
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
    good = calibration.measure(x, voice, group_sizes=(2,), seed=0).to_dict()
    for level, wrong in (("speaker", "euclidean"), ("clip", "separation")):  # thresholds of another statistic
        block = json.loads(json.dumps(good))
        (block["speaker"][0] if level == "speaker" else block["clip"])["statistic"] = wrong
        with pytest.raises(ConfigError, match=f"the {level} level holds thresholds of '{wrong}'"):
            OperatingPoints.from_dict(block, "m/config.json")


def test_speaker_levels_of_an_old_model_are_left_out_and_calibrate_is_asked_for():
    """A model calibrated before the separation statistic wrote speaker levels without "statistic" (thresholds
    of RMS cross distances on a Euclidean curve): they are left out and counted; the clip level serves."""
    x, voice = synthetic.clustered_unit_vectors(8, 6, dim=16, seed=3)
    block = calibration.measure(x, voice, group_sizes=(1, 2, 3), seed=0).to_dict()
    current = block["speaker"][2]
    old = []
    for lp in block["speaker"][:2]:
        lp = {k: v for k, v in lp.items() if k != "statistic"}
        lp["curve"] = block["clip"]["curve"]
        lp["points"] = {**{k: {**p, "threshold": 0.6} for k, p in lp["points"].items()},
                        "at_0.83": block["clip"]["points"]["at_0.83"]}
        old.append(lp)
    ops = OperatingPoints.from_dict({**block, "speaker": old}, "m/config.json")
    assert ops.speaker == () and ops.stale_speaker_levels == 2
    assert ops.threshold == block["clip"]["points"]["seed"]["threshold"]
    assert "speechid calibrate" in ops.no_speaker_level() and "older statistic" in ops.no_speaker_level()
    with pytest.raises(ConfigError, match="speechid calibrate"):
        ops.merge_thresholds(np.array([3]), np.array([3]))
    with pytest.raises(ConfigError, match="speechid calibrate"):
        ops.speaker_level(3)
    assert ops.merge_thresholds(np.array([3]), np.array([3]), threshold=2.5).tolist() == [2.5]  # given: fine
    mixed = OperatingPoints.from_dict({**block, "speaker": [*old, current]})
    assert [lp.n for lp in mixed.speaker] == [3] and mixed.stale_speaker_levels == 2
    # a model that never measured speaker levels is told so, not told it is old
    fresh = OperatingPoints.from_dict({**block, "speaker": []})
    assert fresh.stale_speaker_levels == 0 and "older statistic" not in fresh.no_speaker_level()


def test_calibrate_rewrites_config_and_keeps_model_id(tiny_model, tiny_data, tmp_path):
    """The exported model already holds dev operating points; `speechid calibrate` on other labelled data
    replaces them (threshold included) atomically, the model_id stays, and the Encoder's verdicts follow."""
    import shutil

    import speechid
    from speechid.model.model_dir import read_config

    model_dir = str(tmp_path / "model")
    shutil.copytree(tiny_model[0], model_dir)
    before = read_config(model_dir)
    assert OperatingPoints.from_dict(before["operating_points"]).threshold == before["threshold"]
    # 4 test speakers of 4 clips: too few to mean anything, refused unless forced (then the warning is kept)
    with pytest.raises(ConfigError, match=r"the test split holds 4 speakers and 24 same-speaker pairs"):
        calibration.calibrate(model_dir, tiny_data, split="test", seed=1, log=lambda s: None)
    assert read_config(model_dir) == before
    logged = []
    ops = calibration.calibrate(model_dir, tiny_data, split="test", seed=1, force=True, log=logged.append)
    after = read_config(model_dir)
    assert after["model_id"] == before["model_id"] and after["threshold"] == ops.threshold
    assert after["operating_points"]["measured_on"]["split"] == "test"
    assert after["operating_points"]["measured_on"]["warning"].startswith("measured on 4 speakers and 24 same")
    assert "warning: measured on 4 speakers" in logged[0]
    enc = speechid.Encoder.load(model_dir)
    assert enc.threshold == ops.threshold
    assert enc.verdict_for(ops.threshold / 2).startswith(f"same: {ops.threshold / 2:.3f} < {ops.threshold:.3f}")
    assert enc.verdict_for(2.0, threshold=0.83).startswith("different: 2.000 >= 0.830 (")
    after["threshold"] = 0.83  # a hand-edited threshold that disagrees with the block is refused
    (tmp_path / "model" / "config.json").write_text(json.dumps(after))
    with pytest.raises(ConfigError, match="not the operating points' default"):
        read_config(model_dir)


def test_operating_points_need_ten_speakers_and_fifty_same_speaker_pairs():
    """2 dev speakers of 4 clips once moved a model's threshold and reported "FAR 0.00%, FRR 0.0%": too few
    speakers or same-speaker pairs to mean anything are named, and measure records it."""
    def labels(speakers, clips):
        return [f"s{s}" for s in range(speakers) for _ in range(clips)]

    assert calibration.sample_problem(labels(10, 4)) is None  # 10 speakers, 60 pairs
    assert calibration.sample_problem(labels(2, 4)).startswith("2 speakers and 12 same-speaker pairs (8 clips), "
                                                               "fewer than the 10 speakers and 50")
    assert calibration.sample_problem(labels(9, 24)).startswith("9 speakers")
    assert calibration.sample_problem(labels(25, 2)).startswith("25 speakers and 25 same-speaker pairs")
    x, voice = synthetic.clustered_unit_vectors(2, 4, dim=16, seed=1)
    few = calibration.measure(x, voice, group_sizes=(1,))
    assert few.measured_on["warning"].startswith("measured on 2 speakers and 12 same-speaker pairs")
    assert "  warning: measured on 2 speakers" in calibration.summary(few)
    x, voice = synthetic.clustered_unit_vectors(10, 4, dim=16, seed=1)
    assert "warning" not in calibration.measure(x, voice, group_sizes=(1,)).measured_on


def test_the_demo_calibrates_without_the_override():
    """`speechid demo` measures its operating points on its dev voices (synth: a tenth of the speakers, each
    with ``heldout_clips`` clips); they must clear the bar without --force."""
    from speechid.app.demo import DemoConfig

    demo = DemoConfig()
    dev_speakers = max(1, int(round(0.1 * demo.speakers)))  # speechid.corpora.synth.make_corpus's dev split
    assert dev_speakers * demo.heldout_clips <= demo.max_dev_clips  # every dev clip is used
    assert calibration.sample_problem([s for s in range(dev_speakers) for _ in range(demo.heldout_clips)]) is None


def test_calibrate_cli_states_the_rule_and_refuses_in_one_line(tiny_data, tmp_path, capsys):
    from speechid.model.export import export_model
    from speechid.model.features import FeatureConfig
    from speechid.model.network import NetworkConfig, build_embedder
    from tests.conftest import run_cli

    code, err, out = run_cli(["calibrate", "--help"], capsys)
    assert code == 0 and "at least 10 speakers and 50 same-speaker clip pairs" in " ".join(out.split())
    fc, mean, var = FeatureConfig(n_mels=16), np.full(16, -4.0, np.float32), np.full(16, 5.0, np.float32)
    net = NetworkConfig(lstm_units=(8,), bidirectional=False, embedding_dim=5)
    model = str(tmp_path / "m")
    export_model(build_embedder(mean, var, fc, net).get_weights(), model, mel_mean=mean, mel_var=var, features=fc,
                 network=net, window_s=1.0, hop_s=0.5, data_fingerprint="test")
    before = (tmp_path / "m" / "config.json").read_text()
    code, err, out = run_cli(["calibrate", "--model", model, "--data", tiny_data, "--split", "dev"], capsys)
    assert code == 2 and len(err) == 1, err
    assert f"{tiny_data}: the dev split holds 3 speakers and 18 same-speaker pairs (12 clips)" in err[0]
    assert (tmp_path / "m" / "config.json").read_text() == before
    code, err, out = run_cli(["calibrate", "--model", model, "--data", tiny_data, "--split", "dev", "--force"], capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["operating_points"]["measured_on"]["warning"].startswith("measured on 3 speakers")
    assert "warning: measured on 3 speakers" in out
