"""Clip clusters that hold one voice: the client_ids' voices after merges, less the clips that are not theirs.

``clip_clusters`` places every clip by the speaker-level decisions of ``speechid dedup``:

* a clip of a client_id stays with its id's merged group (``graph.separation_linkage``: ids of one voice
  merged), unless it is flagged as not its id's voice (``speechid.indexing.mislabels``);
* a flagged clip, and a clip without a client_id, joins the merged group of the id it resembles (its
  separation from that id under the "same" point of ``query --by speaker``);
* the clips left (flagged or unlabelled, resembling no id) are clustered among themselves by average
  linkage at the clip threshold on the range graph (``graph.average_linkage``): with no id to go by, that
  is the rule there is. An index with no client_ids at all is clustered by it alone.

Why not agglomerate the clips themselves by separation: the separation of two groups of one voice is about
1 when they are RANDOM halves of it (an id's clips, a calibration trial), but agglomeration builds groups
that are not random: it splits a voice's cloud of clips along its spread, and the two halves' means then
sit apart by a share of that spread, so their separation grows like sqrt(n), as between two voices. On
seeded stand-ins for the demo's embeddings (100 voices of 24 clips, 16-32 d, operating points measured on
10 other voices), reciprocal-best separation agglomeration stopped at the calibrated merge point, or at
frr_1%, reached precision 0.73-0.999 at recall 0.07-0.52: voices left in halves and quarters. The ids are
random samples of their voices, so their separations mean what calibration measured.

The label-free average linkage over all clips is kept beside (``linkage`` in ``clips.parquet``) to compare.
On ``make demo`` (seed 0: 8 aliases, 24 mislabels planted): these clusters precision 0.997, recall 0.992;
the label-free average linkage 0.577, 0.893.
"""

from __future__ import annotations

import numpy as np

from speechid.indexing import graph as g

PLACEMENTS = ("id", "resembles", "linkage")  # why a clip is in its cluster (clips.parquet's ``placed_by``)


def linkage_clusters(vectors: np.ndarray, graph: g.RangeGraph, threshold: float,
                     rows: np.ndarray | None = None) -> np.ndarray:
    """Average linkage at the clip ``threshold`` over the graph's edges among ``rows`` (default every row):
    a label per row of ``rows`` (0..k-1, in order of first row)."""
    n = graph.n
    rows = np.arange(n) if rows is None else np.asarray(rows, np.int64)
    local = np.full(n, -1, np.int64)
    local[rows] = np.arange(rows.size)
    keep = (local[graph.u] >= 0) & (local[graph.v] >= 0)
    if not rows.size:
        return np.zeros(0, np.int64)
    return g.average_linkage(np.asarray(vectors, np.float32)[rows], np.ones(rows.size), local[graph.u[keep]],
                             local[graph.v[keep]], float(threshold),
                             sq_distance=np.square(graph.distance[keep], dtype=np.float64), copy=False)


def clip_clusters(vectors: np.ndarray, graph: g.RangeGraph, threshold: float, codes: np.ndarray,
                  groups: np.ndarray, flagged: np.ndarray, resembles: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(cluster of every clip, 0..k-1 in order of first row; index into ``PLACEMENTS`` of why).

    ``codes``: each clip's client_id code (-1: none); ``groups``: each code's merged group; ``flagged``: the
    clips that are not their id's voice; ``resembles``: the code of the id each clip resembles (-1: none)."""
    n = len(codes)
    label = np.full(n, -1, np.int64)
    placed = np.full(n, PLACEMENTS.index("linkage"), np.int8)
    own = (codes >= 0) & ~np.asarray(flagged, bool)
    label[own] = groups[codes[own]]
    placed[own] = PLACEMENTS.index("id")
    moved = ~own & (resembles >= 0)
    label[moved] = groups[resembles[moved]]
    placed[moved] = PLACEMENTS.index("resembles")
    rest = np.flatnonzero(label < 0)
    if rest.size:
        label[rest] = (groups.max() + 1 if groups.size else 0) + linkage_clusters(vectors, graph, threshold, rest)
    _, first, inverse = np.unique(label, return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse.reshape(-1)], placed


def cluster_stats(labels: np.ndarray, linkage: np.ndarray, single: np.ndarray, placed: np.ndarray) -> dict:
    """The counts summary.json keeps: clusters of 2+ clips, clips in them, the largest; the same for the
    label-free average linkage and for single linkage (connected components), to compare."""
    def sizes(lab):
        return np.bincount(lab) if lab.size else np.zeros(1, np.int64)

    s, a, c = sizes(labels), sizes(linkage), sizes(single)
    return {
        "clip_clusters": int((s > 1).sum()), "clips_in_clusters": int(s[s > 1].sum()),
        "largest_cluster": int(s.max()),
        "clips_placed_by": {p: int((placed == i).sum()) for i, p in enumerate(PLACEMENTS)},
        "linkage_clusters": int((a > 1).sum()), "largest_linkage_cluster": int(a.max()),
        "single_linkage_clusters": int((c > 1).sum()), "largest_single_linkage_cluster": int(c.max()),
    }
