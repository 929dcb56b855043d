"""report.html from small fabricated run outputs: the answer comes first, every picture is inlined, ids
are short with the full id on hover, stages keep pipeline order, failures show reasons and examples."""

import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from speechid.app import htmlpage
from speechid.app.dedup_section import best_on_curve, dedup_advice
from speechid.app.report import rebuild_report
from speechid.app.run_record import REPORT, workdir_paths
from speechid.config import THRESHOLD
from speechid.errors import ConfigError
from speechid.indexing import synthetic
from speechid.model import calibration, evaluation

ALIAS_A = "a" * 40 + "1" * 88  # Common Voice client_ids are 128 hex characters
ALIAS_B = "b" * 40 + "2" * 88
OTHER = "c" * 40 + "3" * 88
# deliberately not alphabetical, so a sorted table would show
STAGES = {"synth": 12.0, "prep": 30.5, "train": 200.0, "evaluate": 20.0, "embed": 40.0, "index": 1.0,
          "dedup": 2.0, "query": 3.0}
# precision/recall of client_id merges against a uniform merge threshold (a separation, as dedup sweeps it)
CURVE = [{"threshold": t, "precision": p, "recall": r, "predicted_pairs": 0, "correct_pairs": 0, "true_pairs": 8}
         for t, p, r in [(1.0, 1.0, 0.25), (2.0, 1.0, 0.5), (3.0, 0.95, 0.875), (4.0, 0.6, 1.0), (5.0, 0.3, 1.0)]]


def _scores(p, r):
    return {"precision": p, "recall": r, "predicted_pairs": 4, "correct_pairs": 2, "true_pairs": 8, "items": 100}


def _write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def _dev_operating_points():
    """The fabricated model's operating points (clip level; speaker level for 2-clip groups)."""
    x, voice = synthetic.clustered_unit_vectors(10, 8, dim=16, seed=3)
    return calibration.measure(x, [f"s{v}" for v in voice], group_sizes=(2,), measured_on={"split": "dev"})


def fabricate_run(workdir) -> dict:
    """The outputs a finished demo leaves, in miniature: seeded distances and vectors, hand-made tables."""
    paths = workdir_paths(str(workdir))
    rng = np.random.default_rng(0)
    same, diff = rng.normal(0.6, 0.15, 300), rng.normal(1.1, 0.12, 300)
    ops = _dev_operating_points()
    metrics = evaluation.verification_metrics(same, diff, threshold=ops.threshold)
    metrics.update(clips=80, speakers=10)
    os.makedirs(paths["eval"])
    evaluation.plot_figures(same, diff, ops.threshold, paths["eval"])
    _write_json(os.path.join(paths["eval"], "metrics.json"), metrics)

    curve = [{"epoch": 1, "loss": 0.4, "dev_eer": 0.2, "improved": True},
             {"epoch": 2, "loss": 0.3, "dev_eer": 0.12, "improved": True},
             {"epoch": 3, "loss": 0.25, "dev_eer": 0.14, "improved": False}]
    query = {"clip": "query-x.mp3", "client_id": ALIAS_B, "true_speaker": "v1",
             "aliases_of_true_speaker": [ALIAS_A, ALIAS_B],
             "matches": [{"rank": 1, "speaker_id": ALIAS_A, "euclidean_distance": 0.41, "verdict": "same: 0.410 < ..."},
                         {"rank": 2, "speaker_id": OTHER, "euclidean_distance": 0.95, "verdict": "different: ..."}]}
    _write_json(paths["run"], {"seconds": STAGES, "training_curve": curve, "operating_points": ops.to_dict(),
                               "training": {"loss": "triplet", "epochs": 3, "best_epoch": 2}, "model_id": "m" * 64,
                               "query": query, "config": {"speakers": 100, "aliases": 8}})

    dd = {"clips": 100, "speakers": 12, "threshold": ops.threshold,
          "threshold_meaning": "FAR 1.7% point (the original project's specificity)",
          "merge_threshold": None,
          "merge_rule": "2+ clips: ... (speaker-level merge points on dev speakers: far_0.1%, capped at frr_1%)",
          "merged_groups": 1, "speakers_in_merged_groups": 2, "suspicious_clips": 0, "clip_clusters": 9,
          "pooled_spread": 0.21, "scores": {"speakers": _scores(1.0, 0.25), "clips": _scores(0.9, 0.8)},
          "merge_curve": CURVE}
    _write_json(os.path.join(paths["dedup"], "summary.json"), dd)
    _write_json(os.path.join(paths["dedup_seed"], "summary.json"),
                {**dd, "scores": {"speakers": _scores(0.3, 1.0), "clips": _scores(0.5, 0.9)}})
    pq.write_table(pa.table({
        "speaker_a": [ALIAS_A, ALIAS_A], "speaker_b": [ALIAS_B, OTHER], "clips_a": [6, 6], "clips_b": [5, 12],
        "separation": [0.93, 2.71], "merge_threshold": [2.4, 2.4], "merged": [True, False]}),
        os.path.join(paths["dedup"], "speaker_pairs.parquet"))
    os.makedirs(paths["corpus"])
    with open(os.path.join(paths["corpus"], "aliases.tsv"), "w") as f:
        f.write(f"client_id\ttrue_speaker\n{ALIAS_A}\tv1\n{ALIAS_B}\tv1\n{OTHER}\tv2\n")

    _write_json(os.path.join(paths["data"], "manifest.json"), {
        "records": {"train": 90, "dev": 5, "test": 5}, "hours": {"train": 0.1, "dev": 0.01, "test": 0.01},
        "speakers": {"train": 8, "dev": 1, "test": 1}, "failures": {"corrupt": 2, "too_short": 1},
        "reconciliation": {"rows": "103 read = 100 written + 3 failed", "clips": "103 seen = ...", "balanced": True}})
    os.makedirs(os.path.join(paths["data"], "failures"))
    with open(os.path.join(paths["data"], "failures", "failures-00000-of-00001.jsonl"), "w") as f:
        for member, reason in (("en/clips/bad_1.mp3", "corrupt"), ("en/clips/bad_2.mp3", "corrupt"),
                               ("en/clips/bad_3.mp3", "corrupt"), ("en/clips/tiny.mp3", "too_short")):
            f.write(json.dumps({"archive": "x.tar.gz", "path": member, "reason": reason, "detail": "0 bytes",
                                "tsv": "en/train.tsv", "line": 7}) + "\n")
    return paths


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    fabricate_run(workdir)
    path = rebuild_report(str(workdir))
    assert path == os.path.join(str(workdir), REPORT)
    with open(path, encoding="utf-8") as f:
        return f.read()


def _text(page: str) -> str:
    """The visible text (tags and data URIs dropped)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r'src="data:[^"]+"', "", page)))


def test_the_answer_comes_first_and_names_the_thresholds(page):
    h2 = re.findall(r"<h2>(.*?)</h2>", page)
    assert h2[0] == "The answer"
    assert h2.index("Training") > 1
    text = _text(page)
    answer = text[text.index("The answer"):text.index("Same person? Verification")]
    assert "EER" in answer and "FAR" in answer and "FRR" in answer
    assert f"{THRESHOLD:g}" in answer
    assert "precision 100.0% · recall 25.0%" in answer.replace("&middot;", "·")
    # the merge rule: the separation under the model's speaker-level point for each group size
    merge_point = _dev_operating_points().speaker_level(2).point("merge").threshold
    assert "separation" in answer and f"{merge_point:.2f} for 2+ clips" in answer
    assert "RMS" not in text  # the statistic merges were decided by before
    # recall is low: the advice reads the threshold off the curve (highest recall at precision >= 90%)
    assert "--merge-threshold 3.00" in answer
    # 2 of 4 proposed pairs right, 2 of 8 planted found: the sample size and 95% intervals are on the card
    assert "Measured on 8 planted pairs and 4 proposed" in answer
    assert "precision 15%–85%, recall 7%–59%" in answer.replace("&ndash;", "–")


def test_a_perfect_score_on_a_few_pairs_is_not_green():
    from speechid.app.dedup_section import wilson

    lo, hi = wilson(8, 8)
    assert round(lo, 3) == 0.676 and hi == 1.0  # 8 of 8: the interval still reaches down to 68%
    assert wilson(0, 0) is None
    lo, hi = wilson(900, 1000)
    assert 0.87 < lo < 0.9 < hi < 0.92


def test_operating_points_are_named_in_words_and_seed_means_one_thing(page):
    import html

    text = html.unescape(_text(page))
    for key in ("far_1%", "far_0.1%", "frr_1%", "at_0.83", "seed operating point", "seed's"):
        assert key not in text, key
    assert "FAR 1.7% point (the original project's specificity)" in text and "FRR 1% point" in text


def test_merge_proposals_show_separations(page):
    text = _text(page)
    proposals = text[text.index("Merge proposals"):]
    assert "separation" in proposals and "merge threshold" in proposals
    assert "0.93" in proposals and "2.71" in proposals and "2.40" in proposals


def test_every_picture_is_inlined(page):
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == 5  # DET, histograms, boxplot, merge curve, training curve
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "missing picture" not in page


def test_ids_are_short_with_the_full_id_on_hover(page):
    for full in (ALIAS_A, ALIAS_B, OTHER, "m" * 64):
        assert full[:16] + "…" in page
        # every occurrence of the full id is a title attribute
        assert page.count(full) == page.count(f'title="{full}"') > 0
    assert "…" not in htmlpage.short_id("short-id")


def test_stage_times_keep_pipeline_order_and_failures_show_examples(page):
    text = _text(page)
    stages = text[text.index("Stage times"):]
    positions = [stages.index(name) for name in STAGES]
    assert positions == sorted(positions)
    failures = text[text.index("Failures by reason"):]
    assert "corrupt" in failures and "too_short" in failures
    assert "bad_1.mp3 (train.tsv line 7): 0 bytes" in failures and "tiny.mp3" in failures
    assert 'title="en/clips/bad_1.mp3"' in page
    assert "bad_3.mp3" not in failures  # a few examples per reason, not every line


def test_no_raw_json(page):
    text = _text(page)
    assert not re.search(r'"\w+":', text)
    assert "{'" not in text and "{&#x27;" not in page


def test_dedup_advice():
    few = dedup_advice(_scores(0.95, 0.92), CURVE)[0]  # 4 proposed, 8 planted: too few to show it
    assert "not yet shown right" in few and "keep the default" not in few
    many = {**_scores(0.95, 0.92), "predicted_pairs": 400, "correct_pairs": 380, "true_pairs": 410}
    assert "keep the default" in dedup_advice(many, CURVE)[0]
    low_p = " ".join(dedup_advice(_scores(0.4, 1.0), CURVE))
    assert "Precision is low" in low_p and "--merge-threshold 3.00" in low_p
    assert "No single merge threshold gives both" in low_p and "speechid calibrate" in low_p  # best recall 87.5%
    fixable = [*CURVE[:2], {**CURVE[2], "recall": 0.95}, *CURVE[3:]]
    fix = dedup_advice(_scores(0.4, 1.0), fixable)
    assert "Set <code>--merge-threshold 3.00</code>: precision 95.0%, recall 95.0%" in fix[-1]
    assert not any("speechid calibrate" in tip for tip in fix)
    hopeless = " ".join(dedup_advice(_scores(0.4, 0.4), [{**c, "precision": 0.5} for c in CURVE],
                                            dev_speakers=10))
    assert "No single merge threshold reaches precision 90%" in hopeless
    assert "speechid calibrate" in hopeless and "measured on 10 dev speakers" in hopeless
    assert best_on_curve(CURVE)["threshold"] == 3.0


def test_rebuild_needs_a_finished_run(tmp_path):
    with pytest.raises(ConfigError, match="demo.json"):
        rebuild_report(str(tmp_path))


def test_report_only_cli(tmp_path):
    import subprocess
    import sys

    def run(workdir):
        return subprocess.run([sys.executable, "-m", "speechid", "demo", "--report-only", "--workdir", str(workdir)],
                              capture_output=True, text=True, timeout=300)

    r = run(tmp_path / "nothing-here")
    assert r.returncode == 2 and "demo.json" in r.stderr and "Traceback" not in r.stderr
    fabricate_run(tmp_path / "run")
    r = run(tmp_path / "run")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"report: {tmp_path / 'run' / REPORT}"


def test_a_partial_or_uncalibrated_run_still_gets_a_page(tmp_path):
    paths = fabricate_run(tmp_path / "run")
    with open(paths["run"]) as f:
        run = json.load(f)
    del run["operating_points"], run["training_curve"]
    _write_json(paths["run"], run)
    summary_path = os.path.join(paths["dedup"], "summary.json")
    with open(summary_path) as f:
        dd = json.load(f)
    dd["merge_rule"] = "nothing merged: the index carries no model operating points; or give --merge-threshold"
    _write_json(summary_path, dd)
    with open(rebuild_report(str(tmp_path / "run")), encoding="utf-8") as f:
        text = _text(f.read())
    assert "given, not calibrated" in text and "No per-epoch record" in text
    assert "nothing merged: the index carries no model operating points" in text  # the rule dedup reported
    _write_json(str(tmp_path / "bare" / "demo.json"), {"seconds": {"synth": 1.0}})
    with open(rebuild_report(str(tmp_path / "bare")), encoding="utf-8") as f:
        assert "No failures" in f.read()
