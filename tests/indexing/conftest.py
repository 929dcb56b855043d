"""Factories for indexing tests: seeded clustered unit vectors written as embeddings Parquet shards."""

import os

import numpy as np
import pytest

from speechid import embedding_table as et
from speechid.indexing import synthetic


def write_embeddings(folder, x, speakers, model_id="model-a", shards=2, clip_prefix="clip"):
    """Write ``x`` (unit rows) and their speaker ids as ``shards`` part files; returns the folder."""
    n = len(x)
    bounds = np.linspace(0, n, shards + 1).astype(int)
    for s in range(shards):
        a, b = bounds[s], bounds[s + 1]
        et.write_table(os.path.join(folder, et.part_name(s)), {
            "clip_id": [f"{clip_prefix}{i:05d}.mp3" for i in range(a, b)],
            "source": "cv-corpus-synth-en.tar.gz",
            "speaker_id": list(speakers[a:b]),
            "split": "train",
            "duration_s": np.full(b - a, 3.5, np.float32),
            "n_windows": np.full(b - a, 2, np.int32),
            "embedding": x[a:b],
            "model_id": model_id,
        })
    return str(folder)


@pytest.fixture(scope="session")
def voices():
    """120 voices x 10 clips in 32-d: (vectors, true speaker index per row)."""
    return synthetic.clustered_unit_vectors(120, 10, dim=32, seed=7)


@pytest.fixture(scope="session")
def voices_index(tmp_path_factory, voices):
    """A flat index over ``voices`` with speaker ids spk000..; returns its directory."""
    from speechid.indexing import build_index

    x, labels = voices
    root = tmp_path_factory.mktemp("voices")
    emb = write_embeddings(root / "emb", x, np.array([f"spk{i:03d}" for i in labels]))
    build_index(emb, root / "index", kind="flat", threshold=0.83)  # uncalibrated: explicit
    return str(root / "index")
