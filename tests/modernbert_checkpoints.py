"""Random-init ModernBERT checkpoints written with transformers + torch, and a small byte-level BPE tokenizer
trained here with the ``tokenizers`` library (gte-modernbert-base's own kind of tokenizer, offline)."""

from __future__ import annotations

import json
import os

from gte_jax.models.modernbert.config import ModernBertConfig

# 4 layers x 32 wide; a global layer every 3 (layers 0 and 3), the others a 16-token window, so windows
# matter on short inputs. RoPE bases differ from transformers' defaults, so a config read wrong shows.
TINY_HF = {
    "vocab_size": 512,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "max_position_embeddings": 4096,
    "global_attn_every_n_layers": 3,
    "local_attention": 16,
    "global_rope_theta": 80_000.0,
    "local_rope_theta": 5_000.0,
    "initializer_range": 0.2,  # sharper attention than 0.02, so positions and windows move the output
    "pad_token_id": 3,
    "cls_token_id": 1,
    "sep_token_id": 2,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
# The options gte-modernbert-base leaves off, on: biases everywhere, the tanh GELU, dropout rates (eval ignores them).
BIASED_HF = {
    **TINY_HF,
    "norm_bias": True,
    "attention_bias": True,
    "mlp_bias": True,
    "hidden_activation": "gelu_pytorch_tanh",
    "embedding_dropout": 0.1,
    "attention_dropout": 0.1,
    "mlp_dropout": 0.1,
}
BIASED = ModernBertConfig.from_hf_dict({**BIASED_HF, "model_type": "modernbert"})

SPECIALS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")  # ids 0-4, as TINY_HF's token ids say
WORDS = (
    "tensor kernel attention window rotary embedding model layer norm gelu gate query key value head "
    "token batch padding sequence encoder sentence vector search index shard parquet server train "
    "the a of and to in is on for with as by at from long context eight thousand tokens"
).split()


def corpus(words: int, seed: int = 0) -> str:
    """``words`` words drawn from :data:`WORDS` with punctuation: text of a chosen length."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(words):
        w = rng.choice(WORDS)
        out.append(w.capitalize() + "," if i % 7 == 3 else w + ("." if i % 11 == 10 else ""))
    return " ".join(out)


def write_tokenizer(out_dir: str, vocab_size: int = 400) -> None:
    """Trains a byte-level BPE on :func:`corpus` text and saves it as a transformers fast tokenizer that
    wraps each text as ``[CLS] ... [SEP]`` (ModernBERT's template)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIALS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([corpus(200, seed) for seed in range(20)], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        model_max_length=TINY_HF["max_position_embeddings"],
    )
    fast.save_pretrained(out_dir)


def torch_modernbert(hf: dict = TINY_HF, seed: int = 0, head: str = ""):
    """transformers' ``ModernBertModel`` (or ``ModernBert{head}``, e.g. ``ForMaskedLM``) with random weights,
    the eager attention (exact masks on CPU)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cls = getattr(transformers, f"ModernBert{head or 'Model'}")
    cfg = transformers.ModernBertConfig(**hf, attn_implementation="eager")
    return cls(cfg).eval()


def write_checkpoint(model, out_dir: str, style: str = "rope_parameters", tokenizer: bool = True) -> str:
    """Saves ``model`` (safetensors) with its ``config.json`` in one of the two styles the hub has:
    ``"rope_parameters"`` (transformers 5: ``layer_types`` and a RoPE entry per layer type) or
    ``"global_local"`` (older: ``global_attn_every_n_layers``, ``global_rope_theta``, ``local_rope_theta``)."""
    model.save_pretrained(out_dir)
    path = os.path.join(out_dir, "config.json")
    with open(path, encoding="utf-8") as f:
        hf = json.load(f)
    assert "rope_parameters" in hf and "layer_types" in hf, "transformers no longer writes the new style"
    if style == "global_local":
        types = hf.pop("layer_types")
        rope = hf.pop("rope_parameters")
        hf["global_rope_theta"] = rope["full_attention"]["rope_theta"]
        hf["local_rope_theta"] = rope["sliding_attention"]["rope_theta"]
        hf["global_attn_every_n_layers"] = next(i for i, t in enumerate(types[1:], 1) if t == "full_attention")
    else:
        assert style == "rope_parameters", style
    with open(path, "w", encoding="utf-8") as f:
        json.dump(hf, f, indent=2)
    if tokenizer:
        write_tokenizer(out_dir)
    return out_dir
