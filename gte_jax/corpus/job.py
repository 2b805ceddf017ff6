"""The corpus job: stream a file through the encoder into Parquet shards, resumable and multi-host.

Shard ``k`` holds input rows ``[k * shard_size, (k + 1) * shard_size)`` and is
written by process ``k % process_count``. A shard file exists only once it is
complete (see :mod:`gte_jax.corpus.shards`), so a rerun of the same command
skips the shards on disk and redoes the rest: after any crash the result has
every input row exactly once. Each process writes its own manifest
(``_manifest.json`` for one process, ``_manifest.process-K-of-N.json`` for
several); they record the settings, which a rerun must match.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import os
import sys
import time

import numpy as np

from gte_jax.corpus import shards
from gte_jax.corpus.sources import InputError, Source, detect_format, fingerprint
from gte_jax.hub import DEFAULT_MODEL

MANIFEST_VERSION = 1


class JobConflict(ValueError):
    """The output directory holds the shards of a different job."""


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
    """Compute dtype, ``float32`` or ``bfloat16``; embeddings are stored as float32 either way."""
    max_length: int | None = None
    """Truncation length in tokens; the model's default when None."""
    batch_size: int = 64
    """Most texts per device step."""
    shard_size: int = 100_000
    """Input rows per output shard."""
    skip_invalid: bool = False
    """Skip (and count) rows that cannot be embedded instead of stopping."""
    normalize: bool = True
    """L2-normalise the embeddings."""
    quiet: bool = False
    """No progress bar or summary."""


def model_id(model: str) -> str:
    """The model as recorded in the manifest: a directory by its real path, a Hub id as given."""
    path = os.path.expanduser(model)
    return os.path.realpath(path) if os.path.isdir(path) else model


def manifest_path(out_dir: str, process: int, count: int) -> str:
    name = "_manifest.json" if count == 1 else f"_manifest.process-{process:05d}-of-{count:05d}.json"
    return os.path.join(out_dir, name)


def load_manifests(out_dir: str) -> dict[str, dict]:
    """Every manifest in ``out_dir``, by path (one that vanishes or is half-read by a race is skipped)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(out_dir), "_manifest*.json"))):
        try:
            with open(path, encoding="utf-8") as f:
                found[path] = json.load(f)
        except (OSError, ValueError):
            continue
    return found


def check_settings(out_dir: str, settings: dict) -> None:
    """Refuses an output directory that holds a different job's shards, or files that are not ours.

    Raises:
        JobConflict: the message names each differing setting.
    """
    manifests = load_manifests(out_dir)
    for path, manifest in manifests.items():
        old = manifest.get("settings", {})
        if old != settings:
            diffs = [
                f"{key} {old.get(key)!r} (now {settings.get(key)!r})"
                for key in sorted(set(old) | set(settings))
                if old.get(key) != settings.get(key)
            ]
            raise JobConflict(
                f"{out_dir} holds embeddings made with different settings ({path} has {'; '.join(diffs)}); "
                "rerun with the same options to resume, or choose a new --output directory."
            )
    if not manifests:
        ours = ("_", ".")
        strangers = [n for n in os.listdir(out_dir) if not n.startswith(ours)] if os.path.isdir(out_dir) else []
        if strangers:
            raise JobConflict(
                f"{out_dir} is not empty and has no _manifest.json (it holds {strangers[0]!r}); "
                "choose a new or empty --output directory."
            )


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def embed_texts(enc, texts: list[str], batch_size: int, normalize: bool) -> tuple[np.ndarray, int]:
    """``[len(texts), dim]`` float32 embeddings and the number of tokens they took."""
    token_ids = enc.tokenize(texts)
    out = enc.encode_tokens(token_ids, batch_size=batch_size, normalize=normalize)
    return out, sum(len(t) for t in token_ids)


def load_encoder(model: str, *, dtype: str, max_length: int | None):
    """The model on this process's devices only: each host encodes its shards independently."""
    from gte_jax import GTEEncoder, sharding

    return GTEEncoder.shared(model, dtype=dtype, max_length=max_length, mesh=sharding.local_mesh())


def run(job: EmbedJob) -> dict:
    """Embeds ``job.input`` into ``job.output``; continues a previous run of the same job.

    Returns:
        This process's manifest (also written to the output directory).

    Raises:
        InputError: the input cannot be read, or a row is invalid and ``skip_invalid`` is off;
            the message names the file and line. Shards finished before it stay (a rerun resumes).
        JobConflict: the output directory holds a different job.
        ValueError: a bad option value.
    """
    import jax

    if job.shard_size < 1 or job.batch_size < 1:
        raise ValueError("--shard-size and --batch-size must be positive.")
    source = Source(job.input, detect_format(job.input, job.format), text_field=job.text_field, id_field=job.id_field)
    process, count = jax.process_index(), jax.process_count()
    enc = load_encoder(job.model, dtype=job.dtype, max_length=job.max_length)
    settings = {
        "model": model_id(job.model),
        "dtype": job.dtype,
        "max_length": enc.max_length,
        "dimension": enc.dim,
        "pooling": enc.pooling,
        "normalize": job.normalize,
        "input": {"format": source.format, **fingerprint(job.input)},
        "text_field": source.text_field,
        "id_field": source.id_field,
        "id_type": source.id_type,
        "shard_size": job.shard_size,
    }
    out = job.output
    check_settings(out, settings)
    os.makedirs(out, exist_ok=True)
    manifest_file = manifest_path(out, process, count)
    manifest = {
        "format_version": MANIFEST_VERSION,
        "settings": settings,
        "input_path": os.path.abspath(job.input),
        "process": {"index": process, "count": count},
        "status": "running",
        "started": _now(),
    }
    shards.write_json_atomic(manifest_file, manifest)
    if process == 0:  # after a rerun with another process count, the old layout's manifests would double-count
        layout = {manifest_path(out, k, count) for k in range(count)}
        for stale in set(load_manifests(out)) - layout:
            os.remove(stale)

    done = shards.complete_shards(out)
    size = job.shard_size
    total = None
    if source.total_rows is not None and count == 1:  # rows left to embed, for the bar
        total = max(0, source.total_rows - sum(min(size, source.total_rows - k * size) for k in done))
    bar = None
    if not job.quiet:
        from tqdm.auto import tqdm

        desc = "embedding" if count == 1 else f"embedding (process {process}/{count})"
        bar = tqdm(total=total, unit="row", desc=desc, file=sys.stderr, dynamic_ncols=True)

    writer = None
    rows_done = tokens = 0
    start = time.perf_counter()
    try:
        for piece in source.pieces(size, lambda k: k % count == process and k not in done):
            if writer is not None and writer.k != piece.shard:
                writer.commit()
                writer = None
            if writer is None:
                writer = shards.ShardWriter(out, piece.shard, piece.shard * size, source.id_type, enc.dim)
            if piece.invalid and not job.skip_invalid:
                raise InputError(f"{piece.invalid[0]}; fix it, or pass --skip-invalid to skip such rows.")
            vectors, n_tokens = embed_texts(enc, piece.texts, job.batch_size, job.normalize)
            writer.write(piece.ids, vectors)
            writer.rows += piece.rows
            writer.blank += piece.blank
            writer.invalid.extend(piece.invalid)
            rows_done += piece.rows
            tokens += n_tokens
            if bar is not None:
                bar.update(piece.rows)
                bar.set_postfix_str(f"{tokens / max(time.perf_counter() - start, 1e-9):,.0f} tok/s", refresh=False)
        if writer is not None:
            writer.commit()
            writer = None
    except BaseException as e:
        if writer is not None:
            writer.abort()
        if bar is not None:
            bar.close()
        if isinstance(e, Exception):
            shards.write_json_atomic(
                manifest_file, {**manifest, "status": "stopped", "error": str(e), "updated": _now()}
            )
        raise
    if bar is not None:
        bar.close()

    rows = source.rows_seen
    n_shards = max(1, -(-rows // size))  # an empty corpus still gets shard 0, an empty table
    if rows == 0 and process == 0 and 0 not in shards.complete_shards(out):
        shards.ShardWriter(out, 0, 0, source.id_type, enc.dim).commit()
    mine = [shards.shard_info(out, k) for k in range(n_shards) if k % count == process]
    invalid_rows = [r for info in mine for r in info.pop("invalid_rows")]
    manifest.update(
        status="complete",
        updated=_now(),
        input_rows=rows,
        shards_total=n_shards,
        rows={
            "input": sum(i["rows"] for i in mine),
            **{k: sum(i[k] for i in mine) for k in ("embedded", "invalid", "blank")},
        },
        invalid_examples=invalid_rows[:20],
        shards=[{"file": shards.shard_name(info["shard"]), **info} for info in mine],
        this_run={"rows": rows_done, "tokens": tokens, "seconds": round(time.perf_counter() - start, 3)},
    )
    shards.write_json_atomic(manifest_file, manifest)
    if not job.quiet:
        counts = manifest["rows"]
        skipped = (
            f"; skipped {counts['invalid']} invalid row(s), listed in {manifest_file}" if counts["invalid"] else ""
        )
        print(
            f"{counts['embedded']} rows embedded into {len(mine)} shard(s) in {out}{skipped}",
            file=sys.stderr,
        )
    return manifest
