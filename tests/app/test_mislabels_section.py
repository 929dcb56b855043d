"""The report's mislabelled-clips section: the rule, the figures against the planted clips, the flags."""

import math

from speechid.app.mislabels_section import mislabels_section


def test_the_section_states_the_rule_the_scores_and_the_flags_in_order():
    dd = {"suspicious_clips": 2, "clips_tested": 2400, "flags_resembling_an_id": 1, "mislabel_threshold": 1.65,
          "mislabel_rule": "FRR 0.1% point: FAR 38% / FRR 0.075% on dev speakers",
          "scores": {"mislabels": {"precision": 0.5, "recall": 1.0, "flagged": 2, "planted": 1, "found": 1,
                                   "clean_clips": 2399, "clean_flagged": 1, "resembles_right": 1}}}
    flags = [
        {"clip_id": "a.mp3", "speaker_id": "id1" * 10, "separation": 2.9, "resembles": "id2" * 10,
         "nearest_other_speaker": "id2" * 10, "nearest_other_separation": 0.8, "evidence": 2.1},
        {"clip_id": "b.mp3", "speaker_id": "id3", "separation": 1.7, "resembles": None,
         "nearest_other_speaker": None, "nearest_other_separation": math.nan, "evidence": 0.05},
    ]
    page = mislabels_section(dd, flags, {"a.mp3": "v2"})
    assert "2 of 2,400 clips tested are flagged; 1 of them resemble another client_id" in page
    assert "1.65 or more" in page and "FRR 0.1% point" in page
    assert "every flag" in page and "50.0%" in page and "100.0%" in page and "1 of 2,399 (0.04%)" in page
    assert page.index("a.mp3") < page.index("b.mp3")  # the order given: strongest evidence first
    assert "+2.10" in page and "nan" not in page
    assert "<td>yes</td><td>+2.10</td><td>yes</td>" in page.replace("\n", "")  # resembles it; planted


def test_an_older_dedup_output_says_it_has_no_flags():
    assert "made before speechid flagged" in mislabels_section({"suspicious_clips": 3}, [], {})
