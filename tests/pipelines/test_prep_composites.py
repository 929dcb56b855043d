"""Each prep composite on in-memory elements: the join policy, decoding, the manifest counts."""

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from speechid import schema
from speechid.errors import ConfigError
from speechid.pipelines.archives import CLIPS, PAIRS, ROWS, Clip, JoinRowsToClips
from speechid.pipelines.failures import FAILURES
from speechid.pipelines.manifest import EVENTS, BuildManifest, prep_manifest
from speechid.pipelines.prep_stages import DecodeClips, PrepConfig
from speechid.pipelines.tsv import TsvRow
from tests.pipelines.prep_helpers import local_pipeline, wav

A = "gs://bucket/cv-en.tar.gz"
T = "cv/en/train.tsv"


def row(path: str, split: str = "train", line: int = 2, selected: bool = True, client: str = "c1") -> TsvRow:
    fields = (("client_id", client), ("path", path), ("sentence", "hi"), ("up_votes", "3"), ("locale", "en"))
    return TsvRow(A, f"cv/en/{split}.tsv", split, line, selected, fields if selected else ())


def key(path: str) -> tuple[str, str]:
    return (A, f"cv/en/clips/{path}")


def test_join_policy_duplicates_missing_unlisted_and_not_selected():
    rows = [
        (key("ok.mp3"), row("ok.mp3")),
        (key("ok.mp3"), row("ok.mp3", "validated", 9, selected=False)),
        (key("dup.mp3"), row("dup.mp3", "dev", 3)),
        (key("dup.mp3"), row("dup.mp3", "train", 7)),
        (key("dup.mp3"), row("dup.mp3", "train", 4)),
        (key("gone.mp3"), row("gone.mp3", line=5)),
        (key("other.mp3"), row("other.mp3", "other", 2, selected=False)),
    ]
    clips = [
        (key("ok.mp3"), Clip(b"ok", 2, 1)),
        (key("dup.mp3"), Clip(b"d", 1, 2)),
        (key("other.mp3"), Clip(b"o", 1, 3)),
        (key("stray.mp3"), Clip(b"s", 1, 4)),
        (key("twice.mp3"), Clip(b"old", 3, 5)),
        (key("twice.mp3"), Clip(b"new", 3, 8)),
    ]
    with local_pipeline() as p:
        out = {ROWS: p | "Rows" >> beam.Create(rows), CLIPS: p | "Clips" >> beam.Create(clips)} | JoinRowsToClips()
        assert_that(
            out[PAIRS] | "Pairs" >> beam.Map(lambda rc: (rc[0].get("path"), rc[0].split, rc[0].line, rc[1].data)),
            # dup.mp3: train wins over dev, and the earlier train line over the later one
            equal_to([("ok.mp3", "train", 2, b"ok"), ("dup.mp3", "train", 4, b"d")]),
            label="Pairs",
        )
        assert_that(
            out[FAILURES]
            | "Fails" >> beam.Map(lambda f: (f.path.rsplit("/", 1)[1], f.reason, f.line, f.rows, f.clips)),
            equal_to(
                [
                    ("dup.mp3", "duplicate", 3, 1, 0),
                    ("dup.mp3", "duplicate", 7, 1, 0),
                    ("gone.mp3", "missing_clip", 5, 1, 0),
                    ("twice.mp3", "duplicate", 0, 0, 1),  # the earlier member; the later one is kept
                ]
            ),
            label="Failures",
        )
        assert_that(
            out[EVENTS],
            equal_to(
                [
                    ("rows_skipped_by_policy", "validated", 1),
                    ("rows_skipped_by_policy", "other", 1),
                    ("clips_not_selected", A, 1),
                    ("clips_unlisted", A, 1),
                    ("clips_unlisted", A, 1),  # twice.mp3's kept member: no TSV lists it
                ]
            ),
            label="Events",
        )


def test_decode_clips_routes_by_split_and_fails_with_the_decoders_reason():
    config = PrepConfig(splits=("train", "dev"), min_duration=0.5, max_duration=3.0, max_clip_bytes=10**6)
    pairs = [
        (row("mono.wav"), Clip(wav(1.0, 48_000), 0, 1)),
        (row("stereo.wav", "dev", client="c2"), Clip(wav(1.5, 44_100, channels=2), 0, 2)),
        (row("empty.wav"), Clip(b"", 0, 3)),
        (row("junk.wav"), Clip(b"\x00\x01garbage" * 100, 0, 4)),
        (row("short.wav"), Clip(wav(0.2), 0, 5)),
        (row("long.wav"), Clip(wav(3.5, 16_000), 0, 6)),
        (row("huge.wav"), Clip(None, 5 * 10**6, 7)),
    ]

    def summary(examples):
        recs = [schema.from_example(e) for e in examples]
        return sorted((r.clip_id, r.split, r.sample_rate, round(r.duration, 2), r.up_votes, r.locale) for r in recs)

    with local_pipeline() as p:
        out = p | beam.Create(pairs) | DecodeClips(config)
        assert_that(
            out["train"] | "Train" >> beam.combiners.ToList() | "SumTrain" >> beam.Map(summary),
            equal_to([[("mono.wav", "train", 16_000, 1.0, 3, "en")]]),
            label="Train",
        )
        assert_that(
            out["dev"] | "Dev" >> beam.combiners.ToList() | "SumDev" >> beam.Map(summary),
            equal_to([[("stereo.wav", "dev", 16_000, 1.5, 3, "en")]]),  # converted to 16 kHz mono, not failed
            label="Dev",
        )
        assert_that(
            out[FAILURES] | beam.Map(lambda f: (f.path.rsplit("/", 1)[1], f.reason, f.rows, f.clips)),
            equal_to(
                [
                    ("empty.wav", "empty", 1, 1),
                    ("junk.wav", "corrupt", 1, 1),
                    ("short.wav", "too_short", 1, 1),
                    ("long.wav", "too_long", 1, 1),
                    ("huge.wav", "too_large", 1, 1),
                ]
            ),
            label="Failures",
        )
        assert_that(
            out[EVENTS] | beam.Map(lambda e: (e[0], e[1], round(e[2][0], 2), e[2][1])),
            equal_to([("written", "train", 1.0, "c1"), ("written", "dev", 1.5, "c2")]),
            label="Events",
        )


def test_build_manifest_counts_and_reconciles():
    archive_key = f"{A}!{T}"
    events = [
        ("tsv_rows", archive_key, 5),
        ("tsv_rows", f"{A}!cv/en/validated.tsv", 2),
        ("clips_seen", A, 4),
        ("members_ignored", A, 1),
        ("rows_skipped_by_policy", "validated", 2),
        ("clips_unlisted", A, 1),
        ("written", "train", (1800.0, "c1")),
        ("written", "train", (1800.0, "c1")),
        ("failures", "corrupt", 1),
        ("failed_rows", "", 1),
        ("failed_clips", "", 1),
        ("failures", "missing_clip", 1),
        ("failed_rows", "", 1),
        ("failures", "malformed_row", 1),
        ("failed_rows", "", 1),
    ]
    info = {"splits": ["train", "dev"], "inputs": [A]}

    def check(manifests):
        (m,) = manifests
        assert m["records"] == {"train": 2, "dev": 0}
        assert m["hours"] == {"train": 1.0, "dev": 0.0}
        assert m["speakers"] == {"train": 1, "dev": 0}
        assert m["rows_read_per_tsv"] == {A: {T: 5, "cv/en/validated.tsv": 2}}
        assert m["failures"] == {"corrupt": 1, "malformed_row": 1, "missing_clip": 1}
        assert m["rows"]["read"] == 7 and m["rows"]["skipped_by_policy"] == 2 and m["rows"]["failed"] == 3
        assert m["clips"]["seen"] == 4 and m["clips"]["unlisted"] == 1 and m["clips"]["failed"] == 1
        assert m["reconciliation"]["balanced"], m["reconciliation"]
        assert m["inputs"] == [A]

    with local_pipeline() as p:
        assert_that(p | beam.Create(events) | BuildManifest(prep_manifest, info), check)


def test_manifest_says_when_counts_do_not_add_up():
    counts = {"tsv_rows": {f"{A}!{T}": 3}, "records": {"train": 1}, "clips_seen": {A: 1}}
    m = prep_manifest(counts, {"splits": ["train"]})
    assert not m["reconciliation"]["rows_balanced"] and m["reconciliation"]["clips_balanced"]
    assert not m["reconciliation"]["balanced"]
    assert m["reconciliation"]["rows"] == "3 read = 1 written + 0 failed + 0 skipped by policy"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"splits": ("train", "bogus")},
        {"splits": ()},
        {"splits": ("train", "train")},
        {"min_duration": 5.0, "max_duration": 2.0},
        {"sample_rate": 100},
        {"num_shards": -1},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        PrepConfig(**kwargs)


def test_config_features_follow_the_sample_rate():
    assert PrepConfig(sample_rate=48_000).features.sample_rate == 48_000
