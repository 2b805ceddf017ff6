"""Ray Data: embed a dataset's text column, one encoder per actor.

.. code-block:: python

    import ray
    from gte_jax.ray import Embedder

    ds = ray.data.read_parquet("s3://bucket/corpus/")
    ds = ds.map_batches(
        Embedder,
        fn_constructor_kwargs={"model": "thenlper/gte-base", "dtype": "bfloat16"},
        batch_format="pyarrow",  # every other column passes through untouched
        compute=ray.data.ActorPoolStrategy(size=8),  # 8 actors; `concurrency=8` before Ray 2.51
        num_gpus=1,  # one GPU per actor
        batch_size=1024,  # rows per call; the encoder cuts them into device steps itself
    )
    ds.write_parquet("s3://bucket/emb/")  # every input column, plus embedding: fixed_size_list<float>[768]

The Embedder takes a batch in any of Ray's formats and gives it back in the same one. Prefer
``batch_format="pyarrow"``: no conversion, and columns keep their Arrow types (Ray's default numpy
format turns list columns into Python objects or tensors on the way back).

Resources, per actor (``map_batches`` keywords):

- ``num_gpus=1``: one GPU each; Ray sets ``CUDA_VISIBLE_DEVICES``, so JAX sees that GPU only.
  Workers need ``jax[cuda12]``.
- Several actors on one GPU (``num_gpus=0.5``): JAX preallocates 75% of a GPU's memory when it
  starts, so a second actor would not fit. Set ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (or
  ``XLA_PYTHON_CLIENT_MEM_FRACTION``) through ``runtime_env={"env_vars": {...}}``. Where none of
  JAX's memory variables is set and the actor holds a fraction of a GPU, the Embedder sets
  ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` itself, before JAX starts.
- TPU: one actor per TPU VM host, holding all of its chips: ``resources={"TPU": 4}`` (the chips of
  a host); one process opens a host's chips, and the actor splits each step over them.
- ``compute=ray.data.ActorPoolStrategy(size=n)``: the number of actors;
  ``ActorPoolStrategy(min_size=1, max_size=n)`` autoscales. Each actor takes a CPU by default
  (``num_cpus``): leave some to the tasks that read and write.
- ``batch_size``: within a call, texts are sorted by length into padded buckets, so larger calls
  pad less; 1,024-4,096 rows on an accelerator, a few hundred on CPU.

Each actor uses its own process's devices only (``mesh=gte_jax.engine.sharding.local_mesh()``): no
``jax.distributed``, no traffic between actors, any number of actors on any number of hosts.

Fault tolerance: Ray Data restarts a dead actor and retries the tasks it held, so every row comes out
exactly once (an unfinished task produces nothing). It does so by default (``max_restarts=-1``,
``max_task_retries=-1``); ``map_batches(..., max_restarts=3, max_task_retries=3)`` bounds it.

Warm-up: the constructor compiles every program the data path can run (``GTEEncoder.warmup()``)
before Ray sends the actor a batch. A batch may hold texts of any length, so a sample
(``warmup=texts``) can miss the bucket that a rare long document reaches hours later, and that actor
then stalls mid-run for a compile; an actor that sees many batches meets nearly every bucket anyway,
so compiling them all up front costs about the same and leaves the data path free of compiles. That is
39 programs for a 256-token model with the CPU defaults (about a second each on 2 CPU cores), 74 for a
512-token model with the accelerator defaults. To pay it once rather than per actor, point JAX's
persistent cache at a shared or per-node directory: ``runtime_env={"env_vars":
{"JAX_COMPILATION_CACHE_DIR": "/mnt/jax-cache", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}}``;
restarted and added actors then load the programs instead (in seconds, against the better part of a
minute of compiling). ``warmup=texts`` compiles only those texts' buckets (inputs known to be short),
``warmup=False`` nothing.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from gte_jax.errors import UserError, missing_extra

try:
    import ray
    from ray.util.metrics import Counter
except ImportError as e:
    raise missing_extra(e.name, "ray", "gte_jax.ray (Ray Data)") from e

from gte_jax.checkpoints.hub import DEFAULT_MODEL
from gte_jax.engine.encoder import GTEEncoder
from gte_jax.engine.sharding import local_mesh

__all__ = ["Embedder", "InvalidRowError"]

logger = logging.getLogger(__name__)

# What map_batches hands over (batch_format "numpy", "pandas" or "pyarrow"), and gets back in the same kind:
# dict[str, np.ndarray] | pandas.DataFrame | pyarrow.Table.
Batch = Any

_JAX_GPU_MEMORY_VARS = (
    "XLA_PYTHON_CLIENT_PREALLOCATE",
    "XLA_PYTHON_CLIENT_MEM_FRACTION",
    "XLA_PYTHON_CLIENT_ALLOCATOR",
)
_FROM_PRETRAINED = set(inspect.signature(GTEEncoder.from_pretrained).parameters) - {"name_or_path"}
_EXAMPLES_KEPT = 20


class InvalidRowError(ValueError, UserError):
    """A row's text is null, not a string, or not valid Unicode; the message names the row and column."""


class Embedder:
    """A Ray Data callable class: adds an embedding column to each batch.

    Pass the class itself to ``Dataset.map_batches`` (see the module docstring); Ray builds one per
    actor. It also works on its own, on a batch in hand.

    Args:
        model: a Hub id (``thenlper/gte-base``) or a model directory every worker can read.
        text_column: the column to embed.
        output_column: the column to add: ``fixed_size_list<float32>[dim]``, one vector per row
            (L2-normalised), the same type ``gte-jax embed`` writes. Every other column passes through.
        id_column: the column that names a row in error messages; without it, rows are named by
            their position in the batch.
        skip_invalid: drop rows whose text is null, not a string or not valid Unicode, and count them
            (the actor logs them, the Ray metric ``gte_jax_invalid_rows`` totals them); by default
            such a row stops the job with :class:`InvalidRowError` naming it.
        warmup: ``True`` compiles every program before the first batch (see the module docstring for
            why); a list of sample texts compiles only their length buckets; ``False`` nothing.
        **from_pretrained_kwargs: passed to :meth:`GTEEncoder.from_pretrained` (``dtype``,
            ``max_length``, ``batch_size``: texts per device step, not Ray's rows per call, ...).
            ``mesh`` defaults to this process's devices.

    Raises:
        TypeError: an argument :meth:`GTEEncoder.from_pretrained` does not take, or a bad ``warmup``.
        ValueError: empty or equal column names; as :meth:`GTEEncoder.from_pretrained` for the model.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        text_column: str = "text",
        output_column: str = "embedding",
        id_column: str | None = "id",
        skip_invalid: bool = False,
        warmup: bool | Iterable[str] = True,
        **from_pretrained_kwargs: Any,
    ):
        unknown = sorted(set(from_pretrained_kwargs) - _FROM_PRETRAINED)
        if unknown:
            raise TypeError(
                f"Embedder got unknown argument(s) {', '.join(unknown)}; it takes text_column, output_column, "
                "id_column, skip_invalid, warmup and GTEEncoder.from_pretrained's "
                f"{', '.join(sorted(_FROM_PRETRAINED))}."
            )
        for name, value in (("text_column", text_column), ("output_column", output_column)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty column name, not {value!r}.")
        if text_column == output_column:
            raise ValueError(f"text_column and output_column are both {text_column!r}; name the output another.")
        if isinstance(warmup, (str, bytes, Mapping)) or not isinstance(warmup, (bool, Iterable)):
            raise TypeError(f"warmup must be True, False or a list of sample texts, not {type(warmup).__name__}.")
        self.text_column = text_column
        self.output_column = output_column
        self.id_column = id_column
        self.skip_invalid = skip_invalid
        _share_gpu_memory()  # before JAX opens the GPU, in the encoder's load
        from_pretrained_kwargs.setdefault("mesh", local_mesh())
        self.encoder: GTEEncoder = GTEEncoder.shared(model, **from_pretrained_kwargs)
        if warmup is True:
            self.encoder.warmup()
        elif warmup is not False:
            self.encoder.warmup(list(warmup))
        self.rows_embedded = 0
        """Rows this instance embedded."""
        self.invalid_rows = 0
        """Rows this instance dropped (``skip_invalid=True``)."""
        self.invalid_examples: list[str] = []
        """The first 20 rows it dropped, each as ``row <name>: column <c> <reason>``."""
        self._dropped = Counter(
            "gte_jax_invalid_rows",
            description="Rows gte_jax.ray.Embedder dropped: text null, not a string or not valid Unicode.",
            tag_keys=("column",),
        )

    def __call__(self, batch: Batch) -> Batch:
        """Embeds ``batch[text_column]`` into a new ``output_column``; returns a batch of the same kind.

        Args:
            batch: a dict of numpy arrays, a pandas DataFrame or a pyarrow Table.

        Raises:
            InvalidRowError: a text is null, not a string or not valid Unicode, and ``skip_invalid`` is off.
            KeyError: the batch has no ``text_column``.
            ValueError: the batch already has an ``output_column``.
        """
        kind = _kind(batch)
        columns = _column_names(batch, kind)
        if self.text_column not in columns:
            raise KeyError(
                f"the batch has no column {self.text_column!r} (it has {', '.join(map(str, columns))}); "
                "pass Embedder's text_column."
            )
        if self.output_column in columns:
            raise ValueError(
                f"the batch already has a column {self.output_column!r}; pass another output_column, or drop it first."
            )
        texts = _values(batch, kind, self.text_column)
        bad = [(i, reason) for i, t in enumerate(texts) if (reason := _invalid(t)) is not None]
        if bad:
            batch, texts = self._drop(batch, kind, columns, texts, bad)
        vectors = self.encoder.encode([t if type(t) is str else str(t) for t in texts])
        self.rows_embedded += len(texts)
        return _with_column(batch, kind, self.output_column, _fixed_size_lists(vectors))

    def _drop(
        self, batch: Batch, kind: str, columns: list[Any], texts: list[Any], bad: list[tuple[int, str]]
    ) -> tuple[Batch, list[Any]]:
        """The batch and texts without the ``bad`` rows; raises instead unless ``skip_invalid``."""
        ids = _values(batch, kind, self.id_column) if self.id_column in columns else None

        def describe(i: int, reason: str) -> str:
            row = f"id={ids[i]!r}" if ids is not None else f"at index {i} of this batch"
            return f"row {row}: column {self.text_column!r} {reason}"

        if not self.skip_invalid:
            more = f" ({len(bad) - 1} more such row{'s' * (len(bad) > 2)} in this batch)" if len(bad) > 1 else ""
            hint = "" if ids is not None or self.id_column is None else f" (no {self.id_column!r} column to name it)"
            raise InvalidRowError(
                f"{describe(*bad[0])}{hint}{more}; fix or drop such rows before embedding, or pass "
                "skip_invalid=True to Embedder to drop them and count them."
            )
        before = self.invalid_rows
        self.invalid_rows += len(bad)
        room = _EXAMPLES_KEPT - len(self.invalid_examples)
        self.invalid_examples += [describe(i, reason) for i, reason in bad[: max(room, 0)]]
        self._dropped.inc(len(bad), tags={"column": self.text_column})
        # One line at the first drop, then one each time the count passes a power of ten: bad data cannot flood the log.
        if before == 0 or math.floor(math.log10(self.invalid_rows)) > math.floor(math.log10(before)):
            logger.warning(
                "gte_jax.ray.Embedder dropped %d invalid row(s) of %d in a batch, %d so far in this process; first: %s",
                len(bad),
                len(texts),
                self.invalid_rows,
                describe(*bad[0]),
            )
        keep = np.ones(len(texts), dtype=bool)
        keep[[i for i, _ in bad]] = False
        return _filter(batch, kind, keep), [t for t, k in zip(texts, keep, strict=True) if k]


def _share_gpu_memory() -> None:
    """On a fraction of a GPU (``num_gpus=0.5``), stops JAX from preallocating 75% of it.

    Only when the user set none of JAX's GPU memory variables; it must run before JAX opens the GPU.
    """
    if any(name in os.environ for name in _JAX_GPU_MEMORY_VARS) or not ray.is_initialized():
        return
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:  # the driver, or a process outside Ray: nothing was assigned
        return
    gpus = context.get_assigned_resources().get("GPU", 0)
    if 0 < gpus < 1:
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        logger.info("gte_jax.ray: this actor holds %s of a GPU; set XLA_PYTHON_CLIENT_PREALLOCATE=false.", gpus)


def _kind(batch: Batch) -> str:
    if isinstance(batch, pa.Table):
        return "arrow"
    if isinstance(batch, Mapping):
        return "dict"
    pd = sys.modules.get("pandas")  # a DataFrame can only come from a process that imported pandas
    if pd is not None and isinstance(batch, pd.DataFrame):
        return "pandas"
    raise TypeError(
        f"Embedder takes a batch as a dict of numpy arrays, a pandas DataFrame or a pyarrow Table (map_batches' "
        f"batch_format 'numpy', 'pandas' or 'pyarrow'), not {type(batch).__name__}."
    )


def _column_names(batch: Batch, kind: str) -> list[Any]:
    if kind == "arrow":
        return list(batch.column_names)
    return list(batch.columns) if kind == "pandas" else list(batch)


def _values(batch: Batch, kind: str, column: Any) -> list[Any]:
    """A column's values as Python objects (nulls as None or NaN)."""
    if kind == "arrow":
        return batch.column(column).to_pylist()
    values = batch[column]
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _invalid(text: object) -> str | None:
    """Why ``text`` cannot be embedded, or None."""
    if isinstance(text, str):
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                return f"holds a lone surrogate ({text[e.start]!r} at character {e.start}), which is not text"
        return None
    if _is_null(text):
        return "is null"
    if isinstance(text, (bytes, bytearray)):
        return "is bytes, not a string (decode it first)"
    return f"is {type(text).__name__}, not a string"


def _is_null(value: object) -> bool:
    """None, NaN (pandas' missing string), pandas.NA or pandas.NaT."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    return type(value).__name__ in ("NAType", "NaTType")


def _filter(batch: Batch, kind: str, keep: np.ndarray) -> Batch:
    """The rows of ``batch`` where ``keep`` is true, every column."""
    if kind == "arrow":
        return batch.filter(pa.array(keep))
    if kind == "pandas":
        return batch[keep]
    out = {}
    for name, values in batch.items():
        if isinstance(values, np.ndarray):
            out[name] = values[keep]
        elif isinstance(values, (pa.Array, pa.ChunkedArray)):
            out[name] = values.filter(pa.array(keep))
        else:
            out[name] = [v for v, k in zip(values, keep, strict=True) if k]
    return out


def _fixed_size_lists(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """``[rows, dim]`` float32 as Arrow ``fixed_size_list<float32>[dim]`` (no copy)."""
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors).reshape(-1)), vectors.shape[1])


def _with_column(batch: Batch, kind: str, name: str, column: pa.Array) -> Batch:
    """``batch`` plus a column, in the same kind; Ray stores it as the Arrow type given."""
    if kind == "arrow":
        return batch.append_column(name, column)
    if kind == "pandas":
        pd = sys.modules["pandas"]  # imported: the batch is a DataFrame
        return batch.assign(**{name: pd.arrays.ArrowExtensionArray(column)})
    return {**batch, name: column}
