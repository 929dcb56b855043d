"""SpeakerIndex: build -> load (memory-mapped) -> query round trip, typed results, and refused inputs."""

import numpy as np
import pytest

import speechid
from speechid.errors import ConfigError
from speechid.indexing import (
    ClipMatch,
    DimensionMismatchError,
    IndexDirError,
    ModelMismatchError,
    SpeakerIndex,
    SpeakerMatch,
    build_index,
    synthetic,
)
from speechid.indexing.store import check_model_id

from .conftest import write_embeddings


def test_public_names_resolve_lazily():
    assert speechid.SpeakerIndex is SpeakerIndex
    assert speechid.indexing.SpeakerIndex is SpeakerIndex


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_round_trip_build_load_mmap_query(tmp_path, voices, kind):
    import faiss

    x, labels = voices
    emb = write_embeddings(tmp_path / "emb", x, np.array([f"spk{i:03d}" for i in labels]))
    build_index(emb, tmp_path / "idx", kind=kind, nlist=16, nprobe=16, hnsw_m=16, threshold=speechid.config.THRESHOLD)
    idx = SpeakerIndex.load(tmp_path / "idx")  # mmap=True by default
    if kind == "ivf":
        invlists = faiss.extract_index_ivf(idx.index).invlists
        assert "OnDisk" in type(faiss.downcast_InvertedLists(invlists)).__name__  # the lists are mapped
    np.testing.assert_array_equal(np.sort(idx.locality_order()), np.arange(1200))  # every row once
    np.testing.assert_allclose(idx.vectors(), x, atol=1e-6)
    assert (idx.count, idx.dimension, idx.kind, idx.model_id) == (1200, 32, kind, "model-a")

    results = idx.query(x[[3, 500]], k=4)
    assert [r.query for r in results] == ["0", "1"]
    best = results[1].best
    assert isinstance(best, ClipMatch) and best.row == 500 and best.clip_id == "clip00500.mp3"
    assert best.distance == pytest.approx(0.0, abs=1e-3) and best.verdict == "same"
    for m in results[1].matches:  # distances are Euclidean, checked against NumPy
        assert m.distance == pytest.approx(float(np.linalg.norm(x[500] - x[m.row])), abs=1e-4)
        assert m.same == (m.distance < speechid.config.THRESHOLD)
    assert [m.rank for m in results[1].matches] == [1, 2, 3, 4]

    in_memory = SpeakerIndex.load(tmp_path / "idx", mmap=False).query(x[[3, 500]], k=4)
    assert [[m.row for m in r.matches] for r in in_memory] == [[m.row for m in r.matches] for r in results]

    spk = idx.query(x[500], k=3, by="speaker")[0]
    assert isinstance(spk.best, SpeakerMatch) and spk.best.speaker_id == f"spk{labels[500]:03d}"
    centroid = x[labels == labels[500]].mean(axis=0)
    centroid /= np.linalg.norm(centroid)
    assert spk.best.distance == pytest.approx(float(np.linalg.norm(x[500] - centroid)), abs=1e-4)
    assert spk.best.n_clips == 10
    d = spk.to_dict()
    assert d["distance"] == "euclidean" and d["matches"][0]["verdict"] in ("same", "different")


def test_threshold_decides_the_verdict(voices_index, voices):
    x, _ = voices
    idx = SpeakerIndex.load(voices_index)
    r = idx.query(x[0], k=2)[0]
    second = r.matches[1].distance
    assert idx.query(x[0], k=2, threshold=second + 1e-3)[0].matches[1].verdict == "same"
    assert idx.query(x[0], k=2, threshold=second - 1e-3)[0].matches[1].verdict == "different"


def test_k_larger_than_the_index_returns_what_exists(tmp_path):
    x, labels = synthetic.clustered_unit_vectors(2, 2, dim=8, seed=0)
    emb = write_embeddings(tmp_path / "emb", x, labels.astype(str), shards=1)
    build_index(emb, tmp_path / "idx", threshold=speechid.config.THRESHOLD)
    r = SpeakerIndex.load(tmp_path / "idx").query(x[0], k=10)[0]
    assert len(r.matches) == 4


def test_bad_vectors_and_directories_are_refused(voices_index, tmp_path):
    idx = SpeakerIndex.load(voices_index)
    with pytest.raises(DimensionMismatchError, match="dimension 16.*has dimension 32"):
        idx.query(synthetic.normalize(np.ones((2, 16))))
    with pytest.raises(speechid.errors.SpeechIdError, match="L2 norm 2.0"):
        idx.query(np.full(32, 2 / np.sqrt(32), np.float32))
    with pytest.raises(ConfigError, match="by="):
        idx.query(synthetic.normalize(np.ones(32)), by="voice")
    with pytest.raises(IndexDirError, match="index directory not found"):
        SpeakerIndex.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexDirError, match="not a speechid index"):
        SpeakerIndex.load(tmp_path / "empty")


class FakeEncoder:
    """Anything with .embed(path) can feed query_file; this one looks vectors up by file name."""

    def __init__(self, vectors, model_id):
        self.vectors = vectors
        self.config = {"model_id": model_id}

    def embed(self, path):
        return self.vectors[str(path).rsplit("/", 1)[-1]]


def test_query_file_embeds_with_the_encoder_and_checks_its_model(voices_index, voices, tmp_path):
    x, labels = voices
    idx = SpeakerIndex.load(voices_index)
    files = [tmp_path / "a.wav", tmp_path / "b.wav"]
    enc = FakeEncoder({"a.wav": x[42], "b.wav": x[900]}, "model-a")
    results = idx.query_file(files, enc, k=2, by="speaker")
    assert [r.query for r in results] == [str(f) for f in files]
    assert [r.best.speaker_id for r in results] == [f"spk{labels[42]:03d}", f"spk{labels[900]:03d}"]
    with pytest.raises(ModelMismatchError, match="model_id model-a.*model_id model-z"):
        idx.query_file(files, FakeEncoder({}, "model-z"))
    with pytest.raises(DimensionMismatchError, match="a.wav"):
        idx.query_file(files, FakeEncoder({"a.wav": x[42][:16]}, "model-a"))


def test_check_model_id_is_a_plain_function():
    check_model_id("m1", "m1")
    check_model_id("m1", None)  # an encoder that states no model_id is not second-guessed
    with pytest.raises(ModelMismatchError, match="rebuild the index"):
        check_model_id("m1", "m2", "index/x")


def test_small_batches_run_on_one_faiss_thread_and_restore_the_setting(voices_index, voices):
    import faiss

    x, _ = voices
    idx = SpeakerIndex.load(voices_index)
    seen = []

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def search(self, q, k):
            seen.append(faiss.omp_get_max_threads())
            return self.inner.search(q, k)

    before = faiss.omp_get_max_threads()
    idx.index = Spy(idx.index)
    idx.search(x[:1], 3)
    idx.search(x[:64], 3)
    assert seen == [1, before]
    assert faiss.omp_get_max_threads() == before


def test_speaker_matches_are_decided_at_the_speaker_level(tmp_path):
    """With a model's speaker-level points, a clip-vs-speaker verdict weighs the distance by the speaker's own
    spread: a new clip of a LOOSE voice, far from its centroid, is "same"; a clip of another voice just beside
    a TIGHT voice is "different", though it is nearer that centroid. Without them (or with --threshold), the
    Euclidean distance to the centroid decides, and the meaning says so."""
    from speechid.model.calibration import measure
    from speechid.separation import Groups, spreads

    rng = np.random.default_rng(3)
    dim = 32
    dev, dev_voice = synthetic.clustered_unit_vectors(30, 12, dim=dim, spread=(0.2, 0.8), seed=11)
    ops = measure(dev, dev_voice, group_sizes=(1, 2, 5), seed=0)
    c = synthetic.speaker_centres(3, dim, rng=rng)
    c[1] = synthetic.normalize(c[0] + 0.5 * synthetic.normalize(rng.standard_normal(dim)))  # beside the tight one
    x, lab = synthetic.clips_around(c, [20, 1, 20], np.array([0.15, 0.15, 0.9]), rng)  # tight, stranger, loose
    loose_new, _ = synthetic.clips_around(c[2:], [1], 0.9, rng)
    stranger = x[lab == 1]
    keep = lab != 1
    emb = write_embeddings(tmp_path / "emb", x[keep], np.array(["tight", "loose"])[lab[keep] // 2])
    build_index(emb, tmp_path / "cal", operating_points=ops, operating_points_model_id="model-a")
    idx = SpeakerIndex.load(tmp_path / "cal")

    loose = {m.speaker_id: m for m in idx.query(loose_new, k=2, by="speaker")[0].matches}["loose"]
    near = {m.speaker_id: m for m in idx.query(stranger, k=2, by="speaker")[0].matches}["tight"]
    assert near.distance < loose.distance  # the centroid distance alone would judge the wrong way round
    assert loose.verdict == "same" and near.verdict == "different"
    assert loose.threshold == ops.speaker_level(1).point(ops.default).threshold
    assert "separation" in loose.explanation and "speaker level" in loose.explanation
    g = Groups.of_labels(x[keep], lab[keep] // 2)
    mean = x[lab == 2].astype(np.float64).mean(0)
    w = spreads(g, g.pooled_spread())[1]  # the loose voice's own spread
    assert loose.separation == pytest.approx(np.linalg.norm(loose_new[0] - mean) / np.sqrt(w * (1 + 1 / 20)), rel=1e-4)
    assert loose.to_dict()["separation"] == pytest.approx(loose.separation, abs=1e-5)

    given = idx.query(stranger, k=2, by="speaker", threshold=0.83)[0]
    assert given.matches[0].separation is None and "centroid" in given.meaning
    build_index(emb, tmp_path / "bare", threshold=0.83)
    bare = SpeakerIndex.load(tmp_path / "bare").query(stranger, k=2, by="speaker")[0]
    assert bare.matches[0].separation is None and "no speaker-level operating points" in bare.meaning
