"""Reading a corpus in bounded pieces: plain text, JSON lines and Parquet.

Rows are numbered from 0 in input order: the line number in a ``.txt`` or
``.jsonl`` file (blank JSONL lines keep their number but hold no text), the
row position in a Parquet file. Shard ``k`` is rows ``[k * S, (k + 1) * S)``,
so the split depends only on the input and the shard size. A reader only
parses the rows of the shards it is asked for; it never holds more than one
piece (at most ``chunk_rows`` rows and about ``chunk_bytes`` of text).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Generator, Iterator

from gte_jax.errors import UserError

FORMATS = ("txt", "jsonl", "parquet")
SUFFIXES = {".txt": "txt", ".text": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
INT64_RANGE = (-(2**63), 2**63 - 1)


class InputError(ValueError, UserError):
    """The corpus cannot be read as asked; the message names the file and the line or row."""


@dataclasses.dataclass(frozen=True)
class Invalid:
    """A row that cannot be embedded: ``where`` is ``file line N`` (1-based, as editors count) or ``file row N``."""

    row: int
    where: str
    reason: str
    fields: tuple[str, ...] = ()
    """The fields the record has, when the reason is about its text field."""

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclasses.dataclass
class Piece:
    """Consecutive input rows of one shard: the valid ones as ``ids`` and ``texts``, the others in ``invalid``."""

    shard: int
    rows: int = 0  # input rows covered, valid, invalid and blank
    ids: list[int | str] = dataclasses.field(default_factory=list)
    texts: list[str] = dataclasses.field(default_factory=list)
    valid_rows: list[int] = dataclasses.field(default_factory=list)  # the input row of each text
    invalid: list[Invalid] = dataclasses.field(default_factory=list)
    blank: int = 0
    nbytes: int = 0


def detect_format(path: str, fmt: str | None = None) -> str:
    """``fmt`` if given, else the format named by the file's suffix.

    Raises:
        InputError: the suffix is not one of ``.txt``, ``.jsonl``, ``.ndjson``, ``.parquet``.
    """
    if fmt is not None:
        return fmt
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        raise InputError(f"{path}: cannot tell the format from the suffix {suffix!r}; pass --format txt|jsonl|parquet.")
    return SUFFIXES[suffix]


def fingerprint(path: str) -> dict[str, int | str]:
    """Size and SHA-256 of the whole file, so any edit shows (the file is read once, at about disk speed).

    Raises:
        InputError: the file cannot be read.
    """
    return scan(path)[0]


def scan(path: str) -> tuple[dict[str, int | str], int]:
    """:func:`fingerprint` and the number of lines (the rows of a ``.txt`` or ``.jsonl`` file), in one read.

    Raises:
        InputError: the file cannot be read.
    """
    h = hashlib.sha256()
    size = lines = 0
    last = b"\n"
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
                size += len(block)
                lines += block.count(b"\n")
                last = block[-1:]
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror}).") from None
    return {"bytes": size, "sha256": h.hexdigest()}, lines + (last != b"\n")


class Source:
    """A corpus file. ``id_field`` and ``id_type`` (``"int64"`` or ``"string"``) are known on opening.

    Args:
        path: the file.
        fmt: ``"txt"``, ``"jsonl"`` or ``"parquet"``.
        text_field: the JSON key or Parquet column holding the text (ignored for ``txt``).
        id_field: the key or column holding the id. ``None`` means ``"id"`` when the
            first record (or the schema) has it, else the row number; a name given
            explicitly must be there.

    Raises:
        InputError: the file is missing, or its first record or schema does not fit the fields.
    """

    def __init__(self, path: str, fmt: str, *, text_field: str = "text", id_field: str | None = None):
        if not os.path.isfile(path):
            raise InputError(f"{path}: no such file.")
        if fmt not in FORMATS:
            raise InputError(f"{path}: unknown format {fmt!r}; use one of {FORMATS}.")
        if id_field is not None and id_field == text_field and fmt != "txt":
            raise InputError(
                f"{path}: --id-field and --text-field both name {id_field!r}; ids and texts must be different "
                "fields (leave --id-field out to number the rows)."
            )
        self.path = path
        self.format = fmt
        self.text_field = text_field if fmt != "txt" else None
        self.rows_seen = 0  # rows counted by the last pieces() that ran to the end
        self.total_rows: int | None = None  # Parquet: from its metadata; lines: once counted (see scan)
        if fmt == "txt":
            if id_field is not None:
                raise InputError(f"{path}: a .txt corpus has no fields; its ids are line numbers (drop --id-field).")
            self.id_field, self.id_type = None, "int64"
        elif fmt == "jsonl":
            self.id_field, self.id_type = self._jsonl_ids(id_field)
        else:
            self.id_field, self.id_type = self._parquet_schema(id_field)

    def where(self, row: int) -> str:
        """Input row ``row`` (0-based) as messages name it: ``file line N`` (1-based) or ``file row N``."""
        return f"{self.path} row {row}" if self.format == "parquet" else f"{self.path} line {row + 1}"

    def pieces(
        self, shard_size: int, wanted: Callable[[int], bool], *, chunk_rows: int = 8192, chunk_bytes: int = 4 << 20
    ) -> Generator[Piece, None, None]:
        """The rows of the wanted shards, in order, cut into pieces that never span two shards.

        Every wanted shard that has input rows yields at least one piece (maybe with no
        valid rows), so the caller sees each shard end. Afterwards :attr:`rows_seen`
        holds the number of input rows.
        """
        if self.format == "parquet":
            yield from self._parquet_pieces(shard_size, wanted, chunk_rows, chunk_bytes)
        else:
            parse = self._txt_row if self.format == "txt" else self._jsonl_row
            yield from self._line_pieces(shard_size, wanted, chunk_rows, chunk_bytes, parse)

    # -- text lines ------------------------------------------------------------------

    def _line_pieces(
        self,
        shard_size: int,
        wanted: Callable[[int], bool],
        chunk_rows: int,
        chunk_bytes: int,
        parse: Callable[[int, bytes, Piece], None],
    ) -> Iterator[Piece]:
        piece: Piece | None = None
        row = -1
        with open(self.path, "rb") as f:
            for row, raw in enumerate(f):
                shard = row // shard_size
                if not wanted(shard):
                    continue
                if piece is None or _full(piece, shard, chunk_rows, chunk_bytes):
                    if piece is not None:
                        yield piece
                    piece = Piece(shard)
                piece.rows += 1
                piece.nbytes += len(raw)
                parse(row, raw, piece)
        if piece is not None:
            yield piece
        self.rows_seen = row + 1

    def _decode(self, row: int, raw: bytes, piece: Piece) -> str | None:
        if raw.endswith(b"\n"):
            raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            piece.invalid.append(Invalid(row, f"{self.path} line {row + 1}", f"invalid UTF-8 at byte {e.start}"))
            return None

    def _txt_row(self, row: int, raw: bytes, piece: Piece) -> None:
        text = self._decode(row, raw, piece)
        if text is not None:  # an empty line is an empty text, embedded like any other
            piece.ids.append(row)
            piece.texts.append(text)
            piece.valid_rows.append(row)

    def _jsonl_row(self, row: int, raw: bytes, piece: Piece) -> None:
        line = self._decode(row, raw, piece)
        if line is None:
            return
        if not line.strip():
            piece.blank += 1
            return
        where = f"{self.path} line {row + 1}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            piece.invalid.append(Invalid(row, where, f"malformed JSON ({e.msg} at column {e.colno})"))
            return
        if not isinstance(record, dict):
            piece.invalid.append(Invalid(row, where, f"a JSON {type(record).__name__}, not an object"))
            return
        text = record.get(self.text_field)
        if self.text_field not in record:
            piece.invalid.append(Invalid(row, where, f"no {self.text_field!r} field", tuple(record)))
            return
        if not isinstance(text, str):
            reason = f"{self.text_field!r} is {_json_type(text)}, not a string"
            piece.invalid.append(Invalid(row, where, reason, tuple(record)))
            return
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            piece.invalid.append(Invalid(row, where, f"{self.text_field!r} holds a lone surrogate escape"))
            return
        if self.id_field is None:
            doc_id: object = row
        else:
            doc_id = record.get(self.id_field)
            problem = _id_problem(doc_id, self.id_type, self.id_field, present=self.id_field in record)
            if problem:
                piece.invalid.append(Invalid(row, where, problem))
                return
        assert isinstance(doc_id, (int, str))  # _id_problem passes nothing else
        piece.ids.append(doc_id)
        piece.texts.append(text)
        piece.valid_rows.append(row)

    def _jsonl_ids(self, id_field: str | None) -> tuple[str | None, str]:
        """The id field and type, from the first line that is a JSON object (every process decides alike)."""
        if id_field is None and self.text_field == "id":
            return None, "int64"  # the texts are in "id": number the rows
        name = id_field or "id"
        with open(self.path, "rb") as f:
            for row, raw in enumerate(f):
                try:
                    record = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if not isinstance(record, dict):
                    continue
                if name not in record:
                    if id_field is not None:
                        raise InputError(
                            f"{self.path} line {row + 1}: no {id_field!r} field for --id-field; name a field that "
                            "every record has, or leave --id-field out to number the rows."
                        )
                    return None, "int64"
                value = record[name]
                if isinstance(value, str):
                    return name, "string"
                if isinstance(value, int) and not isinstance(value, bool):
                    return name, "int64"
                raise InputError(
                    f"{self.path} line {row + 1}: the id {name!r} is {_json_type(value)}; ids must be integers or "
                    "strings (or pass --id-field for another field)."
                )
        return None, "int64"  # no records: nothing to embed

    # -- Parquet ---------------------------------------------------------------------

    def _parquet_schema(self, id_field: str | None) -> tuple[str | None, str]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            meta = pq.read_metadata(self.path)
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"{self.path}: not a readable Parquet file ({e}).") from None
        schema = meta.schema.to_arrow_schema()
        self.total_rows = meta.num_rows
        if self.text_field not in schema.names:
            raise InputError(
                f"{self.path}: no column {self.text_field!r} (columns: {', '.join(schema.names)}); pass --text-field."
            )
        text_type = schema.field(self.text_field).type
        if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
            raise InputError(f"{self.path}: column {self.text_field!r} is {text_type}; texts must be strings.")
        name = id_field or "id"
        if name not in schema.names or (id_field is None and self.text_field == "id"):
            if id_field is not None:
                columns = ", ".join(schema.names)
                raise InputError(f"{self.path}: no column {id_field!r} for --id-field (columns: {columns}).")
            return None, "int64"
        id_type = schema.field(name).type
        if pa.types.is_integer(id_type):
            return name, "int64"
        if pa.types.is_string(id_type) or pa.types.is_large_string(id_type):
            return name, "string"
        raise InputError(f"{self.path}: id column {name!r} is {id_type}; ids must be integers or strings.")

    def _parquet_pieces(
        self, shard_size: int, wanted: Callable[[int], bool], chunk_rows: int, chunk_bytes: int
    ) -> Iterator[Piece]:
        piece: Piece | None = None
        for r, text, doc_id in self._parquet_rows(shard_size, wanted, min(chunk_rows, shard_size)):
            shard = r // shard_size
            if piece is None or _full(piece, shard, chunk_rows, chunk_bytes):
                if piece is not None:
                    yield piece
                piece = Piece(shard)
            piece.rows += 1
            problem = self._parquet_problem(text, doc_id)
            if problem:
                piece.invalid.append(Invalid(r, self.where(r), problem))
            else:
                assert text is not None and doc_id is not None  # _parquet_problem refuses nulls
                piece.ids.append(doc_id)
                piece.texts.append(text)
                piece.valid_rows.append(r)
                piece.nbytes += len(text)
        if piece is not None:
            yield piece

    def _parquet_rows(
        self, shard_size: int, wanted: Callable[[int], bool], batch_rows: int
    ) -> Iterator[tuple[int, str | None, int | str | None]]:
        """``(row, text, id)`` of the wanted shards' rows; row groups without any are not read."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(self.path)
        columns = [self.text_field] + ([self.id_field] if self.id_field else [])
        start = 0
        for group in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(group).num_rows
            if any(wanted(k) for k in range(start // shard_size, (start + n - 1) // shard_size + 1)):
                row = start
                try:
                    for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns):
                        texts = batch.column(0).to_pylist()
                        ids = batch.column(1).to_pylist() if self.id_field else range(row, row + len(texts))
                        rows = range(row, row + len(texts))
                        yield from (t for t in zip(rows, texts, ids, strict=True) if wanted(t[0] // shard_size))
                        row += len(texts)
                except pa.ArrowException as e:
                    raise InputError(f"{self.path} row group {group}: cannot read it ({e}).") from None
            start += n
        self.rows_seen = start

    def _parquet_problem(self, text: str | None, doc_id: int | str | None) -> str | None:
        """Why a Parquet row cannot be embedded, or None."""
        if text is None:
            return f"{self.text_field!r} is null"
        if doc_id is None:
            return f"the id {self.id_field!r} is null"
        if isinstance(doc_id, int) and not INT64_RANGE[0] <= doc_id <= INT64_RANGE[1]:  # id_type "int64"
            return f"the id {self.id_field!r} is {doc_id}, outside the int64 range that ids are stored in"
        return None


def _full(piece: Piece, shard: int, chunk_rows: int, chunk_bytes: int) -> bool:
    """Whether the next row of ``shard`` needs a new piece."""
    return piece.shard != shard or piece.rows >= chunk_rows or piece.nbytes >= chunk_bytes


def _id_problem(value: object, id_type: str, field: str, *, present: bool) -> str | None:
    if not present:
        return f"no {field!r} field (the first record has one, so every record needs one)"
    if id_type == "string":
        if not isinstance(value, str):
            return f"the id {field!r} is {_json_type(value)}, not a string like the first record's"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"the id {field!r} holds a lone surrogate escape"
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return f"the id {field!r} is {_json_type(value)}, not an integer like the first record's"
    if not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
        return f"the id {field!r} does not fit in 64 bits"
    return None


def _json_type(value: object) -> str:
    return {
        type(None): "null",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)
