"""The losses equal sentence-transformers' on fixed embeddings: value (relative 1e-5) and gradient (relative 1e-4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gte_jax.train.losses import GTE_DIRECTIONS, cosent, infonce

B, D = 24, 32


@pytest.fixture(scope="module")
def embeddings() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((B, D)).astype(np.float32) for _ in range(4)]


def _reference(loss, arrays: list[np.ndarray], labels: np.ndarray) -> tuple[float, list[np.ndarray]]:
    import torch

    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    value = loss.compute_loss_from_embeddings(tensors, torch.tensor(labels))
    value.backward()
    return value.item(), [t.grad.numpy() for t in tensors]


def _check(fn, arrays, reference) -> None:
    value, grads = jax.value_and_grad(fn, argnums=tuple(range(len(arrays))))(*map(jnp.asarray, arrays))
    expected_value, expected_grads = reference
    assert abs(float(value) - expected_value) <= 1e-5 * abs(expected_value)
    for g, e in zip(grads, expected_grads, strict=True):
        assert np.linalg.norm(np.asarray(g) - e) <= 1e-4 * np.linalg.norm(e)


@pytest.mark.parametrize("labels", ["scores", "ties", "binary"])
def test_cosent_equals_sentence_transformers(embeddings, labels):
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    rng = np.random.default_rng(1)
    y = {
        "scores": rng.random(B),
        "ties": rng.integers(0, 6, B) / 5,  # STS-B style: many equal labels, which CoSENT must not rank
        "binary": rng.integers(0, 2, B),
    }[labels].astype(np.float32)
    a, b = embeddings[:2]
    _check(lambda a, b: cosent(a, b, jnp.asarray(y)), [a, b], _reference(CoSENTLoss(None), [a, b], y))


@pytest.mark.parametrize("directions", [("query_to_doc",), GTE_DIRECTIONS], ids=["one-direction", "gte"])
@pytest.mark.parametrize("negatives", [0, 2])
def test_infonce_equals_multiple_negatives_ranking_loss(embeddings, directions, negatives):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    arrays = embeddings[: 2 + negatives]
    reference = _reference(
        MultipleNegativesRankingLoss(None, directions=directions, partition_mode="joint"), arrays, np.zeros(B)
    )
    _check(lambda *e: infonce(*e, directions=directions), arrays, reference)


def test_infonce_rejects_unknown_directions(embeddings):
    with pytest.raises(ValueError, match="query_to_doc"):
        infonce(*embeddings[:2], directions=("doc_to_query",))
    with pytest.raises(ValueError, match="query_to_doc"):
        infonce(*embeddings[:2], directions=("query_to_doc", "sideways"))


def test_losses_are_finite_and_stable_at_large_scale(embeddings):
    """fp32 logits with a stable log-sum-exp: no overflow at a temperature of 0.001."""
    a, b = embeddings[:2]
    y = np.arange(B, dtype=np.float32)
    for value in (cosent(a, b, jnp.asarray(y), scale=1000.0), infonce(a, b, scale=1000.0, directions=GTE_DIRECTIONS)):
        assert np.isfinite(float(value))
