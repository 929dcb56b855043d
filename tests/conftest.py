"""Shared test setup: Keras 2 for TF, quiet logs, and small audio factories with deterministic content."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# speechid records its runs under XDG_STATE_HOME (speechid.outputs.runs_dir): tests keep theirs out of the
# user's home, in one folder per test session.
import tempfile

os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="speechid-test-state-")

import numpy as np
import pytest


def tone(seconds: float = 1.0, rate: int = 16_000, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    """A harmonic tone that rises and falls 4 times a second, float32 mono: speech to the voice-activity
    check (``speechid.audio.speech_span``), which trims none of it (it is loud at both ends or within the
    padding). A steady tone would be refused as hum."""
    t = np.arange(int(seconds * rate)) / rate
    x = sum(amp / k * np.sin(2 * np.pi * freq * k * t) for k in (1, 2, 3))
    return (x * (1.0 + 0.8 * np.sin(2 * np.pi * 4.0 * t)) / 1.8).astype(np.float32)


@pytest.fixture
def make_tone():
    return tone


def tree_digest(root) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root`` (symlinks by their target text): two equal
    digests mean nothing in the tree was added, removed or changed."""
    import hashlib

    root = str(root)
    digest = {}
    for folder, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = os.path.join(folder, name)
            data = os.readlink(path).encode() if os.path.islink(path) else open(path, "rb").read()
            digest[os.path.relpath(path, root)] = hashlib.sha256(data).hexdigest()
        for d in dirs:
            if not os.listdir(os.path.join(folder, d)):
                digest[os.path.relpath(os.path.join(folder, d), root) + "/"] = "empty folder"
    return digest


def run_cli(args: list[str], capsys) -> tuple[int, list[str], str]:
    """``speechid ARGS`` in this process: (exit code, non-blank stderr lines, stdout)."""
    from speechid.app.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return e.value.code, [ln for ln in captured.err.splitlines() if ln.strip()], captured.out
