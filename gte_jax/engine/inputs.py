"""What :meth:`GTEEncoder.encode` accepts, checked before any work: texts, sizes, precision options; and how
far ahead of the device it tokenises."""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypedDict

import numpy as np

from gte_jax.engine.quantization import RANGED
from gte_jax.engine.tokenization import lone_surrogate

# encode() tokenises this much ahead of the device at a time (tokenizers keeps every truncated-away
# token of a batch until it returns), never the whole input at once.
TOKENIZE_AHEAD_CHARS = 4 << 20
TOKENIZE_AHEAD_TEXTS = 8192


class EncodeOptions(TypedDict, total=False):
    """The keyword options of :meth:`GTEEncoder.encode`, ``encode_query`` and ``encode_document``."""

    prompt_name: str | None
    prompt: str | None
    truncate_dim: int | None
    precision: str
    normalize: bool
    batch_size: int | None
    show_progress: bool
    ranges: np.ndarray | None
    calibration_embeddings: np.ndarray | None


def check_texts(texts: object) -> tuple[list[str], bool]:
    """The texts as a list, and whether a single string was given.

    Raises:
        TypeError: ``texts`` is not a string or a sequence of strings (the message names the bad item).
        ValueError: a text holds a lone surrogate (the message names its index).
    """
    if isinstance(texts, str):
        texts = [texts]
        single = True
    elif isinstance(texts, (bytes, bytearray)):
        raise TypeError("texts is bytes; decode it first (texts.decode('utf-8')).")
    elif isinstance(texts, Mapping):
        raise TypeError("texts is a mapping; pass a list of strings (for example list(d.values())).")
    elif not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a string or a list of strings, not {type(texts).__name__}.")
    else:
        texts, single = list(texts), False
    for i, t in enumerate(texts):
        if isinstance(t, (bytes, bytearray)):
            raise TypeError(f"texts[{i}] is bytes, not str; decode it first (t.decode('utf-8')).")
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, not str; pass only strings (convert or drop it).")
        at = lone_surrogate(t)
        if at is not None:
            raise ValueError(
                f"texts[{i}] holds a lone surrogate ({t[at]!r} at character {at}), which is not "
                "text; decode the source with errors='replace' or drop the character."
            )
    return texts, single


def check_positive(name: str, value: int | None) -> int | None:
    """``value`` as an int, or None; numpy integers pass (as for ``truncate_dim``), booleans do not."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None (the backend's default), not {value!r}.")
    return None if value is None else int(value)


def check_truncate_dim(value: int | None) -> int | None:
    """``value`` as an int; numpy integers (``np.int64(8)``) pass, booleans do not."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
        raise ValueError(f"truncate_dim must be a positive integer or None (all dimensions), not {value!r}.")
    return None if value is None else int(value)


def check_ranges(precision: str, ranges: object, calibration_embeddings: object) -> None:
    for name, value in (("ranges", ranges), ("calibration_embeddings", calibration_embeddings)):
        if value is not None and precision not in RANGED:
            raise ValueError(f"{name} applies to precision 'int8' or 'uint8' only, not {precision!r}.")


def tokenize_chunks(texts: list[str], window: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` ranges of ``texts`` to tokenise at a time, so memory stays flat however many come."""
    start = chars = 0
    for i, t in enumerate(texts):
        chars += min(len(t), window)
        if chars >= TOKENIZE_AHEAD_CHARS or i + 1 - start >= TOKENIZE_AHEAD_TEXTS:
            yield start, i + 1
            start, chars = i + 1, 0
    if start < len(texts):
        yield start, len(texts)


@contextlib.contextmanager
def progress_bar(total: int, show: bool, unit: str = "text", desc: str = "embedding") -> Iterator[Any]:
    """A tqdm bar over ``total`` items (texts; pairs for the reranker), or None."""
    if not show:
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, unit=unit, desc=desc) as bar:
        yield bar
