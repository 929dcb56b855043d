"""The inference windowing shared by the Encoder, the evaluation and the embed pipeline."""

import numpy as np
import pytest

from speechid.model.windows import embed_clips, pool_embeddings, window_starts, window_waveform

RATE = 100  # small numbers keep the expected windows readable: window 3 s = 300, hop 1.5 s = 150


def test_short_clip_is_zero_padded_to_one_window():
    audio = np.arange(1, 121, dtype=np.float32)
    w = window_waveform(audio, RATE, 3.0, 1.5)
    assert w.shape == (1, 300)
    np.testing.assert_array_equal(w[0, :120], audio)
    assert not w[0, 120:].any()


def test_exact_fit_and_tail_window_flush_with_the_end():
    assert window_starts(300, 300, 150) == [0]
    assert window_starts(600, 300, 150) == [0, 150, 300]
    # 700 samples: 0, 150, 300 fit; the tail 600..700 gets one more window ending at the last sample.
    assert window_starts(700, 300, 150) == [0, 150, 300, 400]
    audio = np.arange(700, dtype=np.float32)
    w = window_waveform(audio, RATE, 3.0, 1.5)
    assert w.shape == (4, 300)
    np.testing.assert_array_equal(w[-1], audio[400:])
    covered = np.zeros(700, bool)
    for s in window_starts(700, 300, 150):
        covered[s : s + 300] = True
    assert covered.all()


def test_pool_is_mean_then_l2():
    emb = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    np.testing.assert_allclose(pool_embeddings(emb), [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)
    with pytest.raises(ValueError):
        pool_embeddings(np.zeros((0, 4)))


def test_embed_clips_batches_without_mixing_clips():
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(int(n)).astype(np.float32) for n in rng.integers(50, 1000, size=9)]
    proj = rng.standard_normal((300, 5)).astype(np.float32)
    calls = []

    def predict(batch):
        calls.append(len(batch))
        return batch @ proj

    got = embed_clips(predict, clips, RATE, 3.0, 1.5, batch_windows=4)
    want = np.stack([pool_embeddings(window_waveform(c, RATE, 3.0, 1.5) @ proj) for c in clips])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert max(calls) <= 4
