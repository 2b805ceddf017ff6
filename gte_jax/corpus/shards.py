"""The output directory: Parquet shards that appear only when complete, and the manifests.

Shard ``k`` is ``part-{k:05d}.parquet``. It is written under a hidden name
(``.part-00003.parquet.tmp``), flushed to disk and renamed, so a file with the
final name is always whole; a job killed mid-shard leaves only the hidden
file, which the next run overwrites. Every other file starts with ``_`` or
``.``, so ``pyarrow.parquet.read_table(out_dir)`` reads exactly the shards.
"""

from __future__ import annotations

import contextlib
import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SHARD_RE = re.compile(r"^part-(\d{5,})\.parquet$")
METADATA_KEY = b"gte_jax.shard"
ID_TYPES = {"int64": pa.int64(), "string": pa.string()}


def shard_name(k: int) -> str:
    return f"part-{k:05d}.parquet"


def complete_shards(out_dir: str) -> set[int]:
    """Indices of the shards already in ``out_dir`` (a shard file is complete by construction)."""
    if not os.path.isdir(out_dir):
        return set()
    return {int(m.group(1)) for name in os.listdir(out_dir) if (m := SHARD_RE.match(name))}


def shard_info(out_dir: str, k: int) -> dict:
    """What a shard covers: ``first_row``, input ``rows``, and ``embedded``, ``invalid``, ``blank`` counts."""
    meta = pq.read_metadata(os.path.join(out_dir, shard_name(k))).metadata or {}
    return json.loads(meta[METADATA_KEY])


def schema(id_type: str, dim: int) -> pa.Schema:
    return pa.schema(
        [pa.field("id", ID_TYPES[id_type], nullable=False), pa.field("embedding", pa.list_(pa.float32(), dim))]
    )


def fsync_dir(path: str) -> None:
    """Makes a rename in ``path`` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json_atomic(path: str, data: dict) -> None:
    """Writes ``path`` under a hidden temporary name, then renames it into place."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(folder or ".")


class ShardWriter:
    """One shard being written: row groups appended to a hidden file, renamed into place by :meth:`commit`.

    The shard's :meth:`info` (rows covered, invalid rows) goes into the Parquet
    footer's key-value metadata, so a later run can total a shard without reading it.
    """

    def __init__(self, out_dir: str, k: int, first_row: int, id_type: str, dim: int):
        self.out_dir = out_dir
        self.k = k
        self.first_row = first_row
        self.rows = 0
        self.embedded = 0
        self.blank = 0
        self.invalid: list = []
        self.tmp = os.path.join(out_dir, f".{shard_name(k)}.tmp")
        self._schema = schema(id_type, dim)
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
        }

    def write(self, ids: list, vectors: np.ndarray) -> None:
        """Appends one row group."""
        dim = self._schema.field("embedding").type.list_size
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        ids = pa.array(ids, type=self._schema.field("id").type)
        self._writer.write_table(pa.table([ids, pa.FixedSizeListArray.from_arrays(flat, dim)], schema=self._schema))
        self.embedded += len(ids)

    def commit(self) -> str:
        """Finishes the shard, makes it durable and gives it its final name; returns the path."""
        self._writer.add_key_value_metadata({METADATA_KEY: json.dumps(self.info())})
        self._writer.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        path = os.path.join(self.out_dir, shard_name(self.k))
        os.replace(self.tmp, path)
        fsync_dir(self.out_dir)
        return path

    def abort(self) -> None:
        """Drops the partial shard."""
        with contextlib.suppress(Exception):
            self._writer.close()
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.tmp)
