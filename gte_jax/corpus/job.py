"""The corpus job: stream a file through the encoder into Parquet shards, resumable and multi-host.

Shard ``k`` holds input rows ``[k * shard_size, (k + 1) * shard_size)`` and is
written by process ``k % process_count``. A shard file exists only once it is
complete (see :mod:`gte_jax.corpus.shards`), so a rerun of the same command
checks the shards on disk, skips them and redoes the rest: after any crash the
result has every input row exactly once. Each process holds a lock on its
share of the output directory while it runs (see :mod:`gte_jax.corpus.lock`)
and writes its own manifest (see :mod:`gte_jax.corpus.manifest`: ``_manifest.json`` for one process,
``_manifest.process-K-of-N.json`` for several); they record the settings,
which a rerun must match, and every shard's rows and checksum. Quantised outputs
(``--precision``) keep one set of int8/uint8 ranges per output directory, recorded in the
manifests (see :mod:`gte_jax.corpus.calibration`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import numbers
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from gte_jax.checkpoints.hub import DEFAULT_MODEL
from gte_jax.corpus import shards
from gte_jax.corpus.lock import LockHeld, OutputLock
from gte_jax.corpus.manifest import (
    MANIFEST_VERSION,
    JobConflict,
    check_settings,
    load_manifests,
    manifest_path,
    recorded_quantization,
    settings_digest,
    write_manifest,
)
from gte_jax.corpus.options import OptionError, embed_texts, load_encoder, make_ranges, quantize, resolve_options
from gte_jax.corpus.progress import Progress
from gte_jax.corpus.shards import OutputError
from gte_jax.corpus.sources import InputError, Piece, Source, detect_format, fingerprint, scan
from gte_jax.engine.quantization import PRECISIONS, RANGED
from gte_jax.errors import UserError

if TYPE_CHECKING:
    from gte_jax.engine.encoder import GTEEncoder

__all__ = ["EmbedJob", "EmbeddingError", "InputError", "JobConflict", "OptionError", "OutputError", "run"]


class EmbeddingError(UserError):
    """The model gave non-finite embeddings; the message names the input rows."""


@dataclasses.dataclass(frozen=True)
class EmbedJob:
    """What to embed and how; the fields mirror ``gte-jax embed``'s options."""

    input: str
    """Corpus file: ``.txt`` (a text per line), ``.jsonl`` or ``.parquet``."""
    output: str
    """Directory of Parquet shards (created if missing)."""
    model: str = DEFAULT_MODEL
    """Hub id or local model directory."""
    format: str | None = None
    """``txt``, ``jsonl`` or ``parquet``; from the suffix when None."""
    text_field: str = "text"
    """JSON key or Parquet column of the text."""
    id_field: str | None = None
    """JSON key or Parquet column of the id; None: ``id`` if present, else the 0-based row number."""
    dtype: str = "float32"
    """Compute dtype, ``float32``, ``bfloat16`` or ``int8``; embeddings are stored as float32 either way."""
    max_length: int | None = None
    """Truncation length in tokens; the model's default when None."""
    batch_size: int | None = None
    """Most texts per device step, across this process's devices; None: the backend's default."""
    shard_size: int = 100_000
    """Input rows per output shard."""
    skip_invalid: bool = False
    """Skip (and count) rows that cannot be embedded instead of stopping."""
    normalize: bool = True
    """L2-normalise the embeddings (after ``truncate_dim``)."""
    quiet: bool = False
    """No progress bar or summary."""
    truncate_dim: int | None = None
    """Keep the first this many dimensions (Matryoshka); the model's default (all) when None."""
    precision: str = "float32"
    """How vectors are stored: ``float32``, ``int8``, ``uint8``, ``binary`` or ``ubinary`` (see
    :mod:`gte_jax.engine.quantization`)."""
    prompt_name: str | None = None
    """One of the model's prompts to put before every text; the model's default prompt (if any) when None."""
    calibration: str | None = None
    """int8/uint8 ranges: a ``.npy`` of them, or a ``.txt``/``.jsonl``/``.parquet`` of texts to take them
    from; None: the first shard of the input (see :mod:`gte_jax.corpus.calibration`)."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "shard_size", "truncate_dim"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not supported; use one of {PRECISIONS}.")


def model_id(model: str) -> str:
    """The model as recorded in the manifest: a directory by its real path, a Hub id as given."""
    path = os.path.expanduser(model)
    return os.path.realpath(path) if os.path.isdir(path) else model


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run(job: EmbedJob) -> dict:
    """Embeds ``job.input`` into ``job.output``; continues a previous run of the same job.

    Returns:
        This process's manifest (also written to the output directory).

    Raises:
        InputError: the input cannot be read, or a row is invalid and ``skip_invalid`` is off;
            the message names the file and line. Shards finished before it stay (a rerun resumes).
        JobConflict: the output directory holds a different job, or another process is running this one.
        OutputError: the output directory cannot be created or written (full disk included), or holds a
            damaged or foreign shard or manifest; the message names the file.
        EmbeddingError: the model gave NaN or infinite embeddings; the message names the rows.
        OptionError: ``max_length``, ``dtype``, ``truncate_dim`` or ``prompt_name`` does not fit the model, or
            int8/uint8 ranges cannot be had from ``calibration`` or the input.
    """
    import jax

    source = Source(job.input, detect_format(job.input, job.format), text_field=job.text_field, id_field=job.id_field)
    process, count = jax.process_index(), jax.process_count()
    # Everything that can be checked without the output directory is, before it is created.
    enc = load_encoder(job.model, dtype=job.dtype, max_length=job.max_length)
    state = _JobRun(job, source, enc, process, count)
    state.plan()
    out = prepare_output(job.output)
    with _holding_lock(out, process):
        state.check()
        state.start()
        state.embed_shards()
        return state.finish()


def prepare_output(out: str) -> str:
    """Creates the output directory if missing.

    Raises:
        OutputError: ``out`` is a file, or cannot be created or written in.
    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputError(f"--output {out} is a file, not a directory; choose a directory (it is created if missing).")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        message = f"cannot create the output directory {out} ({e.strerror}); choose another --output."
        raise OutputError(message) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write in the output directory {out}; choose a writable --output directory.")
    return out


@contextlib.contextmanager
def _holding_lock(out: str, process: int) -> Iterator[OutputLock]:
    """Holds process ``process``'s lock on ``out`` (see :mod:`gte_jax.corpus.lock`)."""
    try:
        lock = OutputLock(out, process).acquire()
    except LockHeld as e:
        who = f"pid {e.holder.get('pid', 'unknown')} on host {e.holder.get('host', 'unknown')}"
        since = f", since {e.holder['started']}" if "started" in e.holder else ""
        raise JobConflict(
            f"{out} is in use by another gte-jax embed ({who}{since}; lock file {e.path}); wait for it to finish "
            "or stop it, then rerun, or choose another --output directory."
        ) from None
    except OSError as e:
        raise OutputError(
            f"cannot write in the output directory {out} ({e.strerror}); choose a writable --output directory."
        ) from None
    if not lock.supported:
        print(
            f"gte-jax embed: warning: {out} does not support file locks; make sure no other job writes there.",
            file=sys.stderr,
        )
    try:
        yield lock
    finally:
        lock.release()


class _JobRun:
    """One process's run of a job, in steps: :meth:`plan` (before the output directory exists), :meth:`check`,
    :meth:`start`, :meth:`embed_shards`, :meth:`finish`."""

    def __init__(self, job: EmbedJob, source: Source, enc: GTEEncoder, process: int, count: int):
        self.job, self.source, self.enc = job, source, enc
        self.process, self.count = process, count
        self.out = job.output
        self.size = job.shard_size
        self.prompt, self.dim = resolve_options(enc, job)
        input_fingerprint, lines = scan(job.input)
        if source.total_rows is None:
            source.total_rows = lines
        self.settings = {
            "model": model_id(job.model),
            "dtype": job.dtype,
            "max_length": enc.max_length,
            "dimension": self.dim,
            "pooling": enc.pooling,
            "normalize": job.normalize,
            "input": {"format": source.format, **input_fingerprint},
            "text_field": source.text_field,
            "id_field": source.id_field,
            "id_type": source.id_type,
            "shard_size": job.shard_size,
            **self._encode_settings(),
        }
        self.ranges: np.ndarray | None = None  # int8/uint8: fixed by check(), before any shard
        self.quantization: dict | None = None  # the manifest's record of them
        self.digest = settings_digest(self.settings)
        self.manifest_file = manifest_path(self.out, process, count)
        self.manifest: dict = {}
        self.infos: dict[int, dict] = {}  # shard footers, checked or written by this run
        self.records: dict[int, dict] = {}  # shard entries of the manifest
        self.done: set[int] = set()
        self.written = 0
        self.progress: Progress | None = None

    def mine(self, k: int) -> bool:
        return k % self.count == self.process

    def _encode_settings(self) -> dict:
        """The encode options, recorded only when set, so that a default job's settings stay as they were."""
        job = self.job
        extra: dict = {}
        if job.truncate_dim is not None and job.truncate_dim != self.enc.dim:  # not the model's own
            extra["truncate_dim"] = job.truncate_dim
        if job.prompt_name is not None:
            extra["prompt_name"] = job.prompt_name
        if self.prompt:
            extra["prompt"] = self.prompt
        if job.precision != "float32":
            extra["precision"] = job.precision
        if job.calibration is not None:
            extra["calibration"] = {"path": os.path.abspath(job.calibration), **fingerprint(job.calibration)}
        return extra

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """Float vectors of ``texts`` as this job makes them, and their token count."""
        return embed_texts(
            self.enc,
            texts,
            self.job.batch_size,
            self.job.normalize,
            prompt=self.prompt,
            truncate_dim=self.job.truncate_dim,
        )

    def fix_ranges(self, manifests: dict[str, dict]) -> None:
        """int8/uint8: the ranges a manifest already holds, else new ones (see :mod:`gte_jax.corpus.calibration`);
        they join the digest that every shard records.

        Raises:
            JobConflict: the manifests of this output hold different ranges.
            OptionError: the calibration file or rows cannot give ranges.
        """
        if self.job.precision not in RANGED:
            return
        recorded = recorded_quantization(manifests, self.out, self.dim)
        if recorded is not None:
            self.quantization = recorded
            self.ranges = np.asarray(self.quantization["ranges"], dtype=np.float32)
        elif self.quantization is None:  # else plan() made them, before the output directory existed
            self.ranges, source = self._new_ranges()
            self.quantization = {"precision": self.job.precision, "ranges": self.ranges.tolist(), "from": source}
        self.digest = settings_digest({**self.settings, "ranges": self.quantization["ranges"]})

    def _new_ranges(self) -> tuple[np.ndarray, str]:
        return make_ranges(self.job, self._embed_only, self.dim, self.source.format, self.size)

    def _embed_only(self, texts: list[str]) -> np.ndarray:
        return self.embed(texts)[0]

    # -- steps --------------------------------------------------------------------------

    def plan(self) -> None:
        """What can be settled before the output directory is created (or locked): whether it holds another
        job, and the int8/uint8 ranges, which :meth:`check` then confirms under the lock."""
        manifests, self.settings = check_settings(self.out, self.settings)
        self.fix_ranges(manifests)

    def check(self) -> None:
        """Checks, before anything is written, that the output directory holds this job: the manifests'
        settings, and each finished shard of ours (by its footer, and its size against the manifest)."""
        manifests, self.settings = check_settings(self.out, self.settings)
        self.digest = settings_digest(self.settings)
        self.fix_ranges(manifests)
        recorded = {
            s["shard"]: (s, path)
            for path, m in manifests.items()
            for s in m.get("shards", [])
            if isinstance(s, dict) and isinstance(s.get("shard"), int) and self.mine(s["shard"])
        }
        self.done = {k for k in shards.complete_shards(self.out) if self.mine(k)}
        for k in sorted(self.done):
            self.infos[k] = shards.verify_shard(
                self.out,
                k,
                shard_size=self.size,
                job=self.digest,
                id_type=self.source.id_type,
                dim=self.dim,
                precision=self.job.precision,
            )
            self.records[k] = self._known_record(k, *recorded.get(k, (None, None)))

    def start(self) -> None:
        """Writes the manifest as ``running`` and clears what killed runs of this process left behind."""
        self.manifest = {
            "format_version": MANIFEST_VERSION,
            "settings": self.settings,
            "job": self.digest,
            "input_path": os.path.abspath(self.job.input),
            "process": {"index": self.process, "count": self.count},
            "status": "running",
            "started": _now(),
            **({"quantization": self.quantization} if self.quantization else {}),
            "shards": self._records(),
        }
        write_manifest(self.manifest_file, self.manifest)
        if self.process == 0:  # after a rerun with another process count, the old layout's manifests would double-count
            layout = {manifest_path(self.out, k, self.count) for k in range(self.count)}
            for stale in set(load_manifests(self.out)) - layout:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(stale)
        shards.remove_leftovers(self.out, self.mine, self.manifest_file)

    def embed_shards(self) -> None:
        """The shard loop: embeds every row of this process's unfinished shards, committing each shard whole.

        On an error the open shard is dropped and the manifest says ``stopped``, with the error.
        """
        total, initial = self._bar_rows()
        if self.done and not self.job.quiet:
            print(self._resuming(), file=sys.stderr)
        self.progress = Progress(total, self._bar_label(), enabled=not self.job.quiet, initial=initial)
        writer = None
        try:
            for piece in self.source.pieces(self.size, lambda k: self.mine(k) and k not in self.done):
                if writer is not None and writer.k != piece.shard:
                    self._commit(writer)
                    writer = None
                if writer is None:
                    writer = self._open(piece.shard)
                self._add(writer, piece)
            if writer is not None:
                self._commit(writer)
                writer = None
            if self.source.rows_seen == 0 and self.process == 0 and 0 not in self.done:
                self._commit(self._open(0))  # an empty corpus still gets shard 0, an empty table
        except BaseException as e:
            if writer is not None:
                writer.abort()
            self.progress.close()
            if isinstance(e, Exception):
                self._record_stop(e)
            raise
        self.progress.close()

    def finish(self) -> dict:
        """Writes the manifest as ``complete``, with the totals of this process's shards; prints a summary."""
        assert self.progress is not None, "finish() before embed_shards()"
        rows = self.source.rows_seen
        n_shards = max(1, -(-rows // self.size))
        mine = [k for k in range(n_shards) if self.mine(k)]
        infos = [self.infos[k] for k in mine]
        invalid_rows = [r for info in infos for r in info.get("invalid_rows", [])]
        self.manifest.update(
            status="complete",
            updated=_now(),
            input_rows=rows,
            shards_total=n_shards,
            rows={
                "input": sum(i["rows"] for i in infos),
                **{key: sum(i[key] for i in infos) for key in ("embedded", "invalid", "blank")},
            },
            invalid_examples=invalid_rows[:20],
            shards=[self.records[k] for k in mine],
            this_run=self.progress.summary(),
        )
        write_manifest(self.manifest_file, self.manifest)
        if not self.job.quiet:
            print(self._summary(len(mine)), file=sys.stderr)
        return self.manifest

    # -- helpers ------------------------------------------------------------------------

    def _known_record(self, k: int, record: dict | None, manifest: str | None) -> dict:
        """Shard ``k``'s manifest entry, checked against the file when a manifest recorded one."""
        path = os.path.join(self.out, shards.shard_name(k))
        size = os.path.getsize(path)
        if record is not None and record.get("bytes") != size:
            raise OutputError(
                f"{path} has {size} bytes, but {manifest} recorded {record.get('bytes')!r} when it was written; "
                "it was replaced: delete it and rerun the same command to redo it."
            )
        if record is not None and "sha256" in record:
            return record
        info = {key: v for key, v in self.infos[k].items() if key not in ("invalid_rows", "job")}
        return {"file": shards.shard_name(k), **info, "bytes": size, "sha256": shards.file_sha256(path)}

    def _records(self) -> list[dict]:
        return [self.records[k] for k in sorted(self.records)]

    def _open(self, k: int) -> shards.ShardWriter:
        try:
            return shards.ShardWriter(
                self.out, k, k * self.size, self.source.id_type, self.dim, self.digest, self.job.precision
            )
        except OSError as e:
            raise OutputError(self._write_failed(k, e)) from None

    def _add(self, writer: shards.ShardWriter, piece: Piece) -> None:
        """Embeds ``piece`` into ``writer``'s shard, refusing invalid rows (unless skipped) and non-finite vectors."""
        if piece.invalid and not self.job.skip_invalid:
            raise InputError(self._invalid(piece))
        vectors, n_tokens = self.embed(piece.texts)
        bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        if bad.size:
            raise EmbeddingError(self._non_finite(piece, bad))
        if self.job.precision != "float32":
            source = self.quantization["from"] if self.quantization else None
            vectors = quantize(vectors, self.job.precision, self.ranges, source)
        try:
            writer.add(piece, vectors)
        except OSError as e:
            raise OutputError(self._write_failed(writer.k, e)) from None
        assert self.progress is not None  # set by embed_shards, the only caller
        self.progress.update(piece.rows, n_tokens)

    def _commit(self, writer: shards.ShardWriter) -> None:
        try:
            info = writer.commit()
        except OSError as e:
            raise OutputError(self._write_failed(writer.k, e)) from None
        self.written += 1
        self.infos[writer.k] = info
        self.records[writer.k] = {
            "file": shards.shard_name(writer.k),
            **{key: v for key, v in info.items() if key not in ("invalid_rows", "job")},
        }
        self.manifest.update(shards=self._records(), updated=_now())
        write_manifest(self.manifest_file, self.manifest)

    def _record_stop(self, error: Exception) -> None:
        """Marks the manifest ``stopped``; on a full disk, where even that fails, rewrites it in place."""
        stopped = {**self.manifest, "status": "stopped", "error": str(error), "updated": _now()}
        try:
            shards.write_json_atomic(self.manifest_file, stopped)
        except OSError:
            with contextlib.suppress(OSError), open(self.manifest_file, "w", encoding="utf-8") as f:
                json.dump(stopped, f, indent=2)

    def _shard_rows(self, k: int) -> int:
        total = self.source.total_rows
        assert total is not None  # counted by __init__
        return max(0, min(self.size, total - k * self.size))

    def _bar_rows(self) -> tuple[int | None, int]:
        """The bar's total (this process's share of the input) and its start (the rows of its finished shards)."""
        if self.source.total_rows is None:
            return None, 0
        mine = [k for k in range(max(1, -(-self.source.total_rows // self.size))) if self.mine(k)]
        return sum(self._shard_rows(k) for k in mine), sum(self._shard_rows(k) for k in self.done)

    def _resuming(self) -> str:
        """What a rerun found done: ``resuming emb/: shards 0-3, 5 of 8 are done (50 rows); embedding the rest``."""
        done = sorted(self.done)
        spans: list[str] = []
        for k in done:
            if spans and k - 1 in self.done:
                spans[-1] = f"{spans[-1].split('-')[0]}-{k}"
            else:
                spans.append(str(k))
        total = self.source.total_rows
        of = f" of {max(1, -(-total // self.size))}" if total is not None else ""
        rows = sum(self.infos[k]["rows"] for k in done)
        return (
            f"resuming {self.out}: shard{'s' if len(done) > 1 else ''} {', '.join(spans)}{of} "
            f"{'are' if len(done) > 1 else 'is'} done ({rows} rows); embedding the rest."
        )

    def _invalid(self, piece: Piece) -> str:
        """The error for a piece with invalid rows. When the input's very first rows all fail the same way, an
        option is likely wrong (--text-field, --format), and --skip-invalid would skip every row: say so."""
        first = piece.invalid[0]
        first_rows = piece.shard == 0 and not piece.texts and self.progress is not None and self.progress.rows == 0
        if not first_rows or len({i.reason for i in piece.invalid}) > 1:
            return f"{first}; fix it, or pass --skip-invalid to skip such rows."
        more = len(piece.invalid) - 1
        same = f" (as do the {more} rows after it)" if more else ""
        if first.fields:
            fields = ", ".join(repr(f) for f in first.fields)
            hint = (
                f"--text-field {self.source.text_field!r} is probably wrong: the records have {fields}; pass "
                "--text-field with the one that holds the texts"
            )
        else:
            hint = f"check that {self.source.path} is the file you meant, read as {self.source.format} (--format)"
        return f"{first}{same}; {hint}."

    def _bar_label(self) -> str:
        return "embedding" if self.count == 1 else f"embedding (process {self.process}/{self.count})"

    def _write_failed(self, k: int, e: OSError) -> str:
        return (
            f"cannot write {os.path.join(self.out, shards.shard_name(k))} ({e.strerror}); free some space (or raise "
            "the file size limit), then rerun the same command to resume."
        )

    def _non_finite(self, piece: Piece, bad: np.ndarray) -> str:
        where = [self.source.where(piece.valid_rows[i]) for i in bad[:5]]
        more = f" and {bad.size - 5} more" if bad.size > 5 else ""
        hint = f"; {self.job.dtype} may overflow: try --dtype float32" if self.job.dtype != "float32" else ""
        return (
            f"the model gave NaN or infinite embeddings for {', '.join(where)}{more}; nothing of shard "
            f"{piece.shard} was written. Check the model's weights for NaN/inf{hint}, then rerun to resume."
        )

    def _summary(self, n_shards: int) -> str:
        counts = self.manifest["rows"]
        if self.written == 0:
            return f"{self.out} was already complete: {counts['embedded']} rows in {n_shards} shard(s); nothing to do."
        skipped = (
            f"; skipped {counts['invalid']} invalid row(s), listed in {self.manifest_file}" if counts["invalid"] else ""
        )
        if not self.done:
            return f"{counts['embedded']} rows embedded into {n_shards} shard(s) in {self.out}{skipped}"
        now = sum(self.infos[k]["embedded"] for k in self.infos if k not in self.done)
        return (
            f"{now} rows embedded into {self.written} new shard(s); with the {len(self.done)} done before, {self.out} "
            f"holds {counts['embedded']} rows in {n_shards} shard(s){skipped}"
        )
