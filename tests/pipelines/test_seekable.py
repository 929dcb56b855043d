"""Two-pass archive reading: the seek index, range readers, and ReadClipRanges against the bytes tar extracts."""

import os
import tarfile

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from speechid.pipelines import seekable
from speechid.pipelines.archives import (
    CLIPS,
    INDEXES,
    PAIRS,
    ROWS,
    JoinRowsToClips,
    MemberRef,
    ReadArchives,
    ReadClipRanges,
    ReadRange,
)
from speechid.pipelines.failures import FAILURES
from speechid.pipelines.metrics import PREP
from speechid.pipelines.tsv import TsvRow
from tests.pipelines.prep_helpers import cv_row, local_pipeline, make_tar, tsv

ROOT = "cv-corpus-9/en"


def _noise(n: int, seed: int) -> bytes:
    """Incompressible bytes, like MP3: a gzip of them is as long as they are, so seek points are real."""
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _archive(path, mode: str, sizes: list[int], tsv_first: bool = False) -> tuple[str, dict[str, bytes]]:
    clips = {f"{ROOT}/clips/c{i:03d}.mp3": _noise(n, i) for i, n in enumerate(sizes)}
    rows = tsv(*(cv_row(f"spk{i % 3}", f"c{i:03d}.mp3") for i in range(len(sizes))))
    members = [(name, data) for name, data in clips.items()]
    listing = [(f"{ROOT}/train.tsv", rows)]
    return make_tar(path, listing + members if tsv_first else members + listing, mode=mode), clips


def test_plan_sizes_ranges_and_index_points():
    assert seekable.plan(10 << 20) == (1 << 20, 1 << 20)  # small archive: 1 MiB ranges, a point per MiB
    assert seekable.plan(10 << 30) == (40 << 20, 20 << 20)  # 10 GiB: 256 ranges, a point every half range
    assert seekable.plan(100 << 30) == (64 << 20, 32 << 20)  # capped: a few thousand 64 MiB ranges
    assert seekable.plan(123, range_bytes=5000) == (5000, 1 << 20)


def test_gzip_index_lets_a_fresh_reader_enter_anywhere(tmp_path):
    """Pass 1 writes the index; pass 2 (a new reader, as on another worker) reads members in any order."""
    path, clips = _archive(tmp_path / "a.tar.gz", "w:gz", [700_000] * 6)  # ~4 MiB: several seek points
    places = {}
    with seekable.IndexingReader(path, spacing=1 << 20) as reader:
        assert reader.kind == seekable.GZIP
        with tarfile.open(fileobj=reader.stream, mode="r|") as tar:
            places = {m.name: (m.offset_data, m.size) for m in tar}
        index = reader.save_index(seekable.index_path(str(tmp_path / "idx"), path))
    assert os.path.getsize(index.index_path) > 0
    names = sorted(clips)
    with seekable.RangeReader(path, index, skip_limit=0) as r:  # every read a seek: last member first
        for name in reversed(names):
            assert r.read(*places[name]) == clips[name], name
    with seekable.RangeReader(path, index) as r:  # a range: forward reads over the gaps
        for name in names[1::2]:
            assert r.read(*places[name]) == clips[name], name


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
@pytest.mark.parametrize("tsv_first", [False, True])
def test_read_clip_ranges_returns_every_clip_as_tar_extracts_it(tmp_path, mode, tsv_first):
    sizes = [int(s) for s in np.random.default_rng(1).integers(2_000, 40_000, 24)]
    path, clips = _archive(tmp_path / f"a.tar{mode[1:].replace(':', '.')}", mode, sizes, tsv_first)
    with local_pipeline() as p:
        read = p | beam.Create([path]) | ReadArchives(str(tmp_path / "idx"), ("train",), range_bytes=60_000,
                                                      namespace=PREP)
        joined = {ROWS: read[ROWS], CLIPS: read[CLIPS]} | JoinRowsToClips()
        out = {PAIRS: joined[PAIRS], INDEXES: read[INDEXES]} | ReadClipRanges(max_clip_bytes=35_000, namespace=PREP)
        expected = [(name, data if len(data) <= 35_000 else None) for name, data in clips.items()]
        assert_that(
            out[PAIRS] | beam.Map(lambda rc: (f"{ROOT}/clips/{rc[0].get('path')}", rc[1].data)),
            equal_to(expected),
            label="Bytes",
        )
        assert_that(out[FAILURES], equal_to([]), label="NoFailures")
        ranges = read[CLIPS] | beam.Map(lambda kv: kv[1].range_id) | beam.Distinct() | beam.combiners.Count.Globally()
        # a bz2/xz stream cannot be entered midway: one range; else contiguous runs of at most 60 KB
        low, high = (1, 1) if mode in ("w:bz2", "w:xz") else (sum(sizes) // 60_000, 2 * sum(sizes) // 60_000)
        assert_that(ranges, lambda got: _between(got, low, high), label="Ranges")


def _between(got, low, high):
    assert len(got) == 1 and low <= got[0] <= high, (got, low, high)


def test_a_member_that_cannot_be_read_again_fails_with_its_row(tmp_path):
    """The archive changed between the passes (here: cut short): the clip fails, named, and counted once."""
    path, clips = _archive(tmp_path / "a.tar", "w", [5_000, 5_000])
    row = TsvRow(path, f"{ROOT}/train.tsv", "train", 3, True, (("client_id", "spk1"), ("path", "c001.mp3")))
    element = ((path, 0), [(row, MemberRef(0, 1, 10 ** 9, 5_000))])  # past the end of the file
    fn = ReadRange(max_clip_bytes=None, namespace=PREP)
    fn.setup()
    (out,) = list(fn.process(element, {path: seekable.ArchiveIndex(seekable.PLAIN)}))
    fn.teardown()
    failure = out.value
    assert out.tag == FAILURES
    assert (failure.reason, failure.path, failure.rows, failure.clips) == (
        "member_unreadable", f"{ROOT}/clips/c001.mp3", 1, 1)
