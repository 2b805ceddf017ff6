"""Listwise cross-encoder data (``--loss lambda``): a query, its documents and one relevance label per document.

Rows are sentence-transformers' listwise format, ``{"query": str, "docs": [str, ...], "labels": [float, ...]}``,
from ``.jsonl``, ``.parquet`` (list columns) or ``.csv``/``.tsv`` (the two list cells as JSON lists). Every row
is checked as :mod:`gte_jax.train.data` checks pair files; the first bad one stops the run with
``FILE line N: reason``. A batch pads each query to its most documents; the padding carries the label -inf,
which :func:`gte_jax.train.step.make_loss` reads as "no document".
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from gte_jax.engine.batching import bucket_for, length_buckets
from gte_jax.train.data import FORMATS, DataError, _csv_rows, _jsonl_rows, _label, _parquet_rows, _text

COLUMNS = ("query", "docs", "labels")
# LambdaLoss's gain is 2**label - 1 in float32: graded relevance is 0 to 4 or so, far below where it overflows.
MAX_LABEL = 64.0


@dataclasses.dataclass(frozen=True)
class Listwise:
    """A listwise file's rows.

    Attributes:
        path: the file, for messages.
        queries: one query per row.
        docs: ``docs[i]`` is row ``i``'s documents (at least one).
        labels: ``labels[i]`` is float32 ``[len(docs[i])]``.
    """

    path: str
    queries: list[str]
    docs: list[list[str]]
    labels: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.queries)


def read_listwise(path: str) -> Listwise:
    """Reads and checks every row of a listwise file.

    Raises:
        DataError: the file is missing, of an unknown kind, empty, or has a bad row (``FILE line N: reason``):
            a missing column, a text that is not a string, a label that is not a finite number up to
            :data:`MAX_LABEL`, no documents, or not one label per document.
    """
    kind = FORMATS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise DataError(f"{path}: unknown file type; use .jsonl, .csv, .tsv or .parquet.")
    if not os.path.isfile(path):
        raise DataError(f"{path} does not exist.")
    rows = {"jsonl": _jsonl_rows, "csv": _csv_rows, "tsv": _csv_rows, "parquet": _parquet_rows}[kind](path)
    out = Listwise(path, [], [], [])
    for where, record in rows:
        at = f"{path} {where}"
        missing = [n for n in COLUMNS if n not in record]
        if missing:
            raise DataError(
                f"{at}: missing {', '.join(map(repr, missing))}; --loss lambda takes rows of "
                '{"query": "...", "docs": ["...", ...], "labels": [1, 0, ...]} (found '
                f"{list(record)})."
            )
        docs = _list(record["docs"], f"{at}: 'docs'")
        labels = _list(record["labels"], f"{at}: 'labels'")
        if not docs:
            raise DataError(f"{at}: 'docs' is empty; give each query at least one document.")
        if len(docs) != len(labels):
            raise DataError(
                f"{at}: 'docs' holds {len(docs)} documents and 'labels' {len(labels)} labels; give one label per "
                "document, in the same order."
            )
        out.queries.append(_text(record["query"], f"{at}: 'query'"))
        out.docs.append([_text(d, f"{at}: 'docs'[{i}]") for i, d in enumerate(docs)])
        out.labels.append(np.asarray([_relevance(y, f"{at}: 'labels'[{i}]") for i, y in enumerate(labels)], np.float32))
    if not out.queries:
        raise DataError(f"{path} holds no examples.")
    return out


def _list(value: Any, where: str) -> list[Any]:
    """A list cell: a JSON or Parquet list, or in CSV a JSON list written as text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(f"{where} is {value[:40]!r}, not a list (in CSV, write it as a JSON list).") from None
    if not isinstance(value, list | tuple):
        raise DataError(f"{where} is {'missing (null)' if value is None else f'a {type(value).__name__}'}, not a list.")
    return list(value)


def _relevance(value: Any, where: str) -> float:
    number = _label(value, where)
    if number > MAX_LABEL:
        raise DataError(
            f"{where} is {number:g}; LambdaLoss's gain is 2**label - 1, which labels above {MAX_LABEL:g} overflow: "
            "use graded relevance (0 for irrelevant, then 1, 2, 3...)."
        )
    return number


@dataclasses.dataclass(frozen=True)
class ListwiseTokens:
    """Packed pair ids per document per row, and the labels."""

    pairs: list[list[np.ndarray]]
    labels: list[np.ndarray]
    max_length: int
    pad_id: int

    def batch(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """``input_ids`` and ``attention_mask`` ``[B, D, T]`` int32 (D: the rows' most documents; T: the length
        bucket of the longest pair) and ``labels`` ``[B, D]`` float32, -inf where a row has no document.

        A padding slot repeats its row's first pair: real tokens (no all-masked sequence for any family's
        attention to trip on) whose score the loss ignores.
        """
        B = len(rows)
        D = max(len(self.pairs[r]) for r in rows)
        longest = max(len(t) for r in rows for t in self.pairs[r])
        T = bucket_for(longest, length_buckets(self.max_length))
        input_ids = np.full((B, D, T), self.pad_id, np.int32)
        mask = np.zeros((B, D, T), np.int32)
        labels = np.full((B, D), -np.inf, np.float32)
        for b, r in enumerate(rows):
            pairs = self.pairs[r]
            for d in range(D):
                t = pairs[d] if d < len(pairs) else pairs[0]
                input_ids[b, d, : len(t)] = t
                mask[b, d, : len(t)] = 1
            labels[b, : len(pairs)] = self.labels[r]
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def tokenize_listwise(examples: Listwise, tokenizer: Any) -> ListwiseTokens:
    """Tokenises each (query, document) as one pair for a cross-encoder, as :func:`gte_jax.train.data.tokenize_pairs`
    does (:meth:`gte_jax.engine.tokenization.Tokenizer.pairs`)."""
    flat = tokenizer.pairs([(q, d) for q, docs in zip(examples.queries, examples.docs, strict=True) for d in docs])
    pairs, start = [], 0
    for docs in examples.docs:
        pairs.append(flat[start : start + len(docs)])
        start += len(docs)
    return ListwiseTokens(pairs, examples.labels, tokenizer.max_length, tokenizer.pad_token_id)
