"""Random-init BERT checkpoints of the exact GTE shapes, written with transformers + torch."""

from __future__ import annotations

import dataclasses
import os
import shutil

from gte_jax import GTEConfig

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
TINY = GTEConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
# TINY with an embedding table smaller than the bert-base-uncased tokenizer's 30,522 ids.
TINY_VOCAB_1000 = dataclasses.replace(TINY, vocab_size=1000)
SHAPES = {"gte-small": GTEConfig.gte_small(), "gte-base": GTEConfig.gte_base(), "gte-large": GTEConfig.gte_large()}


def copy_tokenizer(src_dir: str, out_dir: str, files=TOKENIZER_FILES) -> None:
    """GTE uses bert-base-uncased's vocabulary, as does all-MiniLM-L6-v2: borrow its tokenizer files."""
    for name in files:
        shutil.copyfile(os.path.join(src_dir, name), os.path.join(out_dir, name))


def torch_bert(cfg: GTEConfig, seed: int = 0):
    """transformers' ``BertModel`` with random weights and ``cfg``'s shapes."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    hf = {k: v for k, v in cfg.to_hf_config().items() if k != "architectures"}
    return BertModel(BertConfig(**hf)).eval()


def write_checkpoint(
    model, out_dir: str, tokenizer_dir: str, fmt: str = "safetensors", prefix: str = "", shard_size: str = "1MB"
) -> str:
    """Saves ``model`` as ``model.safetensors`` (``fmt="safetensors"``), sharded safetensors
    (``"sharded"``) or ``pytorch_model.bin`` (``"bin"``, keys prefixed with ``prefix``)."""
    import torch

    os.makedirs(out_dir, exist_ok=True)
    if fmt == "bin":
        model.config.save_pretrained(out_dir)
        state = {prefix + k: v for k, v in model.state_dict().items()}
        torch.save(state, os.path.join(out_dir, "pytorch_model.bin"))
    elif fmt == "sharded":
        model.save_pretrained(out_dir, max_shard_size=shard_size)
    else:
        model.save_pretrained(out_dir)
    copy_tokenizer(tokenizer_dir, out_dir)
    return out_dir


def truncate(path: str, keep: float = 0.5) -> None:
    """Cuts a file to ``keep`` of its length, as an interrupted download leaves it."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))
