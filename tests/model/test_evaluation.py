"""Verification metrics on hand-made distance lists whose values are known by hand."""

import numpy as np
import pytest

from speechid.errors import ConfigError
from speechid.model.evaluation import (
    all_pairs_eer,
    eer,
    frr_at_far,
    make_trials,
    min_dcf,
    verification_metrics,
)

# Accept d < t. For t in (0.3, 0.8]: same rejected = {0.8} -> FRR 1/4; diff accepted = {0.25} -> FAR 1/4.
SAME = [0.1, 0.2, 0.3, 0.8]
DIFF = [0.25, 0.9, 1.0, 1.1]


def test_eer_on_a_hand_made_list():
    rate, t = eer(SAME, DIFF)
    assert rate == pytest.approx(0.25)
    assert 0.3 < t <= 0.8


def test_perfect_and_inverted_separation():
    assert eer([0.1, 0.2], [0.5, 0.6])[0] == pytest.approx(0.0)
    assert eer([0.5, 0.6], [0.1, 0.2])[0] == pytest.approx(1.0)


def test_eer_where_the_curves_cross_between_sweep_points():
    # Cuts t = 0.3 (accepts 0.1, 0.2): FRR 2/3, FAR 1/2; t = 0.5 (also accepts 0.3): FRR 1/3, FAR 1/2.
    # FRR - FAR goes from +1/6 to -1/6: the curves cross halfway, where FRR = FAR = 1/2.
    rate, t = eer([0.1, 0.3, 0.9], [0.2, 0.5])
    assert rate == pytest.approx(0.5)
    assert t == pytest.approx(0.4)


def test_min_dcf_and_frr_at_far():
    # Normalised DCF at p=0.5 is FRR + FAR at the best cut: here 1/4 + 0 (t just above 0.3 -> FAR 1/4;
    # t = 0.25 -> FRR 2/4, FAR 0; t = 0.9 -> FRR 0, FAR 1/4). Best is 0.25.
    assert min_dcf(SAME, DIFF, 0.5) == pytest.approx(0.25)
    # p = 0.01: misses cost little, so reject everything but what never produces a false alarm.
    # t = 0.25: FRR 0.5, FAR 0 -> (0.01 * 0.5) / 0.01 = 0.5
    assert min_dcf(SAME, DIFF, 0.01) == pytest.approx(0.5)
    frr, t = frr_at_far(SAME, DIFF, 0.0)
    assert frr == pytest.approx(0.5) and t == pytest.approx(0.25)
    frr, t = frr_at_far(SAME, DIFF, 0.25)
    assert frr == pytest.approx(0.0) and t == pytest.approx(0.9)


def test_verification_metrics_at_threshold():
    m = verification_metrics(np.array(SAME), np.array(DIFF), threshold=0.85, target_far=0.01)
    assert m["sensitivity"] == pytest.approx(1.0)  # every same distance < 0.85
    assert m["specificity"] == pytest.approx(0.75)  # 0.25 is accepted
    assert m["eer"] == pytest.approx(0.25)
    assert set(m["min_dcf"]) == {"0.01", "0.05"}
    assert m["trials"] == 8 and m["distance"] == "euclidean"


def test_trials_are_balanced_seeded_and_labelled_right():
    speakers = [f"s{i % 5}" for i in range(40)]
    pairs, same = make_trials(speakers, 200, seed=1)
    assert same.sum() == (~same).sum() == 100
    for (i, j), s in zip(pairs, same, strict=True):
        assert i != j and (speakers[i] == speakers[j]) == s
    assert len({tuple(p) for p in pairs}) == len(pairs)  # no repeated trial
    pairs2, _ = make_trials(speakers, 200, seed=1)
    np.testing.assert_array_equal(pairs, pairs2)
    # Few clips: every same pair (2 speakers x 1 pair) and as many different pairs.
    pairs, same = make_trials(["a", "a", "b", "b"], 1000, seed=0)
    assert same.sum() == 2 and (~same).sum() == 2
    with pytest.raises(ConfigError):
        make_trials(["a", "b", "c"], 10)


def test_all_pairs_eer_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(4)
    emb = np.repeat(centres, 5, axis=0) + 0.01 * rng.standard_normal((20, 4))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    assert all_pairs_eer(emb, [str(i // 5) for i in range(20)]) == pytest.approx(0.0)


def test_pictures_mark_the_threshold_and_the_seeds(tmp_path):
    from speechid.model.evaluation import _threshold_marks, plot_figures

    assert [label for _, label, _ in _threshold_marks(0.741, 0.83)] == ["threshold 0.741", "original project's 0.83"]
    assert len(_threshold_marks(0.83, 0.83)) == 1  # one line when they coincide
    assert len(_threshold_marks(0.741, None)) == 1
    rng = np.random.default_rng(0)
    paths = plot_figures(rng.normal(0.6, 0.1, 200), rng.normal(1.1, 0.1, 200), 0.741, str(tmp_path))
    assert sorted(p.rsplit("/", 1)[-1] for p in paths) == ["boxplot.png", "det.png", "histograms.png"]
    assert all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in paths)
