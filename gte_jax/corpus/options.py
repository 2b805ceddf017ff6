"""The model and the encode options of ``gte-jax embed``, shared by the corpus job and quick mode (``--text``,
stdin): loading the model, resolving ``--prompt-name``, ``--truncate-dim`` and ``--calibration`` against it,
embedding, and quantising with fixed int8/uint8 ranges.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from gte_jax.corpus import calibration
from gte_jax.corpus.sources import Source
from gte_jax.engine.prompts import prompt_tokens_if_too_long, resolve_prompt, too_long_prompt
from gte_jax.engine.quantization import RANGED, quantize_embeddings
from gte_jax.errors import UserError

if TYPE_CHECKING:
    from gte_jax.corpus.job import EmbedJob
    from gte_jax.engine.encoder import GTEEncoder


# The command line names no prompt text itself: prompts come from the checkpoint.
CLI_NO_PROMPTS = 'add a "prompts" map to the model\'s config_sentence_transformers.json, or drop --prompt-name'


class OptionError(UserError):
    """An option does not fit the model (``--max-length`` beyond its position limit, an unknown ``--dtype``)."""


def embed_texts(
    enc: GTEEncoder,
    texts: list[str],
    batch_size: int | None,
    normalize: bool,
    *,
    prompt: str = "",
    truncate_dim: int | None = None,
) -> tuple[np.ndarray, int]:
    """``[len(texts), dim]`` float32 embeddings and the number of tokens they took (``prompt`` put before
    each text, as ``enc.encode(texts, prompt=prompt)`` does)."""
    token_ids = enc.prepare(texts, prompt=prompt)
    out = enc.encode_tokens(token_ids, batch_size=batch_size, normalize=normalize, truncate_dim=truncate_dim)
    return out, sum(len(t) for t in token_ids)


def resolve_options(enc: GTEEncoder, job: EmbedJob) -> tuple[str, int]:
    """The prompt text (``""`` for none) and the float dimension of the job's vectors.

    Raises:
        OptionError: ``--prompt-name`` is not one of the model's prompts, the model cannot take a
            prompt, the prompt fills ``max_length`` (every text would get the same vector),
            ``--truncate-dim`` is beyond the model's dimension, or ``--calibration`` is given for a
            precision without ranges, or cannot give ranges (a .npy of unusable ranges, a file of texts
            that is missing or of another kind).
    """
    try:
        prompt = resolve_prompt(enc.prompts, enc.default_prompt_name, None, job.prompt_name, no_prompts=CLI_NO_PROMPTS)
    except ValueError as e:
        raise OptionError(f"--prompt-name: {e}") from None
    count = prompt_tokens_if_too_long(enc.tokenizer, prompt)
    if count is not None:
        limit = enc.config.max_position_embeddings
        raise OptionError(
            f"{too_long_prompt(prompt, count, enc.max_length)}; choose a shorter prompt (--prompt-name) or a larger "
            f"--max-length (the model takes up to {limit})."
        )
    if job.truncate_dim is not None and job.truncate_dim > enc.pooled_dim:
        raise OptionError(
            f"--truncate-dim {job.truncate_dim} is more than the model's {enc.pooled_dim} dimensions; "
            f"use 1 to {enc.pooled_dim}."
        )
    if job.calibration is not None and job.precision not in RANGED:
        raise OptionError(f"--calibration sets int8/uint8 ranges; it does not apply to --precision {job.precision}.")
    dim = job.truncate_dim or enc.dim
    if job.calibration is not None:
        try:  # what can be checked before the job embeds anything (texts are checked once embedded)
            if calibration.is_ranges_file(job.calibration):
                calibration.load_ranges(job.calibration, dim)
            else:
                calibration.calibration_source(job.calibration, job.text_field)
        except calibration.CalibrationError as e:
            raise OptionError(str(e)) from None
    return prompt, dim


def load_encoder(model: str, *, dtype: str, max_length: int | None) -> GTEEncoder:
    """The model on this process's devices only: each host encodes its shards independently.

    Raises:
        OptionError: ``dtype`` or ``max_length`` does not fit the model.
        ModelNotFoundError, ConfigError, CheckpointError: as :meth:`GTEEncoder.from_pretrained`.
    """
    from gte_jax import GTEEncoder
    from gte_jax.engine import sharding
    from gte_jax.errors import CheckpointError, ConfigError

    try:
        return GTEEncoder.shared(model, dtype=dtype, max_length=max_length, mesh=sharding.local_mesh())
    except (ConfigError, CheckpointError):  # the model's files: the callers' to report as they are
        raise
    except ValueError as e:  # what from_pretrained refuses of the arguments themselves
        raise OptionError(f"{e} (check --max-length and --dtype)") from e


def quantize(vectors: np.ndarray, precision: str, ranges: np.ndarray | None, source: str | None) -> np.ndarray:
    """``vectors`` at ``precision``, with the job's fixed int8/uint8 ``ranges`` (taken from ``source``).

    Raises:
        OptionError: the ranges cannot separate these vectors (see :func:`gte_jax.engine.quantization.check_separates`).
    """
    try:
        return np.asarray(quantize_embeddings(vectors, precision, ranges=ranges))
    except ValueError as e:
        raise OptionError(f"the int8/uint8 ranges of {source} cannot be used: {e}") from None


def make_ranges(
    job: EmbedJob,
    embed: Callable[[list[str]], np.ndarray],
    dim: int,
    input_format: str | None,
    shard_size: int,
) -> tuple[np.ndarray, str]:
    """int8/uint8 ranges for ``job`` and where they came from: ``--calibration``, else the input's first shard
    (``input_format`` None: there is no input file to take them from).

    Raises:
        OptionError: the calibration file or rows cannot give ranges, or none was given where one is needed.
    """
    try:
        if job.calibration is not None and calibration.is_ranges_file(job.calibration):
            return calibration.load_ranges(job.calibration, dim), job.calibration
        if job.calibration is not None:
            source = calibration.calibration_source(job.calibration, job.text_field)
            ranges, n = calibration.ranges_from_texts(source, embed, limit=None, first_shard=None)
            return ranges, f"{n} texts of {job.calibration}"
    except calibration.CalibrationError as e:
        raise OptionError(str(e)) from None
    if input_format is None:
        raise OptionError(
            f"--precision {job.precision} needs fixed ranges for --text or stdin: pass --calibration with a .npy of "
            "[2, dim] ranges or a .txt/.jsonl/.parquet of representative texts."
        )
    source = Source(job.input, input_format, text_field=job.text_field, id_field=job.id_field)
    limit = min(shard_size, calibration.CALIBRATION_ROWS)
    try:
        ranges, n = calibration.ranges_from_texts(source, embed, limit=limit, first_shard=shard_size)
    except calibration.CalibrationError as e:
        raise OptionError(str(e)) from None
    return ranges, f"the first {n} texts of the input (shard 0)"
