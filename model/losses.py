"""Triplet loss with semi-hard negative mining (FaceNet, Schroff et al. 2015), in plain TensorFlow.

tensorflow-addons' ``TripletSemiHardLoss`` (what the seed trained with) is end-of-life and no longer
imports; this is the same definition, written over a [B, B, B] mask instead of tiled matrices, which is
clearer and fast enough for the P x K batches we train on (B = 128 -> 2M booleans).
"""

from __future__ import annotations

import tensorflow as tf


def pairwise_distances(embeddings: tf.Tensor, squared: bool = False) -> tf.Tensor:
    """[B, D] -> [B, B] Euclidean (or squared) distances, exactly 0 on the diagonal.

    The sqrt is taken of max(d2, 0) + 1e-16 and masked back to 0 where d2 <= 0, so identical rows give a
    zero distance with a finite (zero) gradient instead of NaN.
    """
    sq = tf.reduce_sum(tf.square(embeddings), axis=1)
    d2 = sq[:, None] - 2.0 * tf.matmul(embeddings, embeddings, transpose_b=True) + sq[None, :]
    d2 = tf.maximum(d2, 0.0)
    d2 = d2 * (1.0 - tf.eye(tf.shape(embeddings)[0], dtype=d2.dtype))
    if squared:
        return d2
    zero = tf.cast(d2 <= 0.0, d2.dtype)
    return tf.sqrt(d2 + zero * 1e-16) * (1.0 - zero)


def triplet_semihard_loss(
    labels: tf.Tensor, embeddings: tf.Tensor, margin: float = 1.0, squared: bool = False
) -> tf.Tensor:
    r"""Mean triplet loss over all anchor-positive pairs of the batch, with semi-hard negatives.

    With d the Euclidean distance (squared if ``squared``), for every ordered pair (a, p), a != p, of the
    same label, and N(a) the batch items whose label differs from a's:

        n*(a, p) = argmin_{n in N(a), d(a,n) > d(a,p)} d(a, n)    the semi-hard negative, if one exists,
                 = argmax_{n in N(a)} d(a, n)                       otherwise (the classic fallback);

        L = 1/|P| * sum_{(a,p) in P} max(0, margin + d(a, p) - d(a, n*(a, p)))

    where P is the set of anchor-positive pairs. An anchor with no negative in the batch contributes
    margin + d(a, p) (its fallback distance is 0), as in tensorflow-addons. Computed in float32 whatever
    the embeddings' dtype (mixed precision). Returns 0 when the batch has no positive pair.
    """
    labels = tf.reshape(labels, [-1])
    emb = tf.cast(embeddings, tf.float32)
    d = pairwise_distances(emb, squared=squared)
    n = tf.shape(labels)[0]
    same = tf.equal(labels[:, None], labels[None, :])
    positive = tf.logical_and(same, tf.logical_not(tf.eye(n, dtype=tf.bool)))  # [a, p]
    negative = tf.logical_not(same)  # [a, n]

    # semi[a, p, n]: n is a negative of a farther from a than p is.
    semi = tf.logical_and(negative[:, None, :], d[:, None, :] > d[:, :, None])
    big = tf.reduce_max(d) + 1.0
    nearest_semi = tf.reduce_min(tf.where(semi, d[:, None, :], big), axis=2)  # [a, p]
    farthest = tf.reduce_max(tf.where(negative, d, 0.0), axis=1)  # [a]
    has_semi = tf.reduce_any(semi, axis=2)
    neg_dist = tf.where(has_semi, nearest_semi, farthest[:, None])

    losses = tf.maximum(margin + d - neg_dist, 0.0)
    mask = tf.cast(positive, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(losses * mask), tf.reduce_sum(mask))


def aam_softmax_loss(
    labels: tf.Tensor, embeddings: tf.Tensor, centres: tf.Tensor, scale: float = 30.0, margin: float = 0.2
) -> tf.Tensor:
    r"""Additive angular margin softmax ("ArcFace", Deng et al. 2019) over the training speakers.

    With e the unit embedding, w_j the unit column j of ``centres`` ([D, C], one per training speaker),
    cos t_j = <e, w_j>, and y the label:

        logit_j = s * cos t_j                 for j != y
        logit_y = s * cos(t_y + m)            when t_y + m < pi, else s * (cos t_y - m sin m)
        L = mean over the batch of  -log softmax(logit)_y

    The fallback keeps the target logit decreasing in t_y past pi - m (the usual ArcFace form). Computed
    in float32 whatever the embeddings' dtype.
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    emb = tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=1)
    w = tf.math.l2_normalize(tf.cast(centres, tf.float32), axis=0)
    cos = tf.clip_by_value(tf.matmul(emb, w), -1.0 + 1e-7, 1.0 - 1e-7)
    sin = tf.sqrt(1.0 - tf.square(cos))
    margin = tf.constant(margin, tf.float32)
    cos_m, sin_m = tf.cos(margin), tf.sin(margin)
    shifted = cos * cos_m - sin * sin_m  # cos(t + m)
    shifted = tf.where(cos > tf.cos(3.141592653589793 - margin), shifted, cos - margin * sin_m)
    target = tf.one_hot(labels, tf.shape(w)[1]) > 0.5
    logits = scale * tf.where(target, shifted, cos)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
