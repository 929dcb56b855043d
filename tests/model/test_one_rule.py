"""One "same person" rule and one threshold default: every decision goes through ``is_same``, and no
library signature re-defaults the seed's threshold (it has one home, ``speechid.config.THRESHOLD``)."""

import inspect

import numpy as np
import pytest

from speechid import config
from speechid.indexing.query import ClipMatch, SpeakerMatch
from speechid.model import calibration, evaluation
from speechid.operating_points import is_same, verdict_text, verdict_word


def test_the_rule_is_strictly_below_for_scalars_and_arrays():
    assert is_same(0.5, 0.83) is True and is_same(0.83, 0.83) is False and is_same(0.9, 0.83) is False
    np.testing.assert_array_equal(is_same(np.array([0.1, 0.83, 1.2]), 0.83), [True, False, False])
    np.testing.assert_array_equal(is_same(np.array([0.5, 0.5]), np.array([0.4, 0.6])), [False, True])
    assert verdict_word(0.83, 0.83) == "different" and verdict_text(0.83, 0.83).startswith("different: 0.830 >=")


def test_every_decision_agrees_at_the_boundary():
    """A distance exactly at the threshold is "different" for query matches, metrics and calibration alike."""
    t = 0.75
    for m in (ClipMatch(1, 0, "c", "s", "src", t, t), SpeakerMatch(1, "s", 3, t, t)):
        assert m.same is False and m.verdict == "different"
    for m in (ClipMatch(1, 0, "c", "s", "src", t - 1e-9, t), SpeakerMatch(1, "s", 3, t - 1e-9, t)):
        assert m.same is True and m.verdict == "same"
    same, diff = np.array([0.5, t, 1.0]), np.array([t, 0.5, 1.2, 1.3])
    m = evaluation.verification_metrics(same, diff, threshold=t)
    assert m["sensitivity"] == pytest.approx(1 / 3) and m["specificity"] == pytest.approx(3 / 4)
    assert evaluation.rates_at(same, diff, t) == pytest.approx((1 / 4, 2 / 3))
    lp = calibration.level_points("clip", 1, 1, same, diff, reference=t)
    assert (lp.points[f"at_{t:g}"].far, lp.points[f"at_{t:g}"].frr) == pytest.approx((1 / 4, 2 / 3))


def test_no_library_signature_re_defaults_the_threshold():
    from speechid.model.export import export_model

    required = [(config.l2_to_squared, "threshold"), (config.l2_to_cosine, "threshold"),
                (evaluation.verification_metrics, "threshold"), (calibration.level_points, "reference")]
    for fn, name in required:
        assert inspect.signature(fn).parameters[name].default is inspect.Parameter.empty, fn.__name__
    assert inspect.signature(evaluation.plot_figures).parameters["reference"].default is None
    assert "reference" not in inspect.signature(calibration.measure).parameters  # always the seed's
    assert inspect.signature(export_model).parameters["threshold"].default is None
    for fn in (config.l2_to_squared, config.l2_to_cosine, evaluation.verification_metrics, calibration.level_points,
               calibration.measure, evaluation.plot_figures, export_model):
        assert config.THRESHOLD not in [p.default for p in inspect.signature(fn).parameters.values()], fn.__name__
