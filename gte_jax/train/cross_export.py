"""A trained cross-encoder -> a sentence-transformers ``CrossEncoder`` folder in transformers' native layout.

``config.json`` names the family's ``*ForSequenceClassification`` class with ``num_labels``, ``id2label`` and
``sentence_transformers.activation_fn``; ``model.safetensors`` holds the encoder under the class's prefix
(``bert.``, ``gte.``, ``model.``) and the head under transformers' names: the family's head rules read
backwards (:func:`gte_jax.models.heads.cross_encoder_conversion`), each key checked to load back where it
came from. ``CrossEncoder(DIR)``, ``AutoModelForSequenceClassification`` and ``GTEReranker`` load it.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import numpy as np
from flax import nnx

from gte_jax.checkpoints.export import LICENSE_FILES, TOKENIZER_FILES, _replacing, _write_json, check_output
from gte_jax.checkpoints.hub import read_json
from gte_jax.models import family_of
from gte_jax.models.heads import CrossEncoderModel, cross_encoder_conversion

# gte_jax activation -> the torch class sentence-transformers records (and reads back by its last part).
TORCH_ACTIVATIONS = {
    "sigmoid": "torch.nn.modules.activation.Sigmoid",
    "identity": "torch.nn.modules.linear.Identity",
    "softmax": "torch.nn.modules.activation.Softmax",
    "tanh": "torch.nn.modules.activation.Tanh",
}


def cross_encoder_tensors(model: CrossEncoderModel) -> dict[str, np.ndarray]:
    """The parameters as float32 tensors of transformers' ``*ForSequenceClassification`` (prefixed keys).

    A head tensor goes under the encoder's prefix when the encoder's own table skips it there (BERT's and GTE's
    pooler belong to the base model); the classifier and ModernBERT's head sit beside the encoder.

    Raises:
        ValueError: a parameter the rules cannot export, or one whose key would load elsewhere.
    """
    family = family_of(model.config)
    assert family.head is not None  # a CrossEncoderModel is built only with its family's head
    head = family.head
    conversion = cross_encoder_conversion(family.conversion, head)
    out: dict[str, np.ndarray] = {}
    for keys, var in nnx.to_flat_state(nnx.state(model)):
        path = ".".join(map(str, keys))
        key, tensor = conversion.to_hf(path, np.asarray(var.get_value(), dtype=np.float32), model.config)
        if path.startswith("encoder.") or family.conversion.is_ignored(head.encoder_prefix + key):
            key = head.encoder_prefix + key
        if conversion.nnx_path(key) != [path]:  # the table read backwards must land where it started
            raise ValueError(f"the conversion rules map {path} to {key}, which loads into {conversion.nnx_path(key)}")
        out[key] = tensor
    return out


def save_cross_encoder(
    model: CrossEncoderModel, path: str, *, source_dir: str, activation: str, tokenizer: Any = None
) -> str:
    """Writes ``model`` as a ``CrossEncoder`` folder (see the module's docstring).

    Args:
        model: the trained cross-encoder.
        path: the folder (created; same-named files replaced; refused if it holds other weights files).
        source_dir: the checkpoint it was trained from: its tokenizer files, labels and licence are carried over.
        activation: one of :data:`TORCH_ACTIVATIONS` (the source's, so scores mean what they meant).
        tokenizer: a :class:`gte_jax.engine.tokenization.Tokenizer`, written as ``tokenizer.json`` when the source
            has no tokenizer files.

    Returns:
        ``path``.

    Raises:
        ExportError: ``path`` is a file or holds other weights.
        ValueError: weights that are not finite, or no tokenizer files.
    """
    from safetensors.numpy import save_file

    check_output(path)
    tensors = cross_encoder_tensors(model)
    broken = [key for key, t in tensors.items() if not np.isfinite(t).all()]
    if broken:
        raise ValueError(f"{len(broken)} tensors hold NaN or infinite values ({', '.join(broken[:3])}); not saved.")
    tokenizer_files = [f for f in TOKENIZER_FILES if os.path.isfile(os.path.join(source_dir, f))]
    if not tokenizer_files and tokenizer is None:
        raise ValueError(f"{source_dir} has no tokenizer files; pass tokenizer=.")
    family = family_of(model.config)
    native = family.write_config(model.config)
    source = read_json(source_dir, "config.json") or {}
    num_labels = int(tensors[next(k for k in tensors if k.endswith("classifier.weight"))].shape[0])
    labels = source.get("id2label") if source.get("model_type") == native["model_type"] else None
    if not isinstance(labels, dict) or len(labels) != num_labels:
        labels = {str(i): f"LABEL_{i}" for i in range(num_labels)}
    config = {
        **native,
        "architectures": [native["architectures"][0].removesuffix("Model") + "ForSequenceClassification"],
        "num_labels": num_labels,
        "id2label": labels,
        "label2id": {v: int(k) for k, v in labels.items()},
        "sentence_transformers": {"activation_fn": TORCH_ACTIVATIONS[activation]},
    }
    os.makedirs(path, exist_ok=True)
    with _replacing(os.path.join(path, "model.safetensors")) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})
    _write_json(path, "config.json", config)
    licenses = [f for f in LICENSE_FILES if os.path.isfile(os.path.join(source_dir, f))]
    for name in (*tokenizer_files, *licenses):
        with _replacing(os.path.join(path, name)) as tmp:
            shutil.copyfile(os.path.join(source_dir, name), tmp)
    if not tokenizer_files:
        with _replacing(os.path.join(path, "tokenizer.json")) as tmp:
            tokenizer.backend.save(tmp)
    return path
