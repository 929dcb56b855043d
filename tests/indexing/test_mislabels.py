"""Mislabelled clips: the leave-one-out separation and the nearest other id against their definitions
(exact references), planted mislabels found at the model's flag point, a clean corpus rarely flagged, the
flags scored, and dedup's outputs (suspicious.parquet ranked by evidence, summary.txt, --truth scores)."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from speechid import config
from speechid.indexing import build_index, dedup, synthetic
from speechid.indexing.mislabels import MIN_ID_CLIPS, find_mislabels, leave_one_out, nearest_ids, score_flags
from speechid.operating_points import FLAG_FRR
from speechid.separation import PRIOR_DOF, Groups

from .conftest import write_embeddings

DIM = 16


def brute_loo(x, codes, pooled, prior_dof=PRIOR_DOF):
    """The definition, clip by clip: the rest of its id's clips, their mean and their scatter around it
    (shrunk toward ``pooled``), |x - mean| / sqrt(W (1 + 1/m))."""
    out = np.full(len(x), np.nan)
    for i in range(len(x)):
        if codes[i] < 0:
            continue
        rest = x[(codes == codes[i]) & (np.arange(len(x)) != i)].astype(np.float64)
        if len(rest) < MIN_ID_CLIPS - 1:
            continue
        mean = rest.mean(0)
        w = (((rest - mean) ** 2).sum() + prior_dof * pooled) / (len(rest) - 1 + prior_dof)
        out[i] = np.linalg.norm(x[i] - mean) / np.sqrt(w * (1 + 1 / len(rest)))
    return out


def brute_separations(q, x, codes, pooled, prior_dof=PRIOR_DOF):
    """[len(q), ids]: every query's separation from every id (NaN for an id without clips)."""
    k = codes.max() + 1
    out = np.full((len(q), k), np.nan)
    for c in range(k):
        grp = x[codes == c].astype(np.float64)
        if not len(grp):
            continue
        mean = grp.mean(0)
        w = (((grp - mean) ** 2).sum() + prior_dof * pooled) / (len(grp) - 1 + prior_dof)
        out[:, c] = np.linalg.norm(q - mean, axis=1) / np.sqrt(w * (1 + 1 / len(grp)))
    return out


def planted(seed=0, voices=60, clips=16, mislabels=12, spread=(0.4, 0.6)):
    """``voices`` x ``clips`` seeded vectors; ``mislabels`` clips, each of a distinct voice, filed under a
    distinct other voice's id. Returns (vectors, true voice, id code of each row, mislabelled rows)."""
    x, voice = synthetic.clustered_unit_vectors(voices, clips, dim=DIM, spread=spread, seed=seed)
    rng = np.random.default_rng(seed)
    codes = voice.copy()
    src, dst = rng.permutation(voices)[:mislabels], rng.permutation(voices)[:mislabels]
    dst = np.where(dst == src, (dst + 1) % voices, dst)
    wrong = np.array([np.flatnonzero(voice == s)[0] for s in src])
    codes[wrong] = dst
    return x, voice, codes, wrong


@pytest.fixture(scope="module")
def ops():
    """Operating points measured on 12 other voices of the same generator ("dev speakers")."""
    from speechid.model.calibration import measure

    dev, dev_voice = synthetic.clustered_unit_vectors(12, 16, dim=DIM, spread=(0.4, 0.6), seed=99)
    return measure(dev, dev_voice, group_sizes=(1, 2, 4, 8), seed=0)


def test_leave_one_out_is_its_definition():
    x, _ = synthetic.clustered_unit_vectors(8, 6, dim=DIM, seed=1)
    codes = np.repeat(np.arange(8), 6)
    codes[:4] = -1  # no client_id: not tested
    codes[6:10] = 7  # id 7 grows; id 1 keeps 2 clips: too few to test
    pooled = Groups.of_labels(x[codes >= 0], codes[codes >= 0]).pooled_spread()
    got, want = leave_one_out(x, codes, 8, pooled), brute_loo(x, codes, pooled)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[:4]).all() and np.isnan(got[codes == 1]).all() and not np.isnan(got[codes == 7]).any()
    np.testing.assert_allclose(got, want, rtol=1e-6)  # float32 unit vectors: |x|^2 = 1 to 1e-7


def test_nearest_other_id_is_exact():
    """One FAISS inner-product search against every id's spread-weighted mean equals the smallest separation
    over every id, computed one by one in float64 (own id excluded)."""
    x, codes = synthetic.clustered_unit_vectors(30, np.arange(30) % 7 + 1, dim=DIM, seed=2)
    q, _ = synthetic.clustered_unit_vectors(40, 1, dim=DIM, seed=3)
    q = np.concatenate([q, x[:40]])
    exclude = np.r_[np.full(40, -1), codes[:40]]
    ids = Groups.of_labels(x, codes)
    pooled = ids.pooled_spread()
    got, sep = nearest_ids(q, ids, pooled, exclude)
    want = brute_separations(q.astype(np.float64), x, codes, pooled)
    rows = np.arange(len(q))
    want[rows[exclude >= 0], exclude[exclude >= 0]] = np.inf
    np.testing.assert_allclose(sep, want.min(1), rtol=1e-6)
    np.testing.assert_allclose(want[rows, got], want.min(1), rtol=1e-5)  # the winner, or a tie within float32
    assert (got != exclude).all()


def test_the_flag_point_is_read_off_the_calibrated_curve(ops):
    lp, p = ops.speaker_level(1), ops.flag_point()
    assert lp.n == 1 and p.name == "frr_0.1%"
    assert lp.rates(p.threshold)[1] <= FLAG_FRR < lp.rates(p.threshold - lp.step)[1]
    assert p.threshold >= lp.point("frr_1%").threshold - lp.step  # stricter than the named FRR 1% point
    assert ops.clip_to_speaker_point() == lp.point(ops.default)  # query --by speaker's rule


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_mislabels_are_found_and_name_their_voice(ops, seed):
    x, voice, codes, wrong = planted(seed)
    pooled = Groups.of_labels(x, codes).pooled_spread()
    found = find_mislabels(x, codes, 60, pooled, ops.flag_point().threshold, ops.clip_to_speaker_point().threshold)
    flagged = set(np.flatnonzero(found.flagged))
    hits = flagged & set(wrong.tolist())
    # 12 planted in 960 clips (1.25%): precision 0.8-1.0 on these seeds (0-3 clean clips over the point)
    assert len(hits) / len(flagged) >= 0.8 and len(hits) / len(wrong) >= 0.9, (len(hits), len(flagged))
    right = [r for r in hits if found.resembles[r] == voice[r]]
    assert len(right) >= 0.9 * len(hits)  # the id each resembles is its true voice's
    clean = np.setdiff1d(np.arange(len(x)), wrong)
    assert found.flagged[clean].mean() <= 0.005
    # rows that were not flagged and have an id were not searched
    assert (found.nearest[~found.flagged] == -1).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_clean_corpus_is_flagged_at_most_one_percent(ops, seed):
    x, voice = synthetic.clustered_unit_vectors(60, 16, dim=DIM, spread=(0.4, 0.6), seed=seed)
    found = find_mislabels(x, voice, 60, Groups.of_labels(x, voice).pooled_spread(), ops.flag_point().threshold,
                           ops.clip_to_speaker_point().threshold)
    assert found.flagged.mean() <= 0.01


def test_the_named_frr_1_point_would_flag_more_clean_clips(ops):
    """Why the flag point is FRR 0.1% (module docstring): with every clip tested, frr_1% flags clean clips
    at a rate that buries 1% of planted mislabels; the flag point flags fewer of them."""
    counts = {}
    for name, t in (("frr_1%", ops.speaker_level(1).point("frr_1%").threshold),
                    ("flag", ops.flag_point().threshold)):
        n = 0
        for seed in range(3):
            x, voice = synthetic.clustered_unit_vectors(60, 16, dim=DIM, spread=(0.4, 0.6), seed=seed)
            n += int(find_mislabels(x, voice, 60, Groups.of_labels(x, voice).pooled_spread(), t, None).flagged.sum())
        counts[name] = n
    assert counts["flag"] < counts["frr_1%"], counts


def test_without_a_threshold_nothing_is_flagged_and_clips_without_an_id_are_still_placed(ops):
    x, voice = synthetic.clustered_unit_vectors(10, 8, dim=DIM, seed=4)
    codes = voice.copy()
    codes[::8] = -1  # one clip of each voice without a client_id
    found = find_mislabels(x, codes, 10, Groups.of_labels(x[codes >= 0], codes[codes >= 0]).pooled_spread(), None,
                           ops.clip_to_speaker_point().threshold)
    assert not found.flagged.any() and found.threshold is None
    assert (found.resembles[::8] == voice[::8]).all()  # each resembles its own voice's id
    assert (found.nearest[codes >= 0] == -1).all()


def test_score_flags_counts():
    clip_ids = [f"c{i}" for i in range(6)]
    speakers = ["a", "a", "b", "b", None, "b"]
    flagged = np.array([True, True, False, False, False, True])
    resembles = ["b", None, None, None, None, "a"]
    clip_truth = {"c0": "B", "c3": "A"}  # c0 (filed under a) is B's voice; c3 (under b) is A's
    s = score_flags(clip_ids, speakers, flagged, resembles, clip_truth, {"a": "A", "b": "B"})
    assert (s.flagged, s.planted, s.found, s.precision, s.recall) == (3, 2, 1, 1 / 3, 0.5)
    assert (s.clean_clips, s.clean_flagged, s.resembles_right) == (3, 2, 1)  # c4 has no id: not a clean clip
    assert "1 of 3 flags are planted mislabels" in str(s)


def test_dedup_flags_ranks_and_scores_planted_mislabels(ops, tmp_path):
    x, voice, codes, wrong = planted(0, voices=40, mislabels=8)
    ids = np.array([f"id{c:02d}" for c in codes], dtype=object)
    emb = write_embeddings(tmp_path / "emb", x, ids)
    build_index(emb, tmp_path / "idx", kind="flat", operating_points=ops, operating_points_model_id="model-a")
    truth = {f"id{v:02d}": f"v{v:02d}" for v in range(40)}
    clip_truth = {f"clip{r:05d}.mp3": f"v{voice[r]:02d}" for r in wrong}
    res = dedup(tmp_path / "idx", tmp_path / "out", truth=truth, clip_truth=clip_truth)
    flags = pq.read_table(tmp_path / "out" / "suspicious.parquet").to_pylist()
    assert res.summary["suspicious_clips"] == len(flags) >= 1
    assert res.summary["mislabel_threshold"] == pytest.approx(ops.flag_point().threshold)
    ev = [f["evidence"] for f in flags]
    assert ev == sorted(ev, reverse=True)  # strongest evidence first
    for f in flags:
        assert f["separation"] >= f["threshold"]
        assert f["evidence"] == pytest.approx(f["separation"] - f["nearest_other_separation"], abs=1e-5)
        if f["resembles"] is not None:
            assert f["resembles"] == f["nearest_other_speaker"] != f["speaker_id"]
    m = res.scores["mislabels"]
    assert m.precision >= 0.8 and m.recall >= 0.9 and m.planted == 8
    r = res.scores["mislabels_resembling"]  # the flags that name another id: a subset, never less precise here
    assert r.flagged == res.summary["flags_resembling_an_id"] <= m.flagged and r.precision >= m.precision
    assert res.summary["scores"]["mislabels"]["found"] == m.found
    text = (tmp_path / "out" / "summary.txt").read_text()
    assert "mislabelled clips:" in text and "strongest evidence first" in text and "mislabels: precision" in text
    assert flags[0]["clip_id"] in text
    # the clips table says the same, clip by clip
    clips = pq.read_table(tmp_path / "out" / "clips.parquet").to_pydict()
    assert sum(clips["suspicious"]) == len(flags)
    assert {c for c, s in zip(clips["clip_id"], clips["suspicious"], strict=True) if s} == {f["clip_id"] for f in flags}
    # and so does scoring the written output later
    from speechid.indexing import evaluate_dedup

    assert evaluate_dedup(tmp_path / "out", truth, clip_truth)["mislabels"] == m


def test_an_uncalibrated_index_flags_only_at_a_given_threshold(tmp_path):
    x, voice, codes, wrong = planted(1, voices=20, mislabels=4)
    emb = write_embeddings(tmp_path / "emb", x, np.array([f"id{c:02d}" for c in codes], dtype=object))
    build_index(emb, tmp_path / "idx", kind="flat", threshold=config.THRESHOLD)
    res = dedup(tmp_path / "idx", tmp_path / "none")
    assert res.summary["suspicious_clips"] == 0 and res.summary["mislabel_rule"].startswith("nothing flagged")
    assert "--mislabel-threshold" in (tmp_path / "none" / "summary.txt").read_text()
    res = dedup(tmp_path / "idx", tmp_path / "given", mislabel_threshold=1.8)
    flagged = set(pq.read_table(tmp_path / "given" / "suspicious.parquet").column("row").to_pylist())
    assert flagged and flagged <= set(range(len(x)))
    assert set(wrong.tolist()) & flagged
    assert res.summary["mislabel_rule"].startswith("given, not calibrated")
    from speechid.errors import ConfigError

    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="positive separation"):
            dedup(tmp_path / "idx", tmp_path / "bad", mislabel_threshold=bad)
