"""Random-init checkpoints of the rotary families and small tokenizers trained in the test, all offline.

GTE: transformers' native ``GteModel`` written by ``save_pretrained``, or converted to the hub's
``NewModel`` layout (fused ``qkv_proj`` / ``up_gate_proj``, ``model_type: "new"``) as Alibaba-NLP
publishes gte-base-en-v1.5 and friends. Tokenizers: a SentencePiece Unigram shaped like XLM-R's
(Metaspace, ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2) and a byte-level BPE like ModernBERT's, trained with
the ``tokenizers`` library on a small corpus.
"""

from __future__ import annotations

import json
import os

from gte_jax.models.gte import GteConfig

# A tiny GTE: 2 layers x 32 wide, head size 8 (RoPE needs an even one).
GTE_TINY = GteConfig(
    vocab_size=1000,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    type_vocab_size=2,
    pad_token_id=0,
    rope_theta=160000.0,
    rope_ntk_factor=2.0,
)


def transformers_rope(cfg: GteConfig) -> dict:
    """``rope_parameters`` for transformers, written out from the hub's NTK formula (not from gte_jax):
    base ``theta * F`` and frequencies divided by ``F ** (2 / head_dim)`` is a ``linear`` rope."""
    F, H = cfg.rope_ntk_factor, cfg.hidden_size // cfg.num_attention_heads
    if F == 1:
        return {"rope_type": "default", "rope_theta": cfg.rope_theta}
    return {"rope_type": "linear", "rope_theta": cfg.rope_theta * F, "factor": F ** (2 / H)}


def torch_gte(cfg: GteConfig, seed: int = 0):
    """transformers' ``GteModel`` (eager attention, eval mode) with every parameter random, LayerNorms and
    biases included, so that a parameter loaded into the wrong place shows."""
    import torch
    from transformers import GteConfig as HFGteConfig
    from transformers import GteModel

    hf = HFGteConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        hidden_act=cfg.hidden_act,
        max_position_embeddings=cfg.max_position_embeddings,
        type_vocab_size=cfg.type_vocab_size,
        layer_norm_eps=cfg.layer_norm_eps,
        pad_token_id=cfg.pad_token_id,
        rope_parameters=transformers_rope(cfg),
    )
    torch.manual_seed(seed)
    model = GteModel(hf, add_pooling_layer=False)
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name.lower() and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    return model.eval()


def hub_config(cfg: GteConfig, architecture: str = "NewModel", pack_qkv: bool = True) -> dict:
    """The ``config.json`` the hub's ``NewModel`` has for ``cfg`` (``model_type: "new"``, ``auto_map``)."""
    return {
        "architectures": [architecture],
        "auto_map": {"AutoConfig": "Alibaba-NLP/new-impl--configuration.NewConfig"},
        "model_type": "new",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": cfg.hidden_act,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.0,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": 0.02,
        "layer_norm_type": "layer_norm",
        "layer_norm_eps": cfg.layer_norm_eps,
        "position_embedding_type": "rope",
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None if cfg.rope_ntk_factor == 1 else {"type": "ntk", "factor": cfg.rope_ntk_factor},
        "classifier_dropout": None,
        "pack_qkv": pack_qkv,
        "unpad_inputs": False,
        "use_memory_efficient_attention": False,
        "logn_attention_scale": False,
        "logn_attention_clip1": False,
        "pad_token_id": cfg.pad_token_id,
    }


def hub_state_dict(model, prefix: str = "new.", pack_qkv: bool = True) -> dict:
    """transformers' state dict in the hub's ``NewModel`` layout (the inverse of transformers' conversion)."""
    import torch

    out = {}
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for i in range(model.config.num_hidden_layers):
        src, dst = f"layers.{i}.", f"encoder.layer.{i}."
        if pack_qkv:
            for kind in ("weight", "bias"):
                out[dst + f"attention.qkv_proj.{kind}"] = torch.cat(
                    [state.pop(src + f"self_attn.{p}_proj.{kind}") for p in "qkv"]
                )
        out[dst + "mlp.up_gate_proj.weight"] = torch.cat(
            [state.pop(src + "mlp.up_proj.weight"), state.pop(src + "mlp.gate_proj.weight")]
        )
    renames = (
        ("self_attn.", "attention."),
        ("post_attention_layernorm", "attn_ln"),
        ("post_mlp_layernorm", "mlp_ln"),
    )
    for key, tensor in state.items():
        if key.startswith("layers."):
            key = "encoder.layer." + key[len("layers.") :]
            for a, b in renames:
                key = key.replace(a, b)
        out[key] = tensor
    return {prefix + k: v.contiguous() for k, v in out.items()}


def write_gte(model, cfg: GteConfig, out_dir: str, layout: str = "native", prefix: str = "new.") -> str:
    """Writes ``model`` as transformers saves it (``layout="native"``) or in the hub's layout (``"hub"``, keys
    prefixed with ``prefix``; ``"hub-unpacked"``: ``pack_qkv`` false, separate q/k/v)."""
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    if layout == "native":
        model.save_pretrained(out_dir)
        return out_dir
    pack = layout == "hub"
    save_file(hub_state_dict(model, prefix, pack), os.path.join(out_dir, "model.safetensors"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hub_config(cfg, pack_qkv=pack), f, indent=2)
    return out_dir


# A small multilingual corpus: tokenizers trained on it have a few hundred pieces.
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Rotary position embeddings rotate queries and keys by their position.",
    "Le renard brun saute par-dessus le chien paresseux, n'est-ce pas ?",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "敏捷的棕色狐狸跳过了懒狗。长文本被分成窗口。",
    "素早い茶色の狐がのろまな犬を飛び越える。",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "Numbers like 3.14159, 2,718 and 1e-12 appear in configs; emails a@b.com too.",
    "   Leading spaces, trailing spaces,\ttabs\nand newlines\n\n matter.   ",
] * 20


def train_xlmr_unigram(out_dir: str, vocab_size: int = 400) -> str:
    """A SentencePiece Unigram ``tokenizer.json`` shaped like XLM-R's: NFKC, runs of spaces collapsed,
    Metaspace (``▁``, always prepended), ``<s> $A </s>``; ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    special = ["<s>", "<pad>", "</s>", "<unk>"]
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=special, unk_token="<unk>")
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return _save(tok, out_dir, {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})


def train_byte_bpe(out_dir: str, vocab_size: int = 600) -> str:
    """A byte-level BPE ``tokenizer.json`` like ModernBERT's (no prefix space, GPT-2 regex, ``[CLS] $A [SEP]``;
    ``[PAD]`` 0, ``[CLS]`` 1, ``[SEP]`` 2, ``[UNK]`` 3, ``[MASK]`` 4)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    special = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    return _save(tok, out_dir, {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]"})


def _save(tok, out_dir: str, special_tokens: dict) -> str:
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"model_max_length": 8192, **special_tokens}, f)
    return out_dir
