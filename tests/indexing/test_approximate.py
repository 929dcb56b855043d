"""Every approximate answer against the exact one (IndexFlat) on seeded clustered unit vectors, and the
threshold conversion between L2 and inner-product indexes."""

import faiss
import numpy as np
import pytest
from faiss.contrib.evaluation import range_PR

from speechid import config
from speechid.indexing import graph, synthetic
from speechid.indexing.build import make_index
from speechid.indexing.store import search_radius, to_euclidean

DIM = 32


@pytest.fixture(scope="module")
def data():
    """6000 database clips of 300 voices, plus 300 fresh query clips of the same voices."""
    rng = np.random.default_rng(11)
    centres = synthetic.speaker_centres(300, DIM, rng=rng)
    spreads = rng.uniform(0.4, 0.65, size=300).astype(np.float32)
    xb, _ = synthetic.clips_around(centres, np.full(300, 20), spreads, rng)
    xq, _ = synthetic.clips_around(centres, np.ones(300, np.int64), spreads, rng)
    return xb, xq


def _built(kind, xb, metric="l2"):
    index, params = make_index(kind, DIM, metric, len(xb), nlist=64, nprobe=8, hnsw_m=16, ef_search=64)
    if not index.is_trained:
        index.train(xb)
    index.add(xb)
    if kind == "ivf":
        index.nprobe = params["nprobe"]
    if kind == "hnsw":
        index.hnsw.efSearch = params["ef_search"]
    return index


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_knn_recall_at_1_against_exact(data, kind):
    xb, xq = data
    _, exact = faiss.knn(xq, xb, 1)
    _, approx = _built(kind, xb).search(xq, 1)
    recall = float((approx[:, 0] == exact[:, 0]).mean())
    assert recall >= 0.95, recall


@pytest.mark.parametrize("kind,min_recall", [("ivf", 0.95), ("hnsw", 0.9)])
def test_range_search_pair_recall_against_exact(data, kind, min_recall):
    xb, _ = data
    radius = search_radius("l2", config.THRESHOLD)
    flat = faiss.IndexFlatL2(DIM)
    flat.add(xb)
    queries = xb[:1500]
    lims_ref, d_ref, i_ref = flat.range_search(queries, radius)
    assert lims_ref[-1] > 10 * len(queries)  # the voices really do have neighbours under the threshold
    lims, d, i = graph.range_search(_built(kind, xb), [queries[:700], queries[700:]], radius)
    precision, recall = range_PR(lims_ref, i_ref, lims, i)
    assert precision == pytest.approx(1.0)  # Flat storage: whatever is returned is truly under the threshold
    assert recall >= min_recall, recall


def test_l2_and_inner_product_thresholds_select_the_same_pairs(data):
    xb, _ = data
    ip, l2 = faiss.IndexFlatIP(DIM), faiss.IndexFlatL2(DIM)
    ip.add(xb)
    l2.add(xb)
    g_l2 = graph.range_graph(l2, graph.row_blocks(xb, 3000), "l2", config.THRESHOLD)
    shuffled = np.random.default_rng(0).permutation(len(xb))  # query order and blocking do not matter
    g_ip = graph.range_graph(ip, graph.row_blocks(xb, 2500, shuffled), "ip", config.THRESHOLD)
    assert g_l2.edges > 10_000
    np.testing.assert_array_equal(g_l2.keys(), g_ip.keys())
    np.testing.assert_allclose(g_l2.distance, g_ip.distance, atol=1e-4)
    assert g_l2.distance.max() < config.THRESHOLD
    brute = np.linalg.norm(xb[g_l2.u] - xb[g_l2.v], axis=1)
    np.testing.assert_allclose(g_l2.distance, brute, atol=1e-4)


def test_radius_and_distance_conversions_use_the_config_converters():
    assert search_radius("l2", 0.83) == pytest.approx(0.6889)
    assert search_radius("ip", 0.83) == pytest.approx(config.l2_to_cosine(0.83)) == pytest.approx(0.65555)
    for cos in (0.2, 0.6555, 0.99):
        assert to_euclidean("ip", np.array([cos]))[0] == pytest.approx(config.cosine_to_l2(cos), abs=1e-6)
    assert to_euclidean("l2", np.array([0.6889]))[0] == pytest.approx(0.83)


def test_neighbour_cap_keeps_each_rows_nearest(data):
    xb, _ = data
    flat = faiss.IndexFlatL2(DIM)
    flat.add(xb[:400])
    full = graph.range_graph(flat, graph.row_blocks(xb[:400]), "l2", config.THRESHOLD)
    capped = graph.range_graph(flat, graph.row_blocks(xb[:400]), "l2", config.THRESHOLD, max_neighbors=3)
    assert 0 < capped.edges < full.edges
    src, dst, dist = capped.neighbours()
    full_src, _, full_dist = full.neighbours()
    for row in range(0, 400, 37):  # each row's 3 nearest are kept (possibly more, found from the other end)
        nearest = np.sort(full_dist[full_src == row])[:3]
        assert np.all(np.isin(nearest, dist[src == row]))
