"""Reading archives: member names, TSV parsing, and the ReadArchives composite on small in-memory tarballs."""

import gzip
import io

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from speechid.pipelines.archives import CLIPS, ROWS, ReadArchives, is_clip_member
from speechid.pipelines.failures import FAILURES, Failure
from speechid.pipelines.manifest import EVENTS
from speechid.pipelines.metrics import PREP
from speechid.pipelines.tsv import TsvRow, clip_member_path, parse_tsv, unsafe_reason
from tests.pipelines.prep_helpers import CV_HEADER, cv_row, local_pipeline, make_tar, tsv, wav

ROOT = "cv-corpus-9/en"


@pytest.mark.parametrize(
    "name, unsafe",
    [
        ("cv/en/clips/a.mp3", False),
        ("a.mp3", False),
        ("cv/en/clips/..a.mp3", False),
        ("/etc/passwd", True),
        ("../a.mp3", True),
        ("cv/../../a.mp3", True),
        ("cv\\..\\a.mp3", True),
        ("C:/a.mp3", True),
        ("", True),
    ],
)
def test_unsafe_reason(name, unsafe):
    assert (unsafe_reason(name) is not None) == unsafe


def _parse(data: bytes, selected: bool = True, split: str = "train"):
    return list(parse_tsv(io.BytesIO(data), "A", f"{ROOT}/{split}.tsv", split, selected))


def test_tsv_rows_keep_unbalanced_quotes_and_bad_rows_fail():
    data = tsv(
        cv_row("c1", "a.mp3", 'He said "hello and left'),
        "c2\tb.mp3\tonly three fields",
        cv_row("", "c.mp3"),
        cv_row("c4", "d.mp3", up="two"),
        cv_row("c5", "../e.mp3"),
        "",
        cv_row("c6", "f.mp3", "it's fine"),
    )
    out = _parse(b"\xef\xbb\xbf" + data)  # a byte-order mark must not hide the client_id column
    rows = [x for x in out if not isinstance(x, Failure)]
    fails = [x for x in out if isinstance(x, Failure)]
    assert [key for key, _ in rows] == [("A", f"{ROOT}/clips/a.mp3"), ("A", f"{ROOT}/clips/f.mp3")]
    first = rows[0][1]
    assert first.get("sentence") == 'He said "hello and left'
    assert first.get("client_id") == "c1" and first.line == 2 and first.selected and first.locale == "en"
    assert [(f.reason, f.line, f.rows) for f in fails] == [
        ("malformed_row", 3, 1),
        ("malformed_row", 4, 1),
        ("malformed_row", 5, 1),
        ("unsafe_path", 6, 1),
    ]
    assert fails[0].path == f"{ROOT}/clips/b.mp3"  # the clip a malformed row names, when it has one


def test_unselected_rows_are_keyed_without_fields_and_never_fail():
    out = _parse(tsv(cv_row("c1", "a.mp3"), "garbage", cv_row("c2", "../b.mp3")), selected=False, split="other")
    assert out[0] == (("A", f"{ROOT}/clips/a.mp3"), TsvRow("A", f"{ROOT}/other.tsv", "other", 2, False))
    assert out[1:] == [None, None]  # no usable path: a row read and skipped by policy


def test_header_without_required_columns_fails_every_row_and_the_tsv():
    out = _parse(tsv("x\ty", "1\t2", header="foo\tbar"))
    assert [(f.reason, f.detail, f.rows) for f in out] == [
        ("unusable_tsv", "header lacks client_id, path (columns: foo, bar)", 0),  # the file: refuses the run
        ("malformed_row", "header lacks client_id, path", 1),
        ("malformed_row", "header lacks client_id, path", 1),
    ]
    assert _parse(tsv("x\ty", header="foo\tbar"), selected=False, split="other") == [None]  # unselected: no check


def _by(kind):
    return lambda events: sorted((k, v) for kind_, k, v in events if kind_ == kind)


def test_read_archives_streams_members_in_any_order(tmp_path):
    clip = wav(0.5)
    archive = make_tar(
        tmp_path / "cv.tar.gz",
        [
            (f"{ROOT}/train.tsv", tsv(cv_row("c1", "a.mp3"), cv_row("c2", "big.mp3"), "bad row")),
            (f"./{ROOT}/clips/a.mp3", clip),  # a leading ./ is the same member
            (f"{ROOT}/clips/big.mp3", b"x" * 70_000),
            ("../evil.mp3", clip),
            ("/abs/clips/x.mp3", clip),
            (f"{ROOT}/clips/link.mp3", "symlink", "/etc/passwd"),
            (f"{ROOT}/README.txt", b"hello"),
            (f"{ROOT}/reported.tsv", b"sentence\treason\n"),
            (f"{ROOT}/other.tsv", tsv(cv_row("c3", "a.mp3"))),
        ],
    )
    with local_pipeline() as p:
        out = p | beam.Create([archive]) | ReadArchives(str(tmp_path / "index"), ("train",), namespace=PREP)
        assert_that(
            out[ROWS] | "RowKeys" >> beam.Map(lambda kv: (kv[0][1], kv[1].split, kv[1].selected)),
            equal_to(
                [
                    (f"{ROOT}/clips/a.mp3", "train", True),
                    (f"{ROOT}/clips/big.mp3", "train", True),
                    (f"{ROOT}/clips/a.mp3", "other", False),
                ]
            ),
            label="Rows",
        )
        assert_that(
            out[CLIPS] | "ClipInfo" >> beam.Map(lambda kv: (kv[0], kv[1].ordinal, kv[1].size)),
            equal_to(
                [
                    ((archive, f"{ROOT}/clips/a.mp3"), 1, len(clip)),
                    ((archive, f"{ROOT}/clips/big.mp3"), 2, 70_000),
                ]
            ),
            label="Clips",
        )
        assert_that(
            out[FAILURES] | "Reasons" >> beam.Map(lambda f: (f.path, f.reason, f.rows)),
            equal_to(
                [
                    ("", "malformed_row", 1),
                    ("../evil.mp3", "unsafe_path", 0),
                    ("/abs/clips/x.mp3", "unsafe_path", 0),
                    (f"{ROOT}/clips/link.mp3", "not_a_file", 0),
                ]
            ),
            label="Failures",
        )
        events = out[EVENTS] | "AllEvents" >> beam.combiners.ToList()
        assert_that(
            events | "TsvRows" >> beam.Map(_by("tsv_rows")),
            equal_to([[(f"{archive}!{ROOT}/other.tsv", 1), (f"{archive}!{ROOT}/train.tsv", 3)]]),
            label="TsvRowEvents",
        )
        assert_that(
            events | "Seen" >> beam.Map(lambda e: _by("clips_seen")(e) + _by("members_ignored")(e)),
            equal_to([[(archive, 2), (archive, 2)]]),
            label="SeenEvents",
        )


def test_unreadable_and_truncated_archives_fail_without_losing_what_was_read(tmp_path):
    bad = tmp_path / "notes.tar.gz"
    bad.write_bytes(b"this is not an archive at all" * 40)
    # ~3.8 MB that does not compress (like MP3): the gzip reader's 1 MiB chunks before the cut at 3/4 decode.
    noise = np.random.default_rng(0).integers(0, 256, 80 * 48_000, dtype=np.uint8).tobytes()
    full = make_tar(
        tmp_path / "full.tar",
        [(f"{ROOT}/clips/{i}.mp3", noise[i * 48_000 : (i + 1) * 48_000]) for i in range(80)],
        mode="w",
    )
    raw = open(full, "rb").read()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(gzip.compress(raw)[: 3 * len(gzip.compress(raw)) // 4])
    broken = tmp_path / "broken.tar.gz"  # gzip's magic, then no valid deflate stream: nothing is read
    broken.write_bytes(b"\x1f\x8b\x08\x00" + b"not deflate data" * 8)
    with local_pipeline() as p:
        archives = p | beam.Create([str(bad), str(cut), str(broken)])
        out = archives | ReadArchives(str(tmp_path / "index"), ("train",), namespace=PREP)
        assert_that(
            out[FAILURES] | beam.Map(lambda f: (f.archive.rsplit("/", 1)[1], f.reason)),
            equal_to([("notes.tar.gz", "archive_unreadable"), ("cut.tar.gz", "archive_truncated"),
                      ("broken.tar.gz", "archive_unreadable")]),
            label="Failures",
        )
        # The clips read before the break are emitted and counted, so the manifest still reconciles.
        n_clips = out[CLIPS] | beam.combiners.Count.Globally()
        seen = out[EVENTS] | beam.Filter(lambda e: e[0] == "clips_seen") | beam.Map(lambda e: e[2])
        assert_that(
            (n_clips, seen | beam.CombineGlobally(sum)) | beam.Flatten() | beam.combiners.ToList(),
            lambda got: _same(got),
            label="Counted",
        )


def _same(elements):
    (values,) = elements  # the one list ToList made
    assert len(values) == 2 and values[0] == values[1] and 0 < values[0] < 80, values


def test_tsv_header_constant_matches_synth():
    from speechid.corpora import synth

    assert tuple(CV_HEADER.split("\t")) == synth.CV_HEADER


def test_a_field_over_the_csv_limit_fails_its_row_and_the_rows_after_it_are_read():
    huge = cv_row("c2", "b.mp3", "x" * 200_000)  # over csv.field_size_limit() (128 KiB)
    out = _parse(tsv(cv_row("c1", "a.mp3"), huge, cv_row("c3", "c.mp3")))
    assert [key[1].rsplit("/", 1)[1] for key, _ in (x for x in out if not isinstance(x, Failure))] == ["a.mp3", "c.mp3"]
    (fail,) = [x for x in out if isinstance(x, Failure)]
    assert (fail.archive, fail.tsv, fail.line, fail.rows) == ("A", f"{ROOT}/train.tsv", 3, 1)
    assert fail.reason == "malformed_row" and "field larger than field limit (131072)" in fail.detail
    unselected = _parse(tsv(cv_row("c1", "a.mp3"), huge, cv_row("c3", "c.mp3")), selected=False, split="other")
    assert [x if x is None else x[0][1].rsplit("/", 1)[1] for x in unselected] == ["a.mp3", None, "c.mp3"]
    header = _parse(tsv(cv_row("c1", "a.mp3"), header=CV_HEADER + "\t" + "h" * 200_000))
    assert [(f.reason, f.line) for f in header] == [("unusable_tsv", 1), ("malformed_row", 2)]
    assert "header: unreadable line: field larger" in header[0].detail


def test_a_clip_in_a_folder_under_clips_is_a_clip_member():
    assert is_clip_member(f"{ROOT}/clips/sub dir/x.mp3") and is_clip_member(f"{ROOT}/clips/x y.mp3")
    assert clip_member_path(f"{ROOT}/train.tsv", "sub dir/x.mp3") == f"{ROOT}/clips/sub dir/x.mp3"
    assert not is_clip_member(f"{ROOT}/README.txt") and not is_clip_member(f"{ROOT}/clips")
