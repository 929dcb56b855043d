"""Log-mel features in TensorFlow, the one definition shared by the model and the prep pipeline's
tf.Transform analysis (so the normalisation statistics are computed on exactly what the network sees).

25 ms Hann window, 10 ms hop, FFT size the next power of two, mel bins configurable (default 40),
log(mel + 1e-6). Works on a waveform ``[samples]`` or a batch ``[batch, samples]`` and returns
``[..., frames, n_mels]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from speechid.config import SAMPLE_RATE

LOG_OFFSET = 1e-6


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = SAMPLE_RATE
    n_mels: int = 40
    window_s: float = 0.025
    hop_s: float = 0.010
    fmin: float = 20.0
    fmax: float | None = None  # None: Nyquist

    @property
    def frame_length(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def frame_step(self) -> int:
        return int(round(self.hop_s * self.sample_rate))

    @property
    def fft_length(self) -> int:
        n = 1
        while n < self.frame_length:
            n *= 2
        return n

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples (no padding at the end)."""
        if num_samples < self.frame_length:
            return 0
        return 1 + (num_samples - self.frame_length) // self.frame_step

    def to_dict(self) -> dict:
        return asdict(self)


def log_mel(waveform, config: FeatureConfig = FeatureConfig()):
    """float32 waveform ``[..., samples]`` at ``config.sample_rate`` -> log-mel ``[..., frames, n_mels]``."""
    import tensorflow as tf

    waveform = tf.convert_to_tensor(waveform, dtype=tf.float32)
    stft = tf.signal.stft(
        waveform,
        frame_length=config.frame_length,
        frame_step=config.frame_step,
        fft_length=config.fft_length,
        window_fn=tf.signal.hann_window,
        pad_end=False,
    )
    power = tf.math.square(tf.abs(stft))
    mel_matrix = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=config.n_mels,
        num_spectrogram_bins=config.fft_length // 2 + 1,
        sample_rate=config.sample_rate,
        lower_edge_hertz=config.fmin,
        upper_edge_hertz=config.fmax or config.sample_rate / 2.0,
    )
    mel = tf.tensordot(power, mel_matrix, axes=1)
    mel.set_shape(power.shape[:-1].concatenate([config.n_mels]))
    return tf.math.log(mel + LOG_OFFSET)
