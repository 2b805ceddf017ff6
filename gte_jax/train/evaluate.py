"""Evaluation during training: STS Spearman for scored pairs, top-1 retrieval accuracy for pairs without scores."""

from __future__ import annotations

import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from gte_jax.engine.batching import bucket_for, length_buckets
from gte_jax.engine.sharding import data_parallelism
from gte_jax.train.data import Tokenized, spearman
from gte_jax.train.step import Trainer

EVAL_ROWS = 64  # texts per eval step (rounded up to the data parallelism): one program per length bucket


def embed(trainer: Trainer, params: nnx.State, token_ids: list[np.ndarray], max_length: int, pad_id: int) -> np.ndarray:
    """``[texts, dim]`` unit-length eval-mode embeddings (no dropout), in input order.

    Raises:
        ValueError: no texts.
    """
    dp = data_parallelism(trainer.mesh)
    rows = -(-EVAL_ROWS // dp) * dp
    order = np.argsort([len(t) for t in token_ids], kind="stable")
    buckets = length_buckets(max_length)
    out: np.ndarray | None = None
    for start in range(0, len(order), rows):
        chunk = order[start : start + rows]
        T = bucket_for(max(len(token_ids[i]) for i in chunk), buckets)
        ids = np.full((rows, T), pad_id, np.int32)
        mask = np.zeros((rows, T), np.int32)
        for r, i in enumerate(chunk):
            ids[r, : len(token_ids[i])] = token_ids[i]
            mask[r, : len(token_ids[i])] = 1
        batch = trainer.shard_batch({"ids": ids, "mask": mask})
        vectors = np.asarray(
            multihost_utils.process_allgather(trainer.embed(params, batch["ids"], batch["mask"]), tiled=True)
        )
        if out is None:
            out = np.zeros((len(token_ids), vectors.shape[1]), np.float32)
        out[chunk] = vectors[: len(chunk)]
    if out is None:
        raise ValueError("embed needs at least one text; got none.")
    return out


def evaluate(trainer: Trainer, params: nnx.State, data: Tokenized) -> tuple[str, float]:
    """``("spearman", rho)`` of cosine against the labels for scored pairs, else ``("accuracy", top-1)``:
    how often an anchor's nearest candidate (every positive and negative of the file) is its own positive.

    Rho is NaN where it is undefined (all labels, or all the model's similarities, equal): see :func:`describe`.

    Raises:
        ValueError: fewer than two columns.
    """
    if len(data.ids) < 2:
        raise ValueError(f"evaluation needs two text columns (and a score for STS); got {len(data.ids)}.")
    columns = [embed(trainer, params, ids, data.max_length, data.pad_id) for ids in data.ids]
    if data.labels is not None:
        return "spearman", spearman(np.sum(columns[0] * columns[1], axis=1), data.labels)
    candidates = np.concatenate(columns[1:], axis=0)  # positives first: row i's positive is candidate i
    nearest = np.argmax(columns[0] @ candidates.T, axis=1)
    return "accuracy", float(np.mean(nearest == np.arange(len(columns[0]))))


def describe(name: str, value: float) -> str:
    """``"spearman 0.8123"``, or why there is no number."""
    if np.isnan(value):
        return f"{name} undefined (every score, or every similarity the model gives, is the same)"
    return f"{name} {value:.4f}"
