"""The GTE v1.5 family against transformers' GteModel on random-init checkpoints (float32, tiny shapes).

Each layout the hub and transformers write, each RoPE setting the published models use, token-type
tables of 0, 1 and 2 rows, and inputs from 1 token to past 2,048.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tokenizers import Tokenizer as HFTokenizer

from gte_jax.checkpoints.params import find_weights, load_model
from gte_jax.engine.tokenization import Tokenizer
from gte_jax.errors import CheckpointError, ConfigError
from gte_jax.models import family_for
from gte_jax.models.gte import FAMILY, GteConfig
from gte_jax.models.gte.modeling import rope_frequencies

from family_checkpoints import (
    GTE_TINY,
    hub_config,
    torch_gte,
    train_byte_bpe,
    train_xlmr_unigram,
    transformers_rope,
    write_gte,
)

LENGTHS = (2100, 1, 300)  # one batch, padded to the longest


def _inputs(cfg: GteConfig, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    T = max(LENGTHS)
    ids = rng.integers(3, cfg.vocab_size, (len(LENGTHS), T))
    mask = (np.arange(T)[None, :] < np.asarray(LENGTHS)[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, cfg.pad_token_id)
    types = rng.integers(0, max(cfg.type_vocab_size, 1), ids.shape) * mask
    return ids, mask, types


def _reference(model, ids, mask, types) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            token_type_ids=torch.from_numpy(types) if model.config.type_vocab_size else None,
        )
    return out.last_hidden_state.numpy()


def _load(model_dir: str, **kwargs):
    cfg = family_for(_config(model_dir)).read_config(_config(model_dir), model_dir)
    return load_model(find_weights(model_dir), cfg, family=FAMILY, **kwargs), cfg


def _config(model_dir: str) -> dict:
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)


def _normalized(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


CASES = {  # name: (layout, key prefix, config)
    "native-theta160k": ("native", "", dataclasses.replace(GTE_TINY, rope_ntk_factor=1.0, type_vocab_size=1)),
    "native-ntk2-theta500k-tt0": ("native", "", dataclasses.replace(GTE_TINY, rope_theta=500000.0, type_vocab_size=0)),
    "hub-new-ntk8-theta20k": (
        "hub",
        "new.",
        dataclasses.replace(GTE_TINY, rope_theta=20000.0, rope_ntk_factor=8.0, type_vocab_size=1, pad_token_id=1),
    ),
    "hub-bare-ntk2-theta500k-tt0": ("hub", "", dataclasses.replace(GTE_TINY, rope_theta=500000.0, type_vocab_size=0)),
    "hub-new-ntk2-tt2-tanh": ("hub", "new.", dataclasses.replace(GTE_TINY, hidden_act="gelu_new")),
    "hub-unpacked-theta20k": (
        "hub-unpacked",
        "",
        dataclasses.replace(GTE_TINY, rope_theta=20000.0, rope_ntk_factor=1.0, type_vocab_size=1),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_module_matches_transformers(case, tmp_path):
    layout, prefix, cfg = CASES[case]
    reference = torch_gte(cfg, seed=len(case))
    model_dir = write_gte(reference, cfg, str(tmp_path), layout, prefix)
    model, read = _load(model_dir)
    assert read == cfg
    ids, mask, types = _inputs(cfg)
    want = _reference(reference, ids, mask, types)
    got = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)))
    assert np.abs(_normalized(got[:, 0]) - _normalized(want[:, 0])).max() <= 1e-5
    for row, n in enumerate(LENGTHS):  # every real token, the far positions included
        np.testing.assert_allclose(got[row, :n], want[row, :n], atol=1e-4, rtol=0)


def test_rope_frequencies_are_the_hubs_static_ntk_as_transformers_computes_them():
    for theta, F in ((20000.0, 8.0), (160000.0, 2.0), (500000.0, 2.0), (160000.0, 1.0)):
        cfg = dataclasses.replace(GTE_TINY, rope_theta=theta, rope_ntk_factor=F, num_hidden_layers=1)
        H = cfg.head_dim
        # The hub's NTKScalingRotaryEmbedding: base * F, then every frequency divided by F^(2/H).
        hub = 1.0 / (theta * F) ** (np.arange(0, H, 2) / H) / F ** (2 / H)
        reference = torch_gte(cfg).rotary_emb.inv_freq.numpy()
        np.testing.assert_allclose(rope_frequencies(cfg), hub, rtol=1e-6)
        np.testing.assert_allclose(rope_frequencies(cfg), reference, rtol=1e-6)


def test_heads_and_buffers_are_ignored_and_a_wrong_tensor_is_reported(tmp_path):
    from safetensors.numpy import load_file, save_file

    cfg = GTE_TINY
    model_dir = write_gte(torch_gte(cfg), cfg, str(tmp_path), "hub", "new.")
    path = os.path.join(model_dir, "model.safetensors")
    tensors = load_file(path)
    D = cfg.hidden_size
    tensors["new.pooler.dense.weight"] = np.zeros((D, D), np.float32)  # NewForSequenceClassification
    tensors["classifier.weight"] = np.zeros((1, D), np.float32)
    tensors["new.embeddings.position_ids"] = np.arange(8, dtype=np.float32)
    save_file(tensors, path)
    _load(model_dir)

    tensors["new.encoder.layer.1.mlp.up_gate_proj.weight"] = np.zeros((cfg.intermediate_size, D), np.float32)
    save_file(tensors, path)
    with pytest.raises(CheckpointError, match=r"up_gate_proj\.weight' has shape \(64, 32\)"):
        _load(model_dir)


@pytest.mark.slow
def test_export_is_transformers_native_and_loads_without_remote_code(tmp_path):
    import torch
    from safetensors.numpy import save_file
    from transformers import AutoModel

    cfg = dataclasses.replace(GTE_TINY, rope_theta=20000.0, rope_ntk_factor=8.0)
    reference = torch_gte(cfg)
    model, read = _load(write_gte(reference, cfg, str(tmp_path / "hub"), "hub", "new."))
    out = tmp_path / "export"
    out.mkdir()
    tensors = dict(
        FAMILY.conversion.to_hf(".".join(map(str, p)), np.asarray(v.get_value()), read)
        for p, v in nnx.to_flat_state(nnx.state(model))
    )
    save_file(tensors, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(FAMILY.write_config(read)))

    exported = AutoModel.from_pretrained(str(out), attn_implementation="eager").eval()  # no trust_remote_code
    assert type(exported).__name__ == "GteModel"
    want = reference.state_dict()
    assert sorted(exported.state_dict()) == sorted(want)
    for key, tensor in exported.state_dict().items():
        torch.testing.assert_close(tensor, want[key], rtol=0, atol=0)
    torch.testing.assert_close(exported.rotary_emb.inv_freq, reference.rotary_emb.inv_freq, rtol=1e-6, atol=0)


@pytest.mark.slow
def test_train_mode_drops_out_and_eval_mode_is_deterministic(tmp_path):
    cfg = dataclasses.replace(GTE_TINY, attention_probs_dropout_prob=0.1)
    model, _ = _load(write_gte(torch_gte(cfg), cfg, str(tmp_path), "native"))
    ids = jnp.asarray(np.arange(3, 19)[None])
    mask = jnp.ones_like(ids)
    before = np.asarray(model(ids, mask))
    model.train()
    with pytest.raises(ValueError, match="train mode"):
        model(ids, mask)
    a, b = (np.asarray(model(ids, mask, rngs=nnx.Rngs(dropout=s))) for s in (0, 1))
    assert not np.allclose(a, before) and not np.allclose(a, b)
    np.testing.assert_array_equal(a, np.asarray(model(ids, mask, rngs=nnx.Rngs(dropout=0))))
    model.eval()
    np.testing.assert_array_equal(np.asarray(model(ids, mask)), before)


def test_bfloat16_weights_stay_close_to_float32(tmp_path):
    model_dir = write_gte(torch_gte(GTE_TINY), GTE_TINY, str(tmp_path), "native")
    ids = jnp.asarray(np.arange(3, 67)[None])
    mask = jnp.ones_like(ids)
    f32, _ = _load(model_dir)
    bf16, _ = _load(model_dir, dtype=jnp.bfloat16, act_dtype=jnp.float32)
    want, got = np.asarray(f32(ids, mask))[:, 0], np.asarray(bf16(ids, mask))[:, 0]
    assert bf16.layers[0].mlp.up_proj.kernel[...].dtype == jnp.bfloat16
    assert np.abs(_normalized(got) - _normalized(want)).max() < 2e-2


def test_param_specs_split_every_projection_over_the_model_axis():
    model = nnx.eval_shape(
        lambda: FAMILY.build(GTE_TINY, dtype=jnp.float32, act_dtype=None, attention_impl="einsum", rngs=nnx.Rngs(0))
    )
    import re

    paths = [".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model))]
    split = {p for p in paths if any(re.search(rx, p) for rx, _ in FAMILY.param_specs)}
    kernels = {p for p in paths if p.endswith(".kernel")}
    assert kernels <= split and len(kernels) == 7 * GTE_TINY.num_hidden_layers
    layers = [(type(parent).__name__, name) for parent, name in FAMILY.dense_layers(model)]
    assert ("Attention", "q_proj") in layers and ("MLP", "down_proj") in layers


# --- config -------------------------------------------------------------------------------------------------------


def test_presets_are_the_published_models():
    base, large, multi = GteConfig.gte_base_en_v15(), GteConfig.gte_large_en_v15(), GteConfig.gte_multilingual_base()
    assert (base.num_hidden_layers, base.hidden_size, base.num_attention_heads, base.intermediate_size) == (
        12,
        768,
        12,
        3072,
    )
    assert (base.rope_theta, base.rope_ntk_factor, base.type_vocab_size, base.vocab_size) == (500000, 2, 0, 30528)
    assert (large.num_hidden_layers, large.hidden_size, large.num_attention_heads, large.intermediate_size) == (
        24,
        1024,
        16,
        4096,
    )
    assert (large.rope_theta, large.rope_ntk_factor, large.type_vocab_size) == (160000, 2, 2)
    assert (multi.rope_theta, multi.rope_ntk_factor, multi.vocab_size, multi.pad_token_id) == (20000, 8, 250048, 1)
    assert {c.max_position_embeddings for c in (base, large, multi)} == {8192}


@pytest.mark.parametrize("preset", ["gte_base_en_v15", "gte_large_en_v15", "gte_multilingual_base"])
def test_config_reads_the_hubs_and_transformers_form(preset):
    cfg = getattr(GteConfig, preset)()
    for hf in (hub_config(cfg, "NewForTokenClassification"), FAMILY.write_config(cfg)):
        assert family_for(hf) is FAMILY
        assert FAMILY.read_config(hf, "config.json") == cfg
    native = FAMILY.write_config(cfg)
    assert native["model_type"] == "gte" and native["rope_parameters"] == transformers_rope(cfg)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"logn_attention_scale": True}, "logn_attention_scale"),
        ({"layer_norm_type": "rms_norm"}, "layer_norm_type"),
        ({"hidden_act": "silu"}, "hidden_act"),
        ({"position_embedding_type": "absolute"}, "position_embedding_type"),
        ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope_scaling"),
        ({"rope_scaling": {"type": "ntk", "factor": 2.0, "mixed_b": 0.5}}, "rope_scaling"),
        ({"rope_scaling": {"type": "ntk", "factor": 0.5}}, "rope_scaling"),
        ({"type_vocab_size": -1}, "type_vocab_size"),
        ({"num_attention_heads": 5}, "num_attention_heads"),
    ],
)
def test_options_that_change_the_maths_are_refused_naming_the_field(change, field):
    hf = {**hub_config(GteConfig.gte_base_en_v15()), **change}
    with pytest.raises(ConfigError, match=rf"^model/config\.json: .*{field}"):
        FAMILY.read_config(hf, "model/config.json")


def test_native_rope_types_other_than_default_and_linear_are_refused():
    hf = {**FAMILY.write_config(GTE_TINY), "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4}}
    with pytest.raises(ConfigError, match=r"^c\.json: rope_parameters .*'yarn'"):
        FAMILY.read_config(hf, "c.json")


def test_jit_matches_eager(tmp_path):
    model, _ = _load(write_gte(torch_gte(GTE_TINY), GTE_TINY, str(tmp_path), "native"))
    ids = jnp.asarray(np.arange(3, 40)[None])
    mask = jnp.ones_like(ids)
    graphdef, state = nnx.split(model)
    jitted = jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m))(state, ids, mask)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(model(ids, mask)), atol=1e-6)


# --- tokenizers -----------------------------------------------------------------------------------------------------


def _random_text(rng: random.Random) -> str:
    """Words, runs of spaces and other whitespace, punctuation, CJK without spaces, combining marks and runs
    longer than a window, in random order."""
    parts = [
        lambda: rng.choice(["tensor", "Embedding", "naïve", "façade", "don't", "3.14", "ΑΣ", "ß", "fox", "lazy"]),
        lambda: rng.choice([" ", "  ", "   ", "\n", "\t", " \t ", "\u3000", "\xa0", "\n\n "]),
        lambda: rng.choice([",", ".", "!", "—", "。", "、", "(", ")", "¿", "«", "'s"]),
        lambda: "".join(rng.choice("敏捷的棕色狐狸日本語文本") for _ in range(rng.randint(1, 30))),
        lambda: rng.choice(["\u0301", "e\u0301", "\ufb01", "🙂", "①", "Ａ"]),  # NFKC changes these
        lambda: rng.choice("abcxyz") * rng.randint(50, 200),  # longer than the window: one pre-token
    ]
    return "".join(rng.choice(parts)() for _ in range(rng.randint(20, 300)))


@pytest.fixture(scope="module", params=["xlmr-unigram", "byte-bpe"])
def small_tokenizer(request, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp(request.param))
    return train_xlmr_unigram(out) if request.param == "xlmr-unigram" else train_byte_bpe(out)


def test_windowed_tokenising_gives_the_ids_of_the_whole_text(small_tokenizer):
    tok = Tokenizer.from_dir(small_tokenizer, 512)
    tok.window = 48  # many cuts per text (the real window is max_length * 20 characters)
    whole = HFTokenizer.from_file(os.path.join(small_tokenizer, "tokenizer.json"))
    whole.enable_truncation(512)
    rng = random.Random(0)
    texts = [_random_text(rng) for _ in range(200)]
    texts += ["a  b" * 200, " x" * 300, "\u3000y" * 300, "日本語" * 300, "a," * 300]
    assert sum(len(t) > tok.window for t in texts) > 150
    want = [e.ids for e in whole.encode_batch(texts)]
    assert max(map(len, want)) == 512  # truncated ones too
    assert [list(map(int, t)) for t in tok(texts)] == want


def test_special_tokens_and_padding_come_from_the_tokenizer_files(small_tokenizer):
    tok = Tokenizer.from_dir(small_tokenizer, 16)
    ids = tok(["hello", "word " * 100])
    if "xlmr" in small_tokenizer:
        assert tok.pad_token_id == 1 and ids[0][0] == 0 and ids[0][-1] == 2  # <s> ... </s>, <pad> 1
    else:
        assert tok.pad_token_id == 0 and ids[0][0] == 1 and ids[0][-1] == 2  # [CLS] ... [SEP], [PAD] 0
    assert len(ids[1]) == 16 and ids[1][-1] == 2
