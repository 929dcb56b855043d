"""Shared test setup: Keras 2 for TF, quiet logs, and small audio factories with deterministic content."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def tone(seconds: float = 1.0, rate: int = 16_000, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    """A harmonic tone, float32 mono."""
    t = np.arange(int(seconds * rate)) / rate
    x = sum(amp / k * np.sin(2 * np.pi * freq * k * t) for k in (1, 2, 3))
    return x.astype(np.float32)


@pytest.fixture
def make_tone():
    return tone
