"""FAISS index build/load, deduplication (clip and speaker level) and nearest-match queries.

    speechid index --embeddings DIR --output INDEX      -> build_index
    speechid dedup --index INDEX --output DIR                  -> dedup
    speechid query --index INDEX --model MODEL clip.mp3        -> SpeakerIndex.load(INDEX).query_file

Distances are Euclidean between unit embeddings everywhere. The "same person" threshold is the one given,
else the index's: a threshold set at build, else the model's operating points, which the index carries in
meta.json (``speechid.operating_points.clip_threshold``).
"""

from speechid.indexing.build import IndexSummary, build_index, choose_kind
from speechid.indexing.dedup import DedupResult, dedup, evaluate_dedup
from speechid.indexing.query import ClipMatch, QueryResult, SpeakerIndex, SpeakerMatch
from speechid.indexing.scores import PairScores, pairwise_scores, score_groups
from speechid.indexing.store import DimensionMismatchError, IndexDirError, ModelMismatchError, check_model_id

__all__ = [
    "ClipMatch",
    "DedupResult",
    "DimensionMismatchError",
    "IndexDirError",
    "IndexSummary",
    "ModelMismatchError",
    "PairScores",
    "QueryResult",
    "SpeakerIndex",
    "SpeakerMatch",
    "build_index",
    "check_model_id",
    "choose_kind",
    "dedup",
    "evaluate_dedup",
    "pairwise_scores",
    "score_groups",
]
