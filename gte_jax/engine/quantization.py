"""Quantised embeddings, exactly as sentence-transformers' ``quantize_embeddings`` makes them.

- ``int8`` / ``uint8``: each dimension's range ``[min, max]`` is cut into 255 steps and a value
  becomes its step (``floor``, clipped to 0-255; ``int8`` shifts by -128). The ranges, a
  ``[2, dim]`` array of per-dimension minima and maxima, come from ``ranges``, else from
  ``calibration_embeddings``, else from the embeddings being quantised. Vectors quantised with
  different ranges are not comparable: fix them once per collection (:func:`quantization_ranges`).
  Ranges given (or taken from calibration embeddings) are checked first (:func:`check_ranges`): ranges
  that would put every vector on the same codes are refused rather than used.
- ``binary`` / ``ubinary``: one bit per dimension (``value > 0``), packed eight to a byte
  (``numpy.packbits``), so ``[n, dim]`` becomes ``[n, ceil(dim / 8)]``; ``binary`` is the packed
  byte minus 128 as ``int8``, ``ubinary`` the byte as ``uint8``.

Pure numpy; no dependency on sentence-transformers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
RANGED = ("int8", "uint8")  # the precisions that need ranges
ADVICE = "take them from several different, representative embeddings (quantization_ranges)"
_DTYPES = {"float32": np.float32, "int8": np.int8, "uint8": np.uint8, "binary": np.int8, "ubinary": np.uint8}


def check_precision(precision: object) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`.

    Raises:
        ValueError: it is not (the message lists them).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not supported; use one of {PRECISIONS}.")
    return str(precision)


def quantized_dim(dim: int, precision: str) -> int:
    """Values per vector at ``precision``: ``dim``, or ``ceil(dim / 8)`` bytes for the binary ones."""
    return -(-dim // 8) if precision in ("binary", "ubinary") else dim


def quantized_dtype(precision: str) -> np.dtype:
    """The numpy dtype of vectors at ``precision``."""
    return np.dtype(_DTYPES[precision])


def quantization_ranges(embeddings: np.ndarray) -> np.ndarray:
    """``[2, dim]`` float32: the per-dimension minimum and maximum of ``[n, dim]`` embeddings (n >= 2).

    Raises:
        ValueError: fewer than two embeddings (one vector has no range).
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim == 1 or (embeddings.ndim == 2 and embeddings.shape[0] < 2):
        raise ValueError(
            "cannot compute int8/uint8 quantization ranges from a single embedding; pass ranges= (a [2, dim] array "
            "of minima and maxima) or calibration_embeddings= from a representative set of texts."
        )
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings to take quantization ranges from must be [n, dim], not shape {embeddings.shape}.")
    return np.vstack((embeddings.min(axis=0), embeddings.max(axis=0)))


def check_ranges(ranges: object, dim: int, *, advice: str = ADVICE) -> np.ndarray:
    """``ranges`` as a ``[2, dim]`` float32 array, after checking that every dimension can tell values apart.

    Args:
        ranges: per-dimension minima, then maxima.
        dim: the embeddings' dimension.
        advice: what the error message tells the caller to do, after saying what is wrong.

    Raises:
        ValueError: ``ranges`` is not a ``[2, dim]`` array of numbers, holds NaN or infinity, has a minimum
            above its maximum, or has a dimension whose range is too narrow to cut into 255 steps (zero or
            denormal width: every value gets the same code) or too wide for float32 (the width overflows);
            the message names the first such dimension.
    """
    try:
        array = np.asarray(ranges, dtype=np.float64)
    except (TypeError, ValueError):
        shown = repr(ranges) if len(repr(ranges)) <= 40 else f"a {type(ranges).__name__}"
        raise ValueError(f"ranges must be a [2, {dim}] array of numbers (minima, then maxima), not {shown}.") from None
    if array.shape != (2, dim):
        raise ValueError(f"ranges must be a [2, {dim}] array of minima and maxima, not shape {array.shape}.")
    with np.errstate(over="ignore", invalid="ignore"):
        bounds = array.astype(np.float32)
        steps = (bounds[1] - bounds[0]) / 255
    problems = (
        (~np.isfinite(array).all(axis=0), "hold NaN or infinity"),
        (array[0] > array[1], "have a minimum above the maximum"),
        (~np.isfinite(steps), "are too wide for float32 (the width overflows)"),
        # zero or denormal: one code for every value
        (steps < np.finfo(np.float32).tiny, "have no usable width (the minimum equals the maximum, or is too close)"),
    )
    for bad, problem in problems:
        if np.any(bad):
            raise ValueError(
                f"ranges {problem} in {_dimensions(np.asarray(bad))}, so they cannot separate vectors there; {advice}."
            )
    return bounds


def _dimensions(bad: np.ndarray) -> str:
    """``dimension 3``, or ``dimension 0 and 383 more``."""
    where = np.flatnonzero(bad)
    return f"dimension {where[0]}" + (f" and {where.size - 1} more" if where.size > 1 else "")


def check_separates(embeddings: np.ndarray, codes: np.ndarray) -> None:
    """Refuses codes that are all the same for embeddings that clearly differ: ranges too wide for them.

    Raises:
        ValueError: every row of ``codes`` is the same, though the rows of ``embeddings`` differ by at least a
            tenth of their largest value (near-duplicates, which may rightly share codes, pass).
    """
    if embeddings.ndim != 2 or embeddings.shape[0] < 2 or (codes != codes[:1]).any():
        return
    spread = float((embeddings.max(axis=0) - embeddings.min(axis=0)).max())
    if spread > 0.1 * float(np.abs(embeddings).max()):
        raise ValueError(
            f"the ranges put all {embeddings.shape[0]} embeddings on the same codes, though they differ by up to "
            f"{spread:.3g}: the ranges are far too wide for these embeddings; take them from representative "
            "embeddings (quantization_ranges)."
        )


def quantize_embeddings(
    embeddings: np.ndarray | Sequence[np.ndarray],
    precision: str,
    *,
    ranges: np.ndarray | None = None,
    calibration_embeddings: np.ndarray | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Quantises float embeddings to ``precision``, as sentence-transformers does.

    Args:
        embeddings: ``[n, dim]`` (or ``[dim]``) floats; or a list of ``[tokens, dim]`` matrices (token
            embeddings), quantised with one set of ranges computed over all of them.
        precision: one of :data:`PRECISIONS`.
        ranges: ``[2, dim]`` per-dimension minima and maxima, for ``int8`` / ``uint8``.
        calibration_embeddings: ``[m, dim]`` floats to take the ranges from when ``ranges`` is None.

    Returns:
        ``[n, dim]`` float32 / int8 / uint8, or ``[n, ceil(dim / 8)]`` int8 (``binary``) / uint8
        (``ubinary``); a list of such matrices for a list.

    Raises:
        ValueError: an unknown ``precision``; ranges or calibration embeddings of the wrong shape;
            int8/uint8 ranges to be computed from a single embedding; given ranges (or those of the
            calibration embeddings) that cannot separate vectors: see :func:`check_ranges` and
            :func:`check_separates`.
        TypeError: the embeddings are already integers.
    """
    precision = check_precision(precision)
    if not isinstance(embeddings, np.ndarray) and isinstance(embeddings, Sequence):
        matrices = [np.asarray(m, dtype=np.float32) for m in embeddings]
        if precision in RANGED and ranges is None and matrices:
            if calibration_embeddings is None:
                ranges = quantization_ranges(np.concatenate(matrices))
            else:
                ranges = check_ranges(quantization_ranges(calibration_embeddings), matrices[0].shape[-1])
        return [_quantize(m, precision, ranges, None) for m in matrices]
    return _quantize(np.asarray(embeddings), precision, ranges, calibration_embeddings)


def _quantize(
    embeddings: np.ndarray, precision: str, ranges: np.ndarray | None, calibration_embeddings: np.ndarray | None
) -> np.ndarray:
    if not np.issubdtype(embeddings.dtype, np.floating):
        raise TypeError(f"embeddings to quantize must be floats, not {embeddings.dtype}.")
    embeddings = embeddings.astype(np.float32, copy=False)
    dim = embeddings.shape[-1]
    if precision == "float32":
        return embeddings
    if precision in ("binary", "ubinary"):
        packed = np.packbits(embeddings > 0, axis=-1)  # uint8 [..., ceil(dim / 8)]
        return (packed - 128).astype(np.int8) if precision == "binary" else packed
    if embeddings.shape[0] == 0 and embeddings.ndim == 2:
        return np.zeros((0, dim), dtype=quantized_dtype(precision))
    given = ranges is not None
    if ranges is not None:
        ranges = check_ranges(ranges, dim)
    elif calibration_embeddings is not None:
        ranges = check_ranges(quantization_ranges(calibration_embeddings), dim)
    else:
        ranges = quantization_ranges(embeddings)  # this call's own: identical vectors rightly share codes
    ranges = np.asarray(ranges, dtype=np.float32)
    starts = ranges[0, :]
    steps = (ranges[1, :] - starts) / 255
    steps = np.where(steps == 0, 1, steps)
    buckets = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
    if given:
        check_separates(embeddings, buckets)
    return buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)
