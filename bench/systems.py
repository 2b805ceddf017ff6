"""The embedding systems the CPU benchmarks compare, each built from one checkpoint folder as a user would.

* ``st``, ``st-bf16``: ``SentenceTransformer(dir, device="cpu")``, the latter with
  ``model_kwargs={"dtype": torch.bfloat16}`` (PyTorch runs bf16 linear layers through oneDNN);
* ``ort``, ``ort-int8``: ONNX Runtime on the checkpoint's ``BertModel`` exported to ONNX (the
  TorchScript exporter, as optimum and sentence-transformers' ``backend="onnx"`` do), and that export
  dynamically quantised with optimum's ``avx512_vnni`` settings (int8 symmetric per-channel weights,
  uint8 activations quantised per call); tokenised with the checkpoint's ``tokenizer.json`` and batched
  like sentence-transformers (longest texts first, padding per batch), mean-pooled and L2-normalised
  in numpy. Both models are written once under ``common.CACHE_DIR/onnx``;
* ``jax-float32``, ``jax-bfloat16``, ``jax-int8``: ``GTEEncoder.from_pretrained(dir, dtype=...)``.

Every system's ``encode(texts)`` returns L2-normalised float32 vectors, one row per text.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import warnings
from collections.abc import Callable
from importlib.metadata import version

import common
import numpy as np

JAX_DTYPES = ("float32", "bfloat16", "int8")
LABELS = {
    "st": "sentence-transformers float32",
    "st-bf16": "sentence-transformers bfloat16 (PyTorch, oneDNN)",
    "ort": "ONNX Runtime float32",
    "ort-int8": "ONNX Runtime int8 (dynamic, {kernel})",
    **{f"jax-{dtype}": f"gte-jax {dtype}" for dtype in JAX_DTYPES},
}
# Each framework's float32 system, the reference for its low-precision ones.
FLOAT32 = {"st": "st", "ort": "ort", "jax": "jax-float32"}
# What a fresh process imports before it can load a system of each framework.
MODULES = {
    "st": ("torch", "sentence_transformers"),
    "ort": ("onnxruntime", "tokenizers"),
    "jax": ("gte_jax.engine.encoder",),
}
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

Encode = Callable[[list[str]], np.ndarray]


def expand(systems: str, dtypes: str) -> list[str]:
    """System names from a comma list, ``jax`` standing for ``jax-<dtype>`` for each of the comma list ``dtypes``."""
    names = []
    for name in systems.split(","):
        for full in [f"jax-{dtype}" for dtype in dtypes.split(",")] if name == "jax" else [name]:
            if full not in LABELS:
                raise ValueError(f"unknown system {full!r}: choose from {', '.join(LABELS)}, or jax with --dtype")
            if full not in names:
                names.append(full)
    return names


def add_arguments(parser, systems: str, dtypes: str) -> None:
    """``--systems`` and ``--dtype``, with these defaults (see :func:`expand`)."""
    choices = ", ".join(LABELS)
    parser.add_argument("--systems", default=systems, help=f"comma list of {choices}, jax (default: {systems})")
    parser.add_argument("--dtype", default=dtypes, help=f"the gte-jax dtypes jax in --systems stands for ({dtypes})")


def framework(name: str) -> str:
    """``st``, ``ort`` or ``jax``."""
    return name.split("-")[0]


def label(name: str) -> str:
    """How tables name a system."""
    return LABELS[name].format(kernel=ort_int8_kernel())


def ort_int8_kernel() -> str:
    """The int8 GEMM kernel ONNX Runtime (MLAS) picks on this CPU, by its own order of preference.

    MLAS (``onnxruntime/core/mlas/lib/platform.cpp``) takes AMX-INT8 over AVX512-VNNI over AVX-512 (BW/DQ/VL)
    over AVX-VNNI over AVX2, for uint8 activations times int8 weights, the format of ``ort-int8``.
    """
    features = set(common.cpu_features())
    if {"amx_tile", "amx_int8"} <= features:
        return "amx_int8"
    if "avx512bw" in features:
        return "avx512_vnni" if "avx512_vnni" in features else "avx512bw"
    return next((f for f in ("avx_vnni", "avx2") if f in features), "sse")


def import_modules(name: str) -> None:
    """Imports what system ``name`` needs, so a caller can time imports apart from loading."""
    for module in MODULES[framework(name)]:
        importlib.import_module(module)


def prepare(name: str, model_dir: str) -> None:
    """Does the once-per-checkpoint work of ``name`` (the ONNX export and quantisation), so loads are plain loads."""
    if framework(name) == "ort":
        onnx_model(model_dir, quantized=name == "ort-int8")


def load(
    name: str, model_dir: str, *, threads: int = 0, batch_size: int = 32, jax_options: dict | None = None
) -> Encode:
    """System ``name`` on the checkpoint in ``model_dir``, as its ``encode`` function.

    Args:
        name: one of :data:`LABELS`.
        model_dir: a sentence-transformers / Hugging Face BERT checkpoint folder.
        threads: torch and ONNX Runtime intra-op threads (0: the library's default; ONNX Runtime: the usable cores).
        batch_size: sentence-transformers' and ONNX Runtime's texts per batch.
        jax_options: more ``GTEEncoder.from_pretrained`` keyword arguments (``batch_size``, ``attention_impl``, ...).
    """
    if framework(name) == "st":
        return _sentence_transformers(model_dir, name == "st-bf16", threads, batch_size)
    if framework(name) == "ort":
        return _onnx_runtime(onnx_model(model_dir, quantized=name == "ort-int8"), model_dir, threads, batch_size)
    from gte_jax import GTEEncoder

    return GTEEncoder.from_pretrained(model_dir, dtype=name.removeprefix("jax-"), **(jax_options or {})).encode


def _sentence_transformers(model_dir: str, bfloat16: bool, threads: int, batch_size: int) -> Encode:
    import torch
    from sentence_transformers import SentenceTransformer

    if threads:
        torch.set_num_threads(threads)
    kwargs = {"model_kwargs": {"dtype": torch.bfloat16}} if bfloat16 else {}
    model = SentenceTransformer(model_dir, device="cpu", **kwargs)

    def encode(texts: list[str]) -> np.ndarray:
        vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)

    return encode


def onnx_model(model_dir: str, quantized: bool = False) -> str:
    """Path of the checkpoint's ``BertModel`` as ONNX (float32, or dynamically quantised int8), made once and cached.

    The cache key is the folder's path, its files' sizes and times, and the torch and ONNX Runtime versions.
    """
    files = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(model_dir) if e.is_file())
    key = [os.path.abspath(model_dir), files, version("torch"), version("onnxruntime")]
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    folder = os.path.join(common.CACHE_DIR, "onnx", f"{os.path.basename(os.path.normpath(model_dir))}-{digest}")
    float32, int8 = os.path.join(folder, "model.onnx"), os.path.join(folder, "model_int8.onnx")
    if not os.path.exists(float32):
        os.makedirs(folder, exist_ok=True)
        _export(model_dir, float32 + ".tmp")
        os.replace(float32 + ".tmp", float32)
    if quantized and not os.path.exists(int8):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # optimum's AutoQuantizationConfig.avx512_vnni(is_static=False), which ST's export_dynamic_quantized_onnx_model
        # uses: MatMul weights int8, symmetric, one scale per output channel; activations uint8, full range.
        quantize_dynamic(float32, int8 + ".tmp", per_channel=True, reduce_range=False, weight_type=QuantType.QInt8)
        os.replace(int8 + ".tmp", int8)
    return int8 if quantized else float32


def _export(model_dir: str, path: str) -> None:
    """Writes the float32 ``BertModel`` of ``model_dir`` (output: ``last_hidden_state``) to ``path``."""
    import torch
    from transformers import AutoModel

    class LastHiddenState(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    module = LastHiddenState(AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval())
    example = (torch.full((2, 16), 1000), torch.ones(2, 16, dtype=torch.long), torch.zeros(2, 16, dtype=torch.long))
    names = {"input_names": list(ONNX_INPUTS), "output_names": ["last_hidden_state"]}
    print(f"exporting {model_dir} to {os.path.dirname(path)} ...", file=sys.stderr)
    try:
        # The TorchScript exporter: what optimum uses, and its graph ran 10-15% faster under ONNX Runtime 1.32
        # than the dynamo exporter's (torch 2.13) for MiniLM.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            axes = {0: "batch", 1: "sequence"}
            dynamic = {name: axes for name in (*ONNX_INPUTS, "last_hidden_state")}
            torch.onnx.export(module, example, path, **names, dynamic_axes=dynamic, opset_version=17, dynamo=False)
    except Exception as error:  # a deprecated exporter: a newer torch may have dropped it
        print(f"the TorchScript ONNX exporter failed ({error!r}); using the dynamo exporter", file=sys.stderr)
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=512)
        dims = tuple({0: batch, 1: sequence} for _ in ONNX_INPUTS)
        torch.onnx.export(module, example, path, **names, dynamic_shapes=dims, dynamo=True, external_data=False)


def max_length(model_dir: str) -> int:
    """Truncation length as sentence-transformers reads it: ``max_seq_length``, within the position limit."""
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        limit = json.load(f).get("max_position_embeddings", 512)
    path = os.path.join(model_dir, "sentence_bert_config.json")
    if not os.path.exists(path):
        return limit
    with open(path, encoding="utf-8") as f:
        return min(limit, json.load(f).get("max_seq_length") or limit)


def pooling(model_dir: str) -> str:
    """The checkpoint's sentence-transformers pooling (``mean`` without a ``1_Pooling/config.json``), e.g. ``cls``."""
    path = os.path.join(model_dir, "1_Pooling", "config.json")
    if not os.path.exists(path):
        return "mean"
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    modes = [k.removeprefix("pooling_mode_") for k, on in config.items() if k.startswith("pooling_mode_") and on]
    return "+".join(m.removesuffix("_tokens").removesuffix("_token") for m in modes) or "mean"


def _onnx_runtime(path: str, model_dir: str, threads: int, batch_size: int) -> Encode:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    if pooling(model_dir) != "mean":
        raise ValueError(f"{model_dir} pools by {pooling(model_dir)}: ONNX Runtime systems mean-pool; leave out ort.")
    tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tokenizer.enable_truncation(max_length(model_dir))
    padding = tokenizer.padding or {}  # keep the checkpoint's pad token, pad each batch to its longest text
    tokenizer.enable_padding(pad_id=padding.get("pad_id", 0), pad_token=padding.get("pad_token", "[PAD]"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def encode(texts: list[str]) -> np.ndarray:
        order = np.argsort([-len(text) for text in texts], kind="stable")
        parts = []
        for start in range(0, len(texts), batch_size):
            batch = tokenizer.encode_batch([texts[i] for i in order[start : start + batch_size]])
            inputs = {
                "input_ids": np.array([e.ids for e in batch], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in batch], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in batch], dtype=np.int64),
            }
            hidden = session.run(["last_hidden_state"], inputs)[0]
            mask = inputs["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            parts.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))
        return np.concatenate(parts)[np.argsort(order)].astype(np.float32)

    return encode
