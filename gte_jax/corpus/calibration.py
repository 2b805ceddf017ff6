"""int8 / uint8 ranges for a corpus job, fixed once per output directory so that every shard is comparable.

``--calibration FILE`` gives them: a ``.npy`` holding the ``[2, dim]`` per-dimension minima and
maxima themselves, or a ``.txt`` / ``.jsonl`` / ``.parquet`` of texts (read with ``--text-field``)
that are embedded, as the corpus is, to take them from. Without it they come from the first
shard of the input (its first :data:`CALIBRATION_ROWS` rows at most). The job records them in
its manifest and a rerun reuses them, so shards written before and after a crash agree; they
also join the settings digest each shard records. With several processes, each takes them from
a manifest that already holds them, else computes them from the same rows of shard 0.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import numpy as np

from gte_jax.corpus.sources import SUFFIXES, Source, detect_format
from gte_jax.engine.quantization import check_ranges
from gte_jax.errors import UserError

CALIBRATION_ROWS = 10_000


class CalibrationError(ValueError, UserError):
    """The calibration file or rows cannot give ranges; the message says what to pass instead."""


def load_ranges(path: str, dim: int) -> np.ndarray:
    """``[2, dim]`` float32 minima and maxima from a ``.npy`` file.

    Raises:
        CalibrationError: the file cannot be read, holds anything else, or holds ranges that cannot separate
            vectors (see :func:`gte_jax.engine.quantization.check_ranges`).
    """
    try:
        ranges = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise CalibrationError(f"--calibration {path}: cannot read it as a .npy array ({e}).") from None
    if ranges.shape != (2, dim) or not np.issubdtype(ranges.dtype, np.number):
        raise CalibrationError(
            f"--calibration {path} holds a {ranges.dtype} array of shape {ranges.shape}; int8/uint8 ranges are a "
            f"[2, {dim}] float array: per-dimension minima, then maxima."
        )
    advice = "pass the minima and maxima of the embeddings of representative texts"
    try:
        return check_ranges(ranges, dim, advice=advice)
    except ValueError as e:
        raise CalibrationError(f"--calibration {path}: its {e}") from None


def ranges_from_texts(
    source: Source, embed: Callable[[list[str]], np.ndarray], *, limit: int | None, first_shard: int | None
) -> tuple[np.ndarray, int]:
    """Running minima and maxima of the embeddings of ``source``'s valid texts, and how many there were.

    Args:
        source: the texts (invalid rows are skipped: the job reports them where it embeds them).
        embed: texts → ``[n, dim]`` float32, as the job embeds them.
        limit: stop after this many texts (all when None).
        first_shard: read only the first shard of this size (all when None).

    Raises:
        CalibrationError: fewer than two texts, non-finite embeddings, or embeddings too alike to give ranges
            (the same texts, or blank ones: see :func:`gte_jax.engine.quantization.check_ranges`).
    """
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    count = 0
    size = first_shard or 1 << 62
    with contextlib.closing(source.pieces(size, lambda k: True)) as pieces:
        for piece in pieces:
            if piece.shard > 0 or (limit is not None and count >= limit):
                break
            texts = piece.texts if limit is None else piece.texts[: limit - count]
            if not texts:
                continue
            vectors = embed(texts)
            if not np.isfinite(vectors).all():
                raise CalibrationError(
                    f"the model gave NaN or infinite embeddings for calibration texts of {source.path}."
                )
            low = vectors.min(axis=0) if low is None else np.minimum(low, vectors.min(axis=0))
            high = vectors.max(axis=0) if high is None else np.maximum(high, vectors.max(axis=0))
            count += len(texts)
    if low is None or high is None or count < 2:
        raise CalibrationError(
            f"cannot compute int8/uint8 ranges from {count} text(s) of {source.path}; pass --calibration with a "
            ".txt/.jsonl/.parquet of representative texts or a .npy of [2, dim] ranges."
        )
    advice = (
        "the texts are too alike (the same, or blank): pass --calibration with a .txt/.jsonl/.parquet of different, "
        "representative texts"
    )
    try:
        ranges = check_ranges(np.vstack((low, high)), low.shape[0], advice=advice)
    except ValueError as e:
        raise CalibrationError(f"the int8/uint8 ranges of {count} texts of {source.path}: {e}") from None
    return ranges, count


def calibration_source(path: str, text_field: str) -> Source:
    """The texts of a ``--calibration`` file.

    Raises:
        CalibrationError: the suffix is not one of ``.npy``, ``.txt``, ``.jsonl``, ``.parquet``.
        InputError: the file is missing, or its first record does not fit ``text_field``.
    """
    if os.path.splitext(path)[1].lower() not in SUFFIXES:
        raise CalibrationError(
            f"--calibration {path}: use a .npy of [2, dim] ranges, or a .txt, .jsonl or .parquet of texts."
        )
    return Source(path, detect_format(path), text_field=text_field)


def is_ranges_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() == ".npy"
