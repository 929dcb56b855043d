"""P x K batch composition, seeded crops, and the split reader."""

import numpy as np
import pytest
import tensorflow as tf

from speechid import schema
from speechid.audio import to_pcm16
from speechid.errors import ConfigError
from speechid.model.data import load_clips, pk_batches, random_crop, record_files, speed_copy
from speechid.schema import read_records

from .conftest import client_id


def batches(data_dir, speakers, n, seed=0, p=4, k=3, crop=4000):
    files = record_files(data_dir, "train")
    ds = pk_batches(
        files, speakers, speakers_per_batch=p, clips_per_speaker=k, crop_samples=crop, seed=seed, shuffle_buffer=32
    )
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


def test_batches_are_p_distinct_speakers_times_k_clips(tiny_data):
    speakers = [client_id(s) for s in range(8)]
    got = batches(tiny_data, speakers, 6)
    seen_labels = set()
    for x, y in got:
        assert x.shape == (12, 4000) and x.dtype == np.float32 and y.shape == (12,) and y.dtype == np.int32
        groups = y.reshape(4, 3)
        assert np.all(groups == groups[:, :1])  # each group of K is one speaker
        assert len(set(groups[:, 0])) == 4  # the P speakers of a batch are distinct
        assert np.abs(x).max() <= 1.0 and np.any(x)
        seen_labels.update(y.tolist())
    assert seen_labels <= set(range(8)) and len(seen_labels) >= 6


def test_labels_follow_the_vocabulary_order_and_skip_unknown_speakers(tiny_data):
    # Only speakers 7, 2, 5, 6 are in this vocabulary: label i must be vocab[i]. Find each crop inside the
    # record it was cut from (exact PCM16 match) and check that record's client_id.
    vocab = [client_id(7), client_id(2), client_id(5), client_id(6)]
    pcm = {r.clip_id: (to_pcm16(r.audio), r.client_id) for r in read_records(schema.record_pattern(tiny_data, "train"))}
    for x, y in batches(tiny_data, vocab, 3, p=2, k=2):
        assert set(y.tolist()) <= {0, 1, 2, 3}
        for crop, label in zip(x, y, strict=True):
            needle = to_pcm16(crop)
            owners = [cid for blob, cid in pcm.values() if blob.find(needle) % 2 == 0]
            assert owners == [vocab[label]]


def test_same_seed_same_batches_other_seed_other_batches(tiny_data):
    speakers = [client_id(s) for s in range(8)]
    a = batches(tiny_data, speakers, 3, seed=(5, 2))
    b = batches(tiny_data, speakers, 3, seed=(5, 2))
    c = batches(tiny_data, speakers, 3, seed=(5, 3))
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c, strict=True))


def test_random_crop_pads_short_clips_and_stays_inside_long_ones():
    short = tf.constant(np.arange(1, 6, dtype=np.int16))
    np.testing.assert_array_equal(
        random_crop(short, 8, tf.constant([1, 2], tf.int64)).numpy(), [1, 2, 3, 4, 5, 0, 0, 0]
    )
    long = tf.constant(np.arange(100, dtype=np.int16))
    offsets = set()
    for i in range(30):
        piece = random_crop(long, 10, tf.constant([0, i], tf.int64)).numpy()
        assert np.array_equal(piece, np.arange(piece[0], piece[0] + 10))
        offsets.add(int(piece[0]))
    assert len(offsets) > 5 and max(offsets) <= 90


def test_bad_batch_shapes_and_missing_split(tiny_data, tmp_path):
    files = record_files(tiny_data, "train")
    with pytest.raises(ConfigError, match="P >= 2"):
        pk_batches(files, ["a", "b"], speakers_per_batch=1, clips_per_speaker=2, crop_samples=100)
    with pytest.raises(ConfigError, match="only 2 speakers"):
        pk_batches(files, ["a", "b"], speakers_per_batch=4, clips_per_speaker=2, crop_samples=100)
    with pytest.raises(ConfigError, match="no train records"):
        record_files(str(tmp_path), "train")


def test_load_clips_reads_a_split_and_samples_with_a_cap(tiny_data):
    clips, speakers, ids = load_clips(tiny_data, "test")
    assert len(clips) == 16 and len(set(speakers)) == 4 and len(set(ids)) == 16
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in clips)
    few, few_spk, few_ids = load_clips(tiny_data, "test", max_clips=5, seed=1)
    assert len(few) == 5 and set(few_ids) <= set(ids)
    assert load_clips(tiny_data, "test", max_clips=5, seed=1)[2] == few_ids


def test_speed_copies_are_other_speakers_played_faster_or_slower(tiny_data):
    speakers = [client_id(s) for s in range(8)]
    files = record_files(tiny_data, "train")
    ds = pk_batches(files, speakers, speakers_per_batch=4, clips_per_speaker=3, crop_samples=4000, seed=1,
                    shuffle_buffer=32, speeds=(1.0, 0.9, 1.1))
    labels = set()
    for x, y in ds.take(12):
        groups = y.numpy().reshape(4, 3)
        assert np.all(groups == groups[:, :1]) and len(set(groups[:, 0])) == 4
        assert x.shape == (12, 4000)
        labels.update(y.numpy().tolist())
    assert labels <= set(range(24)) and min(labels) < 8 and max(labels) >= 16  # copies are speakers 8-23


def test_speed_copy_scales_the_frequency():
    rate, f0 = 16_000, 200.0
    pcm = tf.constant((10_000 * np.sin(2 * np.pi * f0 * np.arange(rate) / rate)).astype(np.int16))
    for factor in (0.9, 1.0, 1.1):
        out = speed_copy(pcm, 8000, tf.constant(factor), tf.constant([3, 4], tf.int64)).numpy().astype(float)
        assert out.shape == (8000,)
        crossings = np.sum((out[:-1] < 0) & (out[1:] >= 0))  # rising zero crossings in 0.5 s
        assert abs(crossings - f0 * factor * 0.5) <= 2
