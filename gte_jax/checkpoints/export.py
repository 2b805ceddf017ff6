"""NNX state -> a sentence-transformers model folder with Hugging Face BERT names.

The family's conversion rules (:mod:`gte_jax.models.rules`) read backwards, each key checked to
load back onto the parameter it came from, so that a saved folder loads into exactly the same
parameters. The folder is what ``SentenceTransformer(DIR)``,
``transformers.AutoModel.from_pretrained(DIR)`` and ``GTEEncoder.from_pretrained(DIR)`` all read:
``model.safetensors`` (float32), ``config.json``, the tokenizer files, ``modules.json``,
``1_Pooling/config.json``, ``sentence_bert_config.json`` and ``config_sentence_transformers.json``
(sentence-transformers' classic layout, which every version since 2.0 loads).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

import jax
import numpy as np
from flax import nnx
from tokenizers import Tokenizer as HFTokenizer

from gte_jax.checkpoints.hub import SAFE_WEIGHTS, WEIGHT_FILES, read_json
from gte_jax.checkpoints.params import find_weights, read_tensors
from gte_jax.checkpoints.sentence_config import SentenceConfig, read_sentence_config
from gte_jax.errors import UserError
from gte_jax.models import family_of
from gte_jax.models.bert.config import GTEConfig
from gte_jax.models.bert.modeling import BertModel
from gte_jax.models.pooling import pooling_modes


class TokenizerFiles(Protocol):
    """What export needs of a tokenizer (:class:`gte_jax.engine.tokenization.Tokenizer` is one): its
    ``tokenizers`` backend, written as ``tokenizer.json``, and its length."""

    backend: Any
    max_length: int


# gte_jax pooling mode -> the sentence-transformers Pooling config key that turns it on (the classic keys).
_POOLING_KEYS = {
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean": "pooling_mode_mean_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
# The source model's licence travels with the weights derived from it.
LICENSE_FILES = ("LICENSE", "NOTICE")
# Weights files a folder may hold besides the one written here: every reader would pick one, and not the same.
OTHER_WEIGHTS = tuple(name for name in WEIGHT_FILES if name != SAFE_WEIGHTS)


class ExportError(ValueError, UserError):
    """The output folder cannot take the export (a file, or it holds weights of another model)."""


def check_output(path: str) -> None:
    """Checks that ``path`` can become a model folder whose only weights are the exported ones.

    ``model.safetensors`` is replaced, other files kept; other weights files (``gte_jax.safetensors``,
    a sharded index, ``pytorch_model.bin``) are not this export's to delete, and a loader could read them
    instead of the new weights, so they are refused.

    Raises:
        ExportError: ``path`` is a file, or holds another weights file (named, with what to do).
    """
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ExportError(f"{path} is a file; the model is written as a folder, so name a folder.")
    stale = [name for name in OTHER_WEIGHTS if os.path.lexists(os.path.join(path, name))]
    if stale:
        raise ExportError(
            f"{path} already holds {', '.join(stale)}, weights of another model that loaders would read instead "
            f"of (or besides) the new {SAFE_WEIGHTS}; write the model to another folder, or delete "
            f"{'them' if len(stale) > 1 else 'it'} first."
        )


# Tensors a BERT checkpoint carries that embedding never uses; kept from the source so that transformers
# loads the export without newly initialised weights (what sentence-transformers' own save does).
_PASSTHROUGH = re.compile(r"^(bert\.)?pooler\.")


def hf_tensors(model: BertModel | nnx.State, cfg: GTEConfig) -> dict[str, np.ndarray]:
    """The parameters as float32 Hugging Face ``BertModel`` tensors (keys without a ``bert.`` prefix).

    Args:
        model: the module, or its state (``nnx.state(model)``, for example a train state's params).
        cfg: the model's config (shapes for the reshapes).

    Raises:
        ValueError: a parameter has no Hugging Face name (a module this exporter does not know).
    """
    state = nnx.state(model) if isinstance(model, nnx.Module) else model
    conversion = family_of(cfg).conversion
    out: dict[str, np.ndarray] = {}
    for keys, var in nnx.to_flat_state(state):
        path = ".".join(map(str, keys))
        key, tensor = conversion.to_hf(path, np.asarray(var.get_value(), dtype=np.float32), cfg)
        if conversion.nnx_path(key) != [path]:  # the table read backwards must land where it started
            raise ValueError(f"the conversion rules map {path} to {key}, which loads into {conversion.nnx_path(key)}")
        out[key] = tensor
    return out


def save_pretrained(
    model: BertModel | nnx.State,
    path: str,
    *,
    config: GTEConfig | None = None,
    source_dir: str | None = None,
    tokenizer: TokenizerFiles | None = None,
    sentence: SentenceConfig | None = None,
) -> str:
    """Writes a sentence-transformers folder with the family's Hugging Face weights (transformers' native layout).

    Args:
        model: the module or its parameter state.
        path: the folder (created if missing; files of the same names are replaced, others kept; one that
            holds other weights files is refused, see :func:`check_output`). Files get the usual permissions
            (``0o666`` less the umask), and the source's ``LICENSE`` and ``NOTICE`` are copied.
        config: the model's config (``model.config`` when a module is given).
        source_dir: the model directory the weights came from: its tokenizer files, ``config.json``
            extras and unused tensors (the BERT pooler) are carried over.
        tokenizer: written as ``tokenizer.json`` when ``source_dir`` has no tokenizer files.
        sentence: the sentence-transformers settings to write (pooling and its folder, ``include_prompt``,
            a ``Normalize`` module or not, ``max_seq_length``, prompts, default prompt, similarity function,
            ``truncate_dim``). By default ``source_dir``'s own; without a source, the family's pooling,
            a ``Normalize`` module (gte_jax's vectors are unit length by default) and the tokenizer's length.

    Returns:
        ``path``.

    Raises:
        ExportError: ``path`` is a file or holds other weights.
        ValueError: neither ``source_dir`` nor ``tokenizer`` gives tokenizer files, an unknown pooling mode,
            an int8 model (:mod:`gte_jax.models.int8`; save its float32 original), or weights that are not finite.
    """
    from safetensors.numpy import save_file

    state = nnx.state(model) if isinstance(model, nnx.Module) else model
    if any(getattr(leaf, "dtype", None) == np.int8 for leaf in jax.tree_util.tree_leaves(state)):  # gte_jax.models.int8
        raise ValueError(
            "save_pretrained writes float weights, and this model's dense layers are int8 (dtype='int8'): "
            "save the model loaded with dtype='float32' instead (int8 is applied again at load)."
        )
    if isinstance(model, nnx.Module):
        config = config or getattr(model, "config", None)
    if config is None:
        raise ValueError("save_pretrained needs config= when given a parameter state instead of a BertModel.")
    family = family_of(config)
    if sentence is None:
        sentence = _default_sentence(config, family.default_pooling, source_dir, tokenizer)
    modes = pooling_modes(sentence.pooling)  # raises ValueError for a mode gte_jax does not pool with
    tokenizer_files = [f for f in TOKENIZER_FILES if source_dir and os.path.isfile(os.path.join(source_dir, f))]
    if not tokenizer_files and tokenizer is None:
        raise ValueError("save_pretrained needs the tokenizer: pass source_dir= (a model directory) or tokenizer=.")
    check_output(path)
    tensors = hf_tensors(model, config)
    broken = [key for key, t in tensors.items() if not np.isfinite(t).all()]
    if broken:
        raise ValueError(
            f"{len(broken)} of the model's {len(tensors)} tensors hold NaN or infinite values ({', '.join(broken[:3])}"
            f"{', ...' if len(broken) > 3 else ''}); such a model gives NaN vectors, so it is not saved."
        )
    hf_config: dict[str, Any] = {}
    if source_dir:
        hf_config = read_json(source_dir, "config.json") or {}
        tensors.update(_passthrough_tensors(source_dir))
    native = family.write_config(config)
    if hf_config.get("model_type") != native["model_type"]:
        # Another class's config (the hub's NewModel): its options describe that class's layout, not these weights.
        hf_config = {}
    # The weights are in transformers' native layout, which remote code (auto_map) would misread.
    hf_config = {k: v for k, v in hf_config.items() if not k.startswith("_") and k != "auto_map"}
    hf_config.update(native)

    folder = sentence.pooling_folder
    os.makedirs(os.path.join(path, folder), exist_ok=True)
    with _replacing(os.path.join(path, "model.safetensors")) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})
    _write_json(path, "config.json", hf_config)
    licenses = [f for f in LICENSE_FILES if source_dir and os.path.isfile(os.path.join(source_dir, f))]
    for name in (*tokenizer_files, *licenses):
        with _replacing(os.path.join(path, name)) as tmp:
            shutil.copyfile(os.path.join(source_dir or "", name), tmp)
    if not tokenizer_files and tokenizer is not None:
        backend = HFTokenizer.from_str(tokenizer.backend.to_str())  # a copy, without our truncation
        backend.no_truncation()
        backend.no_padding()
        with _replacing(os.path.join(path, "tokenizer.json")) as tmp:
            backend.save(tmp)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": folder, "type": "sentence_transformers.models.Pooling"},
    ]
    if sentence.normalize_module:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    _write_json(path, "modules.json", modules)
    pooling_config: dict[str, Any] = {"word_embedding_dimension": config.hidden_size}
    pooling_config.update({key: mode in modes for mode, key in _POOLING_KEYS.items()})
    _write_json(path, f"{folder}/config.json", {**pooling_config, "include_prompt": sentence.include_prompt})
    max_length = sentence.max_seq_length or (tokenizer.max_length if tokenizer else config.max_position_embeddings)
    _write_json(path, "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
    _write_json(
        path,
        "config_sentence_transformers.json",
        {
            "__version__": _versions(),
            "prompts": dict(sentence.prompts),
            "default_prompt_name": sentence.default_prompt_name,
            "similarity_fn_name": sentence.similarity_fn_name or "cosine",
            "truncate_dim": sentence.truncate_dim,
        },
    )
    return path


def _default_sentence(
    config: Any, default_pooling: str, source_dir: str | None, tokenizer: TokenizerFiles | None
) -> SentenceConfig:
    if source_dir:
        return read_sentence_config(source_dir, default_pooling=default_pooling)
    length = tokenizer.max_length if tokenizer is not None else None
    return SentenceConfig(pooling=default_pooling, normalize_module=True, max_seq_length=length)


def _passthrough_tensors(source_dir: str) -> dict[str, np.ndarray]:
    try:
        weights = find_weights(source_dir)
    except ValueError:
        return {}
    if os.path.basename(weights) == "gte_jax.safetensors":  # NNX keys: nothing beyond the parameters
        return {}
    return {
        k.removeprefix("bert."): np.asarray(t, dtype=np.float32)
        for k, t in read_tensors(weights)
        if _PASSTHROUGH.match(k)
    }


def _versions() -> dict[str, str]:
    try:
        return {"gte_jax": version("gte-jax")}
    except PackageNotFoundError:  # a source tree that is not installed
        return {}


class _replacing:
    """A temporary name beside ``path`` to write to; renamed over ``path`` on success, removed on failure.

    The file ends with mode ``0o666`` less the umask, as ``open`` makes files: a writer that makes its own
    file (safetensors writes 0600) would leave the model unreadable to everyone else.
    """

    def __init__(self, path: str):
        self.path = path
        self.tmp = os.path.join(os.path.dirname(path) or ".", f".tmp-{uuid.uuid4().hex}.part")
        os.close(os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        self.mode = os.stat(self.tmp).st_mode & 0o777  # the umask applied, without changing the process's

    def __enter__(self) -> str:
        return self.tmp

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            os.chmod(self.tmp, self.mode)
            os.replace(self.tmp, self.path)
        elif os.path.exists(self.tmp):
            os.remove(self.tmp)


def _write_json(folder: str, name: str, value: Any) -> None:
    with _replacing(os.path.join(folder, name)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.write("\n")
