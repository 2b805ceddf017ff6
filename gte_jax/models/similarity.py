"""Similarity functions, as sentence-transformers' ``similarity_fn_name`` names them, in numpy.

``cosine`` and ``dot`` are similarities; ``euclidean`` and ``manhattan`` are distances, negated
so that larger always means more similar (as sentence-transformers does). Inputs are anything
``numpy.asarray`` takes (numpy, JAX or CPU torch arrays, lists), scored in float32; quantised
vectors are scored as their integer values, as sentence-transformers scores them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")
# Manhattan distances are computed a block of rows at a time: at most this many float32 differences at once.
_MANHATTAN_BLOCK = 1 << 24


def check_similarity_fn_name(name: object) -> str:
    """``name`` if it is one of :data:`SIMILARITY_FUNCTIONS`.

    Raises:
        ValueError: it is not (the message lists them).
    """
    if name not in SIMILARITY_FUNCTIONS:
        raise ValueError(f"similarity_fn_name {name!r} is not supported; use one of {SIMILARITY_FUNCTIONS}.")
    return str(name)


def normalize_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Each row (last axis) scaled to unit L2 norm, in float32, as ``torch.nn.functional.normalize`` does."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), np.float32(eps))


def truncate_rows(vectors: np.ndarray, dim: int | None, normalize: bool) -> np.ndarray:
    """The first ``dim`` dimensions of each row (Matryoshka), L2-normalised again when ``normalize`` (as
    sentence-transformers normalises after truncating); ``vectors`` as they are when nothing is cut."""
    if dim is None or dim == vectors.shape[-1]:
        return vectors
    cut = np.ascontiguousarray(vectors[..., :dim])
    return normalize_rows(cut) if normalize else cut


def similarity(a: Any, b: Any, fn: str = "cosine") -> np.ndarray:
    """Scores of every row of ``a`` against every row of ``b``.

    Args:
        a: ``[n, dim]`` (or ``[dim]``, taken as one row).
        b: ``[m, dim]`` (or ``[dim]``).
        fn: one of :data:`SIMILARITY_FUNCTIONS`.

    Returns:
        float32 ``[n, m]``.

    Raises:
        ValueError: an unknown ``fn``, or rows of different sizes.
    """
    fn = check_similarity_fn_name(fn)
    a, b = _rows(a, "a"), _rows(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"cannot compare {a.shape[1]}-dimensional embeddings with {b.shape[1]}-dimensional ones.")
    if fn == "cosine":
        return normalize_rows(a) @ normalize_rows(b).T
    if fn == "dot":
        return a @ b.T
    if fn == "euclidean":
        # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b, in float64 so that near-duplicates do not lose their distance.
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        squared = np.sum(a64 * a64, axis=1)[:, None] + np.sum(b64 * b64, axis=1)[None, :] - 2.0 * (a64 @ b64.T)
        return (-np.sqrt(np.maximum(squared, 0.0))).astype(np.float32)
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.float32)
    step = max(1, _MANHATTAN_BLOCK // max(1, b.size))
    for start in range(0, a.shape[0], step):
        block = a[start : start + step, None, :] - b[None, :, :]  # [rows, m, dim]
        out[start : start + step] = -np.sum(np.abs(block), axis=-1, dtype=np.float64)
    return out


def similarity_pairwise(a: Any, b: Any, fn: str = "cosine") -> np.ndarray:
    """Scores of ``a[i]`` against ``b[i]``.

    Args:
        a, b: ``[n, dim]`` each (or ``[dim]`` each: one pair, scored as a 0-d array).
        fn: one of :data:`SIMILARITY_FUNCTIONS`.

    Returns:
        float32 ``[n]``.

    Raises:
        ValueError: an unknown ``fn``, or ``a`` and ``b`` of different shapes.
    """
    fn = check_similarity_fn_name(fn)
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if a.shape != b.shape or a.ndim not in (1, 2):
        raise ValueError(f"similarity_pairwise needs two [n, dim] arrays of one shape, not {a.shape} and {b.shape}.")
    if fn == "cosine":
        return np.sum(normalize_rows(a) * normalize_rows(b), axis=-1)
    if fn == "dot":
        return np.sum(a * b, axis=-1)
    if fn == "euclidean":
        return -np.sqrt(np.sum(np.square(a - b, dtype=np.float64), axis=-1)).astype(np.float32)
    return -np.sum(np.abs(a - b), axis=-1, dtype=np.float64).astype(np.float32)


def _rows(x: Any, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be [n, dim] embeddings (or one [dim] embedding), not shape {x.shape}.")
    return x
