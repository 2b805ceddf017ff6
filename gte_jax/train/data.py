"""Training data: examples from ``.jsonl``, ``.csv``/``.tsv`` or ``.parquet``, and deterministic padded batches.

A file holds text columns in order (``sentence1, sentence2`` or ``anchor, positive[, negative...]``)
and optionally a ``score`` or ``label`` column (CoSENT's similarity). Every row is checked; the first
bad one stops the run with ``FILE line N: reason``.

The order of an epoch is a permutation drawn from ``(seed, epoch)`` alone, so batch ``k`` of epoch ``e``
is the same whoever computes it, whenever: what lets a resumed run end with the weights of an
uninterrupted one, and every process of a multi-host run build the same global batch.
"""

from __future__ import annotations

import csv
import dataclasses
import decimal
import json
import math
import numbers
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from gte_jax.engine.batching import bucket_for, length_buckets
from gte_jax.engine.tokenization import lone_surrogate
from gte_jax.errors import UserError

LABEL_COLUMNS = ("score", "label")
_FLOAT32_MAX = float(np.finfo(np.float32).max)
FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


class DataError(ValueError, UserError):
    """A training or evaluation file is unreadable or has a bad row; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Examples:
    """A data file's rows, column by column.

    Attributes:
        path: the file, for messages.
        columns: text column names, in file order.
        texts: ``texts[c][i]`` is row ``i``'s text in column ``c``.
        labels: float32 ``[rows]`` from the ``score``/``label`` column, or None.
        label_name: that column's name, or None.
    """

    path: str
    columns: tuple[str, ...]
    texts: tuple[list[str], ...]
    labels: np.ndarray | None
    label_name: str | None = None

    def __len__(self) -> int:
        return len(self.texts[0])


def read_examples(path: str) -> Examples:
    """Reads and checks every row of a data file.

    Raises:
        DataError: the file is missing, of an unknown kind, empty, or has a bad row (``FILE line N: reason``).
    """
    kind = FORMATS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise DataError(f"{path}: unknown file type; use .jsonl, .csv, .tsv or .parquet.")
    if not os.path.isfile(path):
        raise DataError(f"{path} does not exist.")
    rows = {"jsonl": _jsonl_rows, "csv": _csv_rows, "tsv": _csv_rows, "parquet": _parquet_rows}[kind](path)
    columns: tuple[str, ...] | None = None
    label_name: str | None = None
    texts: tuple[list[str], ...] = ()
    labels: list[float] = []
    for where, record in rows:
        if columns is None:
            names = list(record)
            label_name = next((n for n in LABEL_COLUMNS if n in names), None)
            columns = tuple(n for n in names if n not in LABEL_COLUMNS)
            if not columns:
                raise DataError(f"{path} {where}: no text columns (found {names}).")
            texts = tuple([] for _ in columns)
        missing = [n for n in (*columns, *([label_name] if label_name else [])) if n not in record]
        if missing:
            raise DataError(f"{path} {where}: missing {', '.join(map(repr, missing))} (the first row has it).")
        for c, name in enumerate(columns):
            texts[c].append(_text(record[name], f"{path} {where}: {name!r}"))
        if label_name is not None:
            labels.append(_label(record[label_name], f"{path} {where}: {label_name!r}"))
    if columns is None:
        raise DataError(f"{path} holds no examples.")
    return Examples(path, columns, texts, np.asarray(labels, np.float32) if label_name else None, label_name)


def check_for_loss(examples: Examples, loss: str) -> None:
    """Checks that the file's columns fit the loss.

    Raises:
        DataError: CoSENT without exactly two text columns and a label; InfoNCE with one text column, or with a
            score/label column, which it would ignore (a pair scored 0 would train as a positive).
    """
    found = f"found text columns {list(examples.columns)}"
    if loss == "bce":
        _check_bce(examples, found)
        return
    if loss == "cosent":
        if len(examples.columns) != 2 or examples.labels is None:
            raise DataError(
                f"{examples.path}: the cosent loss needs two text columns (sentence1, sentence2) and a score or "
                f"label column; {found}{'' if examples.labels is not None else ' and no score'}."
            )
        return
    if len(examples.columns) < 2:
        raise DataError(
            f"{examples.path}: the {loss} loss needs an anchor and a positive column (then any negatives); {found}."
        )
    if examples.label_name is not None:
        raise DataError(
            f"{examples.path}: the {loss} loss takes every row as an anchor and its positive and has no use for the "
            f"{examples.label_name!r} column (a low score would still train as a positive); use --loss cosent for "
            f"scored pairs, or drop the column (keep only the rows that are true pairs)."
        )


def _check_bce(examples: Examples, found: str) -> None:
    if len(examples.columns) != 2 or examples.labels is None:
        raise DataError(
            f"{examples.path}: the bce loss needs two text columns (query, document) and a label column of 0/1 or "
            f"a probability; {found}{'' if examples.labels is not None else ' and no label'}."
        )
    outside = np.flatnonzero((examples.labels < 0) | (examples.labels > 1))
    if outside.size:
        row = int(outside[0])
        raise DataError(
            f"{examples.path} row {row + 1}: {examples.label_name!r} is {examples.labels[row]:g}; the bce loss takes "
            "labels from 0 to 1 (1 relevant, 0 not, or a probability): rescale the column."
        )


def check_for_eval(examples: Examples) -> None:
    """Checks that an evaluation file gives a score: two text columns, and scores that vary (Spearman).

    Raises:
        DataError: one text column; scores that are all equal (one row, or constant), whose rank correlation
            is undefined.
    """
    if len(examples.columns) < 2:
        raise DataError(
            f"{examples.path}: evaluation needs two text columns (and a score for STS); found {list(examples.columns)}."
        )
    if examples.labels is not None and len(np.unique(examples.labels)) < 2:
        raise DataError(
            f"{examples.path}: every {examples.label_name!r} is {examples.labels[0]:g} ({len(examples)} rows), and "
            "Spearman's correlation with equal scores is undefined; evaluate on rows with different scores."
        )


def _kind(value: Any) -> str:
    return "missing (null)" if value is None else f"a {type(value).__name__}"


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where} is {_kind(value)}, not a string.")
    at = lone_surrogate(value)
    if at is not None:  # no tokenizer takes it: found here, before the model loads
        raise DataError(
            f"{where} holds a lone surrogate ({value[at]!r} at character {at}), which is not text; fix or drop the row."
        )
    return value


def _label(value: Any, where: str) -> float:
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise DataError(f"{where} is {value!r}, not a number.") from None
    elif isinstance(value, bool) or not isinstance(value, numbers.Real | decimal.Decimal):
        raise DataError(f"{where} is {_kind(value)}, not a number.")
    else:
        try:
            number = float(value)  # Parquet decimals are Decimal; a JSON integer may have hundreds of digits
        except OverflowError:
            number = math.inf
    if not math.isfinite(number) or abs(number) > _FLOAT32_MAX:  # labels are float32
        shown = value if len(str(value)) <= 40 else f"{str(value)[:20]}... ({len(str(value))} characters)"
        raise DataError(f"{where} is {shown!r}, not a finite number.")
    return number


def _text_lines(path: str) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 file (a leading BOM dropped), each decoded on its own: a text reader
    decodes ahead in blocks, so its error would name an earlier line than the bad byte's."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if n == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            try:
                yield n, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path} line {n}: not UTF-8 text (byte {raw[e.start]:#04x} at byte {e.start + 1} of the line); "
                    "save the file as UTF-8."
                ) from None


def _jsonl_rows(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for n, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {n}: not valid JSON ({e.msg}, column {e.colno}).") from None
        if not isinstance(record, dict):
            raise DataError(f"{path} line {n}: a JSON {type(record).__name__}, not an object.")
        yield f"line {n}", record


def _csv_rows(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    # Lines keep their endings (as open(newline="") gives them), so quoted fields may span lines.
    reader = csv.reader((line for _, line in _text_lines(path)), delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            return
        if len(set(header)) != len(header) or not all(header):
            raise DataError(f"{path} line 1: the header {header} has an empty or repeated column name.")
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                fields = f"{len(row)} fields, but the header names {len(header)}"
                raise DataError(f"{path} line {reader.line_num}: {fields}.")
            yield f"line {reader.line_num}", dict(zip(header, row, strict=True))
    except csv.Error as e:
        raise DataError(f"{path} line {reader.line_num}: {e}.") from None


def _parquet_rows(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid (and others) for a damaged file
        raise DataError(f"{path}: not a readable Parquet file ({e}).") from None
    n = 0
    for group in range(file.num_row_groups):
        for record in file.read_row_group(group).to_pylist():
            n += 1
            yield f"row {n}", record


# Batches


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the rows in ``epoch``: a permutation determined by ``(seed, epoch)`` alone."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def epoch_batches(n: int, batch_size: int, multiple_of: int = 1) -> list[tuple[int, int]]:
    """``(start, stop)`` into an epoch's order for each step: full batches, then the remainder rounded down
    to a multiple of ``multiple_of`` (the mesh's data parallelism), dropped if that leaves nothing."""
    spans = [(s, s + batch_size) for s in range(0, n - batch_size + 1, batch_size)]
    done = len(spans) * batch_size
    tail = (n - done) // multiple_of * multiple_of
    if tail:
        spans.append((done, done + tail))
    return spans


@dataclasses.dataclass(frozen=True)
class Tokenized:
    """Token ids per column per row, and the labels."""

    ids: tuple[list[np.ndarray], ...]
    labels: np.ndarray | None
    max_length: int
    pad_id: int

    def batch(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """``input_ids`` and ``attention_mask`` ``[B, C, T]`` int32 (T: the length bucket of the longest text)
        and ``labels`` ``[B]`` float32 for these rows."""
        C, B = len(self.ids), len(rows)
        longest = max(len(self.ids[c][r]) for c in range(C) for r in rows)
        T = bucket_for(longest, length_buckets(self.max_length))
        input_ids = np.full((B, C, T), self.pad_id, np.int32)
        mask = np.zeros((B, C, T), np.int32)
        for b, r in enumerate(rows):
            for c in range(C):
                t = self.ids[c][r]
                input_ids[b, c, : len(t)] = t
                mask[b, c, : len(t)] = 1
        labels = self.labels[rows] if self.labels is not None else np.zeros(B, np.float32)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels.astype(np.float32)}


def tokenize(examples: Examples, tokenizer: Any) -> Tokenized:
    """Tokenises every column with a :class:`gte_jax.engine.tokenization.Tokenizer` (truncating to its max length)."""
    ids = tuple(tokenizer(column) for column in examples.texts)
    return Tokenized(ids, examples.labels, tokenizer.max_length, tokenizer.pad_token_id)


def tokenize_pairs(examples: Examples, tokenizer: Any) -> Tokenized:
    """Tokenises each row's two texts as one pair for a cross-encoder: one column of packed ids
    (:meth:`gte_jax.engine.tokenization.Tokenizer.pairs`, token types in the high bits), truncated together."""
    pairs = tokenizer.pairs(list(zip(examples.texts[0], examples.texts[1], strict=True)))
    return Tokenized((pairs,), examples.labels, tokenizer.max_length, tokenizer.pad_token_id)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (ties get their average rank), as ``scipy.stats.spearmanr``."""
    rx, ry = _ranks(np.asarray(x, np.float64)), _ranks(np.asarray(y, np.float64))
    rx -= rx.mean()
    ry -= ry.mean()
    return float((rx * ry).sum() / np.sqrt((rx * rx).sum() * (ry * ry).sum()))


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    values, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]
