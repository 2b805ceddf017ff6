"""Contrastive losses on embeddings, numerically equal to sentence-transformers' (fp32 logits, stable log-sum-exp).

Pure functions of ``[batch, dim]`` embeddings (pooled, not necessarily normalised: the cosine
similarity normalises them, as sentence-transformers' ``cos_sim`` does). Under ``jax.jit`` over
global arrays the batch is the global batch, whatever the mesh: every query sees every candidate.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from gte_jax.models.pooling import l2_normalize

DIRECTIONS = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
# GTE's improved contrastive loss (Li et al. 2023): one softmax over all four directions.
GTE_DIRECTIONS = DIRECTIONS

_HIGHEST = jax.lax.Precision.HIGHEST


def cos_sim(a: jax.Array, b: jax.Array) -> jax.Array:
    """``[n, m]`` cosine similarities of the rows of ``a`` ``[n, D]`` and ``b`` ``[m, D]``, in float32."""
    return jnp.einsum("ND,MD->NM", l2_normalize(a), l2_normalize(b), precision=_HIGHEST)


def pairwise_cos_sim(a: jax.Array, b: jax.Array) -> jax.Array:
    """``[n]`` cosine similarities of ``a[i]`` and ``b[i]``, in float32."""
    return jnp.sum(l2_normalize(a) * l2_normalize(b), axis=-1)


def cosent(a: jax.Array, b: jax.Array, labels: jax.Array, *, scale: float = 20.0) -> jax.Array:
    """CoSENT loss (sentence-transformers' ``CoSENTLoss``): pairs ranked by cosine as their labels rank them.

    ``log(1 + sum exp(scale * (cos(k, l) - cos(i, j))))`` over all pairs of pairs whose label of ``(i, j)`` is
    strictly above that of ``(k, l)``; computed as sentence-transformers does, sorted by label with a suffix
    log-sum-exp, in O(n log n) without the quadratic matrix.

    Args:
        a, b: ``[batch, dim]`` embeddings of the first and second texts.
        labels: ``[batch]`` similarity scores (any scale: only their order matters).
        scale: inverse temperature.

    Returns:
        The scalar loss (a sum over the batch's pairs of pairs, not a mean), float32.
    """
    if labels.shape != a.shape[:1]:
        raise ValueError(f"cosent expects one label per pair ({a.shape[0]}), got labels of shape {labels.shape}.")
    scores = pairwise_cos_sim(a, b) * scale  # [B]
    labels = labels.astype(jnp.int32) if labels.dtype == jnp.bool_ else labels
    order = jnp.argsort(labels, stable=True)
    labels, scores = labels[order], scores[order]
    higher = jnp.searchsorted(labels, labels, side="right")  # first index of a strictly higher label
    suffix = jax.lax.cumlogsumexp(-scores, reverse=True)  # suffix[i] = logsumexp(-scores[i:])
    suffix = jnp.concatenate([suffix, jnp.full((1,), -jnp.inf, scores.dtype)])
    terms = scores + suffix[higher]  # log sum_{label_j > label_i} exp(s_i - s_j); -inf where none
    return jax.nn.logsumexp(jnp.concatenate([jnp.zeros((1,), scores.dtype), terms]))


def infonce(
    q: jax.Array,
    d: jax.Array,
    *negatives: jax.Array,
    scale: float = 20.0,
    directions: Sequence[str] = ("query_to_doc",),
) -> jax.Array:
    """In-batch-negatives InfoNCE (sentence-transformers' ``MultipleNegativesRankingLoss``, joint partition).

    For query ``i`` the positive is ``d[i]``; the candidates are every document of the batch, hard negatives
    included (``query_to_doc``), and optionally every other query (``query_to_query``), every query seen from
    document ``i`` (``doc_to_query``) and every document not belonging to query ``i`` (``doc_to_doc``), all in
    one softmax. GTE's loss is all four directions (:data:`GTE_DIRECTIONS`).

    Args:
        q: ``[batch, dim]`` query (anchor) embeddings.
        d: ``[batch, dim]`` positive document embeddings.
        *negatives: ``[batch, dim]`` each: a hard negative per query (column after column).
        scale: inverse temperature (20 is a temperature of 0.05).
        directions: which similarity terms enter the softmax; must include ``query_to_doc``.

    Returns:
        The scalar mean loss over queries, float32.
    """
    unknown = set(directions) - set(DIRECTIONS)
    if unknown or "query_to_doc" not in directions:
        raise ValueError(
            f"directions {tuple(directions)} must include 'query_to_doc' and only name {DIRECTIONS}; "
            "GTE's loss uses all four."
        )
    B = q.shape[0]
    docs = jnp.concatenate([d, *negatives], axis=0)  # [B*(1+n), D]
    same = jnp.eye(B, dtype=bool)  # [B, B]
    blocks = [cos_sim(q, docs)]  # [B, B*(1+n)]
    if "query_to_query" in directions:
        blocks.append(jnp.where(same, -jnp.inf, cos_sim(q, q)))  # [B, B], a query is no candidate for itself
    if "doc_to_query" in directions:
        blocks.append(cos_sim(d, q))  # [B, B]
    if "doc_to_doc" in directions:
        own = jnp.tile(same, (1, 1 + len(negatives)))  # [B, B*(1+n)]: the query's own positive and negatives
        blocks.append(jnp.where(own, -jnp.inf, cos_sim(d, docs)))
    scores = jnp.concatenate(blocks, axis=1) * scale
    positive = jnp.diagonal(blocks[0][:, :B]) * scale  # [B]
    return jnp.mean(jax.nn.logsumexp(scores, axis=1) - positive)


def binary_cross_entropy(logits: jax.Array, labels: jax.Array, *, pos_weight: float | None = None) -> jax.Array:
    """A cross-encoder's BCE (sentence-transformers' cross-encoder ``BinaryCrossEntropyLoss``: ``BCEWithLogitsLoss``
    on one logit per pair, the mean over the batch).

    Args:
        logits: ``[batch]`` or ``[batch, 1]`` raw scores (no activation).
        labels: ``[batch]`` targets from 0 to 1 (hard 0/1 or soft, e.g. a teacher's probability).
        pos_weight: weight of the positive term (torch's ``pos_weight``), None for 1.

    Returns:
        The scalar mean loss, float32.
    """
    x = logits.reshape(-1).astype(jnp.float32)
    y = labels.reshape(-1).astype(jnp.float32)
    if x.shape != y.shape:
        raise ValueError(f"binary_cross_entropy expects one label per logit ({x.shape[0]}), got {y.shape[0]}.")
    # log(sigmoid(x)) and log(1 - sigmoid(x)) through softplus: finite for any logit, as torch computes them.
    positive = jax.nn.softplus(-x)  # -log(sigmoid(x))
    negative = jax.nn.softplus(x)  # -log(1 - sigmoid(x))
    weight = 1.0 if pos_weight is None else pos_weight
    return jnp.mean(weight * y * positive + (1.0 - y) * negative)


def lambda_loss(
    logits: jax.Array,
    labels: jax.Array,
    valid: jax.Array,
    *,
    sigma: float = 1.0,
    mu: float = 10.0,
    eps: float = 1e-10,
) -> jax.Array:
    """A cross-encoder's listwise LambdaLoss (sentence-transformers' cross-encoder ``LambdaLoss`` with its defaults:
    the NDCG-Loss2++ weighting, all documents (``k=None``), ``reduction_log="binary"``, no activation).

    Documents are sorted by score; every pair ``(i, j)`` of a query's documents with ``label_i > label_j`` adds
    ``-w_ij * log2(sigmoid(sigma * (s_i - s_j)))``, its weight ``mu * NDCGLoss2 + LambdaRank`` from the gains
    ``(2**label - 1) / maxDCG`` (negative labels gain 0) and the rank discounts; the loss is the mean over those
    pairs of the whole batch.

    Args:
        logits: ``[queries, documents]`` raw scores.
        labels: ``[queries, documents]`` relevance (any value where ``valid`` is False).
        valid: ``[queries, documents]`` bool: False for the padding of queries with fewer documents.
        sigma: the score difference's weight in the sigmoid.
        mu: NDCG-Loss2's weight against LambdaRank's.
        eps: the smallest ideal DCG (a query with no relevant document).

    Returns:
        The scalar loss, float32.
    """
    if not logits.shape == labels.shape == valid.shape or logits.ndim != 2:
        raise ValueError(
            f"lambda_loss expects [queries, documents] logits, labels and mask of one shape; got {logits.shape}, "
            f"{labels.shape} and {valid.shape}."
        )
    D = logits.shape[1]
    # Padding as sentence-transformers pads: the lowest scores, and labels of -inf that no pair survives.
    scores = jnp.where(valid, logits.astype(jnp.float32), -1e16)
    truth = jnp.where(valid, labels.astype(jnp.float32), -jnp.inf)
    order = jnp.argsort(-scores, axis=-1, stable=True)
    scores_sorted = jnp.take_along_axis(scores, order, axis=-1)
    truth_by_scores = jnp.take_along_axis(truth, order, axis=-1)
    ideal = -jnp.sort(-truth, axis=-1)
    true_diffs = truth_by_scores[:, :, None] - truth_by_scores[:, None, :]
    pairs = jnp.isfinite(true_diffs) & (true_diffs > 0)

    # The weights depend on the labels and on the order alone: no gradient flows through them.
    discount = jnp.log2(1.0 + jnp.arange(1, D + 1, dtype=jnp.float32))  # [D]
    max_dcg = jnp.maximum(jnp.sum((2.0 ** jnp.maximum(ideal, 0.0) - 1.0) / discount, axis=-1), eps)
    gain = (2.0 ** jnp.maximum(truth_by_scores, 0.0) - 1.0) / max_dcg[:, None]
    gain_diffs = jnp.abs(gain[:, :, None] - gain[:, None, :])
    positions = jnp.arange(D)
    # NDCGLoss2 weighs a pair by the step of the discount at their distance |i - j|.
    delta = jnp.abs(positions[:, None] - positions[None, :])
    step = jnp.abs(1.0 / discount[jnp.maximum(delta - 1, 0)] - 1.0 / discount[delta])
    ndcg2 = jnp.where(delta == 0, 0.0, step)
    lambda_rank = jnp.abs(1.0 / discount[:, None] - 1.0 / discount[None, :])
    weights = jax.lax.stop_gradient((mu * ndcg2 + lambda_rank)[None] * gain_diffs)

    diffs = jnp.clip(scores_sorted[:, :, None] - scores_sorted[:, None, :], -1e8, 1e8)
    terms = weights * jax.nn.log_sigmoid(sigma * diffs) / jnp.log(2.0)
    count = jnp.maximum(jnp.sum(pairs), 1)
    return -jnp.sum(jnp.where(pairs, terms, 0.0)) / count
