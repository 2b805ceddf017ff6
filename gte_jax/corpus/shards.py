"""The output directory: Parquet shards that appear only when complete, and the manifests.

Shard ``k`` is ``part-{k:05d}.parquet``. It is written under a hidden name
(``.part-00003.parquet.<pid>.tmp``), flushed to disk and renamed, so a file
with the final name is always whole; a job killed mid-shard leaves only the
hidden file, which the next run of that process removes. Every other file
starts with ``_`` or ``.``, so ``pyarrow.parquet.read_table(out_dir)`` reads
exactly the shards.

Each shard's footer records which shard of which job it is (index, first input
row, row counts, a digest of the job's settings), so a resumed job can tell a
shard it wrote from one copied or renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gte_jax.engine.quantization import quantized_dim
from gte_jax.errors import UserError

if TYPE_CHECKING:
    from gte_jax.corpus.sources import Invalid, Piece

# Stored element type per precision (see gte_jax.engine.quantization); float32 unless the job quantises.
VALUE_TYPES = {
    "float32": pa.float32(),
    "int8": pa.int8(),
    "uint8": pa.uint8(),
    "binary": pa.int8(),
    "ubinary": pa.uint8(),
}
SHARD_RE = re.compile(r"^part-(\d{5,})\.parquet$")
SHARD_TMP_RE = re.compile(r"^\.part-(\d{5,})\.parquet(?:\.\d+)?\.tmp$")  # ours only: never other hidden files
METADATA_KEY = b"gte_jax.shard"
ID_TYPES = {"int64": pa.int64(), "string": pa.string()}


class OutputError(UserError):
    """The output directory cannot be used as it is (not writable, full, or holding a damaged file)."""


def shard_name(k: int) -> str:
    return f"part-{k:05d}.parquet"


def complete_shards(out_dir: str) -> set[int]:
    """Indices of the shards already in ``out_dir`` (a shard file is complete by construction)."""
    if not os.path.isdir(out_dir):
        return set()
    return {int(m.group(1)) for name in os.listdir(out_dir) if (m := SHARD_RE.match(name))}


def shard_info(out_dir: str, k: int) -> dict:
    """What shard ``k`` covers, from its footer: ``shard``, ``first_row``, input ``rows``, ``job`` (the
    settings digest), and ``embedded``, ``invalid``, ``blank`` counts.

    Raises:
        OutputError: the file is not a whole shard written by gte-jax; the message names it.
    """
    path = os.path.join(out_dir, shard_name(k))
    try:
        meta = pq.read_metadata(path)
        info = json.loads((meta.metadata or {})[METADATA_KEY])
    except (OSError, ValueError, KeyError, pa.ArrowException) as e:
        detail = "no gte-jax shard record in its footer" if isinstance(e, KeyError) else str(e)
        raise OutputError(
            f"{path} is not a whole shard written by gte-jax ({detail}); delete it and rerun the same command "
            "to redo that shard."
        ) from None
    if not isinstance(info, dict):
        raise OutputError(f"{path}: its gte-jax shard record is not an object; delete it and rerun to redo it.")
    info["_num_rows"] = meta.num_rows
    info["_schema"] = meta.schema.to_arrow_schema().remove_metadata()
    return info


def verify_shard(
    out_dir: str, k: int, *, shard_size: int, job: str, id_type: str, dim: int, precision: str = "float32"
) -> dict:
    """Shard ``k``'s footer record after checking that it is shard ``k`` of this job.

    Raises:
        OutputError: the file is damaged, or is another shard or another job's (copied or
            renamed into place); the message names the file and says what differs.
    """
    info = shard_info(out_dir, k)
    expected = {"shard": k, "first_row": k * shard_size, "job": job}
    wrong = [f"{key} {info.get(key)!r} (expected {want!r})" for key, want in expected.items() if info.get(key) != want]
    rows, embedded = info.get("rows"), info.get("embedded")
    if not (isinstance(rows, int) and 0 <= rows <= shard_size and (rows > 0 or k == 0)):
        wrong.append(f"rows {rows!r} (expected 1 to {shard_size})")
    if embedded != info.pop("_num_rows"):
        wrong.append(f"embedded {embedded!r} (the file holds a different number of rows)")
    expected_schema = schema(id_type, dim, precision)
    if info.pop("_schema") != expected_schema:
        wrong.append(f"a schema other than id {id_type}, embedding {expected_schema.field('embedding').type}")
    if wrong:
        raise OutputError(
            f"{os.path.join(out_dir, shard_name(k))} is not shard {k} of this job (it records {'; '.join(wrong)}); "
            "it was copied, renamed or made by another job: delete it and rerun the same command to redo it."
        )
    return info


def schema(id_type: str, dim: int, precision: str = "float32") -> pa.Schema:
    """``id`` and ``embedding``: ``fixed_size_list<float32>[dim]``, ``<int8|uint8>[dim]`` for int8 / uint8, or
    ``<int8|uint8>[ceil(dim / 8)]`` packed bits for binary / ubinary."""
    embedding = pa.list_(VALUE_TYPES[precision], quantized_dim(dim, precision))
    return pa.schema([pa.field("id", ID_TYPES[id_type], nullable=False), pa.field("embedding", embedding)])


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: str) -> None:
    """Makes a rename in ``path`` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def tmp_name(path: str) -> str:
    """The hidden, per-process name ``path`` is written under before the rename."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{os.getpid()}.tmp")


def write_json_atomic(path: str, data: dict) -> None:
    """Writes ``path`` under a hidden temporary name, then renames it into place (no temporary file stays)."""
    tmp = tmp_name(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_dir(os.path.dirname(path) or ".")


def remove_leftovers(out_dir: str, mine: Callable[[int], bool], manifest: str) -> list[str]:
    """Deletes the temporary files that killed runs of this process left: shards ``k`` with ``mine(k)``, and
    ``manifest``'s. Only names of our own temporary pattern are touched; returns the names removed."""
    manifest_tmp = re.compile(rf"^\.{re.escape(os.path.basename(manifest))}\.\d+\.tmp$")
    removed = []
    for name in os.listdir(out_dir):
        m = SHARD_TMP_RE.match(name)
        if (m and mine(int(m.group(1)))) or manifest_tmp.match(name):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(out_dir, name))
            removed.append(name)
    return removed


class ShardWriter:
    """One shard being written: row groups appended to a hidden file, renamed into place by :meth:`commit`.

    The writer counts what the shard covers (input rows, blank and invalid rows, embedded
    vectors); :meth:`info` goes into the Parquet footer's key-value metadata, so a later
    run can check and total a shard without reading it.

    Args:
        out_dir: the output directory.
        k: the shard index.
        first_row: the shard's first input row.
        id_type: ``"int64"`` or ``"string"``.
        dim: the embedding size (before binary packing).
        job: a digest of the job's settings, recorded so a rerun knows the shard is its own.
        precision: how vectors are stored, see :func:`schema`; :meth:`add` takes them already quantised.
    """

    def __init__(
        self, out_dir: str, k: int, first_row: int, id_type: str, dim: int, job: str, precision: str = "float32"
    ):
        self.out_dir = out_dir
        self.k = k
        self.first_row = first_row
        self.job = job
        self.rows = 0
        self.embedded = 0
        self.blank = 0
        self.invalid: list[Invalid] = []
        self.path = os.path.join(out_dir, shard_name(k))
        self.tmp = tmp_name(self.path)
        self._schema = schema(id_type, dim, precision)
        self._file = open(self.tmp, "wb")  # noqa: SIM115 (closed by commit or abort)
        self._writer = pq.ParquetWriter(self._file, self._schema)

    def info(self) -> dict:
        return {
            "shard": self.k,
            "first_row": self.first_row,
            "rows": self.rows,
            "embedded": self.embedded,
            "invalid": len(self.invalid),
            "blank": self.blank,
            "invalid_rows": [{"row": i.row, "where": i.where, "reason": i.reason} for i in self.invalid[:20]],
            "job": self.job,
        }

    def add(self, piece: Piece, vectors: np.ndarray) -> None:
        """Appends a :class:`~gte_jax.corpus.sources.Piece`: its valid rows' ``vectors`` as one row group, and
        its counts of input, blank and invalid rows."""
        if piece.ids:
            self.write(piece.ids, vectors)
        self.rows += piece.rows
        self.blank += piece.blank
        self.invalid.extend(piece.invalid)

    def write(self, ids: list[int | str], vectors: np.ndarray) -> None:
        """Appends one row group."""
        embedding = self._schema.field("embedding").type
        dtype = embedding.value_type.to_pandas_dtype()
        flat = pa.array(np.ascontiguousarray(vectors, dtype=dtype).reshape(-1), type=embedding.value_type)
        ids = pa.array(ids, type=self._schema.field("id").type)
        column = pa.FixedSizeListArray.from_arrays(flat, embedding.list_size)
        self._writer.write_table(pa.table([ids, column], schema=self._schema))
        self.embedded += len(ids)

    def commit(self) -> dict:
        """Finishes the shard, makes it durable and gives it its final name.

        Returns:
            :meth:`info` plus the file's ``bytes`` and ``sha256``.
        """
        info = self.info()
        self._writer.add_key_value_metadata({METADATA_KEY: json.dumps(info)})
        self._writer.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        digest = file_sha256(self.tmp)  # from the page cache, just written
        size = os.path.getsize(self.tmp)
        os.replace(self.tmp, self.path)
        fsync_dir(self.out_dir)
        return {**info, "bytes": size, "sha256": digest}

    def abort(self) -> None:
        """Drops the partial shard; never raises, even when closing fails again (a full disk)."""
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(OSError):
            self._file.close()  # flushing may fail again; the file is closed regardless
        with contextlib.suppress(OSError):
            os.remove(self.tmp)
