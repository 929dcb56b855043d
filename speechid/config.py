"""The one place that defines the model rate and the "same person" distance threshold.

Embeddings are L2-normalised, so for unit vectors a and b the three common scores are tied:
    squared L2 = |a - b|^2 = 2 - 2 cos(a, b),   L2 = sqrt(2 - 2 cos).
"Same person" means Euclidean (L2) distance < threshold (the rule itself: ``speechid.operating_points.is_same``);
THRESHOLD is the seed's, a model's own comes from its operating points. The helpers below convert any
threshold they are given into the other forms; none of them defaults to this one.
"""

import math

SAMPLE_RATE = 16_000
THRESHOLD = 0.83  # Euclidean distance between unit embeddings (the SpeechIdentity setting)


def l2_to_squared(threshold: float) -> float:
    """Euclidean threshold -> squared Euclidean (what FAISS L2 indexes return)."""
    return float(threshold) ** 2


def l2_to_cosine(threshold: float) -> float:
    """Euclidean threshold -> cosine similarity (what FAISS inner-product indexes return on unit vectors)."""
    return 1.0 - float(threshold) ** 2 / 2.0


def cosine_to_l2(cosine: float) -> float:
    return math.sqrt(max(0.0, 2.0 - 2.0 * float(cosine)))
