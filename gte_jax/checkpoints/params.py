"""Hugging Face BERT checkpoint -> NNX state, as a key table plus small transforms.

Reading is numpy-only for safetensors; ``pytorch_model.bin`` needs torch and
is read with ``weights_only=True``. Every problem (missing, unexpected,
mis-shaped or non-float tensors) is collected and reported in one error:
a model is never left with random weights.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike

from gte_jax.checkpoints.hub import FLAX_WEIGHTS, WEIGHT_FILES
from gte_jax.errors import CheckpointError
from gte_jax.models.bert.config import GTEConfig
from gte_jax.models.bert.modeling import BertModel
from gte_jax.models.family import Family
from gte_jax.models.heads import CrossEncoderModel, cross_encoder_conversion


def map_key(hf_key: str, family: Family | None = None) -> list[str] | None:
    """The NNX path(s) a checkpoint key loads into (several for a fused tensor), or None if it has none."""
    return (family or _bert()).conversion.nnx_path(hf_key)


def _bert() -> Family:
    from gte_jax.models.bert import FAMILY

    return FAMILY


def find_weights(model_dir: str) -> str:
    """The weights file to load from ``model_dir``, by preference order of :data:`WEIGHT_FILES`.

    Raises:
        CheckpointError: no weights file; or ``gte_jax.safetensors`` beside Hugging Face weights, which
            transformers and sentence-transformers would read instead: which of the two is current cannot
            be told, and reading either could silently give another model's vectors.
    """
    found = [name for name in WEIGHT_FILES if os.path.isfile(os.path.join(model_dir, name))]
    if FLAX_WEIGHTS in found and len(found) > 1:
        raise CheckpointError(
            f"{model_dir} holds both {FLAX_WEIGHTS} (gte-jax convert's) and {found[1]} (which transformers and "
            f"sentence-transformers read), so it is unclear which weights are current; delete the stale one "
            f"(if the model was trained or saved into this folder later, that is {FLAX_WEIGHTS})."
        )
    if found:
        return os.path.join(model_dir, found[0])
    raise CheckpointError(
        f"{model_dir}: no weights found; expected one of {', '.join(WEIGHT_FILES)}. "
        "Pass a Hugging Face BERT model directory or one written by `gte-jax convert`."
    )


def check_vocab(tokenizer_vocab_size: int, cfg: GTEConfig, model_dir: str) -> None:
    """Checks that every id the tokenizer can produce has a row in the embedding table.

    Out-of-range ids would otherwise be looked up silently as NaN vectors.

    Args:
        tokenizer_vocab_size: one more than the tokenizer's largest id, added tokens included.
        cfg: the model's config; its ``vocab_size`` is the embedding table's row count.
        model_dir: named in the error.

    Raises:
        CheckpointError: the tokenizer has more ids than the embedding table has rows.
    """
    if tokenizer_vocab_size > cfg.vocab_size:
        raise CheckpointError(
            f"{model_dir}: the tokenizer vocabulary has {tokenizer_vocab_size} ids but the embedding table has "
            f"{cfg.vocab_size} rows (vocab_size in config.json), so ids {cfg.vocab_size} and above have no "
            "embedding; use the tokenizer files that were published with these weights."
        )


def _corrupt(path: str, error: BaseException) -> CheckpointError:
    """The error for a weights file that cannot be parsed, with the reader's first sentence as the reason."""
    lines = str(error).strip().splitlines()
    reason = lines[0].split(". ")[0].rstrip(".") if lines else type(error).__name__  # torch's run on for lines
    again = "run `gte-jax convert` again" if os.path.basename(path) == FLAX_WEIGHTS else "download the model again"
    return CheckpointError(f"{path} is corrupt or truncated ({reason}); delete it and {again}.")


def _read_safetensors(path: str) -> Iterator[tuple[str, np.ndarray]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy") as f:  # checks that the file holds every tensor it lists
            for key in f.keys():
                yield key, f.get_tensor(key)
    except SafetensorError as e:
        raise _corrupt(path, e) from None


def _read_torch(path: str) -> Iterator[tuple[str, np.ndarray]]:
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path} is a PyTorch pickle and torch is not installed; install torch "
            "(pip install torch) or use a checkpoint with model.safetensors."
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:  # what torch raises for cut-off files
        raise _corrupt(path, e) from None
    for key, t in state.items():
        yield key, (t.float() if t.is_floating_point() else t).numpy()


def _read_index(path: str) -> list[str]:
    """The shard files a ``*.index.json`` names, each checked to exist."""
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except ValueError as e:  # not JSON, or not UTF-8
        raise _corrupt(path, e) from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{path} has no weight_map from tensor names to shard files; download the model again.")
    folder = os.path.dirname(path)
    shards = [os.path.join(folder, name) for name in sorted(set(weight_map.values()))]
    for shard in shards:
        if not os.path.isfile(shard):
            raise CheckpointError(f"{path} lists the shard {shard}, which does not exist; download the model again.")
    return shards


def read_tensors(path: str) -> Iterator[tuple[str, np.ndarray]]:
    """Yields ``(key, array)`` from a weights file or a sharded checkpoint's index.

    Raises:
        CheckpointError: a file is truncated or corrupt, or a shard is missing; it names the file.
    """
    if path.endswith(".index.json"):
        for shard in _read_index(path):
            yield from read_tensors(shard)
    elif path.endswith(".safetensors"):
        yield from _read_safetensors(path)
    else:
        yield from _read_torch(path)


def abstract_model(
    cfg: GTEConfig,
    dtype: DTypeLike = jnp.float32,
    attention_impl: str = "einsum",
    act_dtype: DTypeLike | None = None,
    family: Family | None = None,
) -> BertModel:
    """The model's structure with shapes and dtypes but no memory (``nnx.eval_shape``)."""
    build = (family or _bert()).build
    return nnx.eval_shape(
        lambda: build(cfg, dtype=dtype, act_dtype=act_dtype, attention_impl=attention_impl, rngs=nnx.Rngs(0))
    )


def load_model(
    weights_path: str,
    cfg: GTEConfig,
    *,
    dtype: DTypeLike = jnp.float32,
    act_dtype: DTypeLike | None = None,
    attention_impl: str = "einsum",
    sharding: Callable[[str], jax.sharding.Sharding] | None = None,
    family: Family | None = None,
    num_labels: int | None = None,
) -> Any:
    """Builds the family's module with the weights in ``weights_path``.

    Args:
        weights_path: a file from :func:`find_weights`: Hugging Face keys, or NNX
            paths for :data:`FLAX_WEIGHTS`.
        cfg: the model's shapes; each tensor is checked against them.
        dtype: parameter dtype; checkpoint floats are cast to it.
        act_dtype: the hidden states' dtype (see :class:`BertModel`).
        attention_impl: see :mod:`gte_jax.kernels.attention`.
        sharding: maps an NNX path to the parameter's sharding (default device when None).
        family: the model family (its module and conversion rules); BERT when None.
        num_labels: load a sequence-classification checkpoint (a cross-encoder) with this many labels: a
            :class:`~gte_jax.models.heads.CrossEncoderModel` with the family's head.

    Raises:
        CheckpointError: listing every missing, unexpected or mis-shaped tensor.
    """
    family = family or _bert()
    conversion = family.conversion
    build: Callable[[], Any] = lambda: family.build(  # noqa: E731
        cfg, dtype=dtype, act_dtype=act_dtype, attention_impl=attention_impl, rngs=nnx.Rngs(0)
    )
    if num_labels is not None:
        if family.head is None:
            raise CheckpointError(f"{weights_path}: gte_jax has no classification head for {family.name} models.")
        head = family.head
        conversion = cross_encoder_conversion(family.conversion, head)
        encoder_only = build
        build = lambda: CrossEncoderModel(  # noqa: E731
            encoder_only(), head.build(cfg, num_labels, dtype=dtype, rngs=nnx.Rngs(0))
        )
    graphdef, abstract = nnx.split(nnx.eval_shape(build))
    targets = {".".join(map(str, path)): var for path, var in nnx.to_flat_state(abstract)}
    native = os.path.basename(weights_path) == FLAX_WEIGHTS
    values: dict[str, jax.Array] = {}
    errors: list[str] = []
    seen: set[str] = set()  # paths with a tensor, loaded or not: not also reported missing
    for key, tensor in read_tensors(weights_path):
        paths = [key] if native else conversion.nnx_path(key)
        if paths is None and not native and conversion.is_ignored(key):  # a rule wins: a head over "pooler."
            continue
        if paths is None or any(p not in targets for p in paths):
            errors.append(f"unexpected key {key!r}")
            continue
        if seen.intersection(paths):
            errors.append(f"{key!r} is given twice (for {', '.join(sorted(seen.intersection(paths)))})")
            continue
        seen.update(paths)
        if not jnp.issubdtype(tensor.dtype, jnp.floating):  # numpy's own test misses ml_dtypes' bfloat16
            errors.append(f"{key!r} has dtype {tensor.dtype}, expected a float tensor")
            continue
        try:
            arrays = [(key, tensor)] if native else conversion.to_nnx(key, tensor, cfg) or []
        except ValueError:  # a reshape that cannot fit
            arrays = []
        fits = [(p, a) for p, a in arrays if tuple(a.shape) == tuple(targets[p].shape)]
        if len(fits) != len(paths) or not arrays:
            want = ", ".join(f"{p} of shape {tuple(targets[p].shape)}" for p in paths)
            errors.append(f"{key!r} has shape {tuple(tensor.shape)}, which does not fit {want}")
            continue
        for path, array in arrays:
            placement = sharding(path) if sharding is not None else None
            values[path] = jax.device_put(np.asarray(array, dtype=targets[path].dtype), placement)
    errors += [f"missing key for {path} (shape {tuple(targets[path].shape)})" for path in targets if path not in seen]
    if errors:
        raise CheckpointError(
            f"{weights_path} does not fit a {family.name} model of {cfg} ({len(errors)} problems):\n  "
            + "\n  ".join(errors)
        )
    for keys, var in nnx.to_flat_state(abstract):
        var.set_value(values[".".join(map(str, keys))])
    return nnx.merge(graphdef, abstract)


def save_flax_weights(model: BertModel, path: str) -> None:
    """Writes the model's parameters as float32 safetensors keyed by NNX path."""
    from safetensors.numpy import save_file

    _, state = nnx.split(model)
    tensors = {".".join(map(str, p)): np.asarray(v.get_value(), dtype=np.float32) for p, v in nnx.to_flat_state(state)}
    save_file(tensors, path, metadata={"format": "gte_jax"})
