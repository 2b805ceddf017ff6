"""The ModernBERT family against transformers' ModernBertModel: float32, random-init checkpoints written here."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gte_jax.checkpoints.params import find_weights, load_model
from gte_jax.errors import ConfigError
from gte_jax.models import family_for
from gte_jax.models.modernbert.config import ModernBertConfig

from modernbert_checkpoints import BIASED_HF, TINY_HF, corpus, torch_modernbert, write_checkpoint, write_tokenizer

FAMILY = family_for({"model_type": "modernbert"})
TOL = 1e-5


def _read(model_dir: str) -> ModernBertConfig:
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg: ModernBertConfig = FAMILY.read_config(json.load(f), model_dir)
    return cfg


def _load(model_dir: str, impl: str = "cpu", cfg: ModernBertConfig | None = None):
    return load_model(find_weights(model_dir), cfg or _read(model_dir), family=FAMILY, attention_impl=impl)


def _normalised_cls(hidden) -> np.ndarray:
    cls = np.asarray(hidden)[:, 0]
    return cls / np.linalg.norm(cls, axis=-1, keepdims=True)


def _torch_cls(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return _normalised_cls(model(input_ids=torch.tensor([ids])).last_hidden_state.numpy())[0]


def _batch(rows: list[list[int]], pad: int) -> tuple[jax.Array, jax.Array]:
    """Right-padded ids and mask, as the tokenizer pads."""
    T = max(map(len, rows))
    ids = np.full((len(rows), T), pad, np.int32)
    mask = np.zeros((len(rows), T), np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return jnp.asarray(ids), jnp.asarray(mask)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("modernbert-tokenizer"))
    write_tokenizer(out)
    return out


@pytest.fixture(scope="module")
def token_rows(tokenizer_dir) -> list[list[int]]:
    """Inputs from 1 token ([CLS] alone) to past 2,048 tokens, tokenized by the trained byte-level BPE."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = [[TINY_HF["cls_token_id"]]] + [tok(corpus(n, seed=n))["input_ids"] for n in (0, 3, 40, 300, 1400)]
    assert rows[1] == [TINY_HF["cls_token_id"], TINY_HF["sep_token_id"]]
    assert 2048 < len(rows[-1]) <= TINY_HF["max_position_embeddings"], len(rows[-1])
    return rows


@pytest.fixture(scope="module")
def torch_tiny():
    return torch_modernbert(TINY_HF, seed=0)


@pytest.fixture(scope="module")
def tiny_dirs(torch_tiny, tmp_path_factory) -> dict[str, str]:
    """The same weights under both config.json styles."""
    return {
        style: write_checkpoint(torch_tiny, str(tmp_path_factory.mktemp(f"modernbert-{style}")), style)
        for style in ("rope_parameters", "global_local")
    }


def test_both_config_styles_read_the_same(tiny_dirs):
    new, old = (_read(tiny_dirs[s]) for s in ("rope_parameters", "global_local"))
    assert new == old
    assert new.layer_types == ("full_attention", "sliding_attention", "sliding_attention", "full_attention")
    assert (new.global_rope_theta, new.local_rope_theta, new.local_attention) == (80_000.0, 5_000.0, 16)
    assert not (new.norm_bias or new.attention_bias or new.mlp_bias)


@pytest.mark.slow
@pytest.mark.parametrize(("style", "impl"), [("rope_parameters", "cpu"), ("global_local", "einsum")])
def test_cls_embeddings_match_transformers_alone_and_padded(tiny_dirs, torch_tiny, token_rows, style, impl):
    # "cpu" runs the chunked kernel (block skipping) on the sliding layers and on the 2,048+ token input.
    ref = np.stack([_torch_cls(torch_tiny, row) for row in token_rows])
    model = _load(tiny_dirs[style], impl)
    alone = np.stack([_normalised_cls(model(*_batch([row], 3)))[0] for row in token_rows])
    padded = _normalised_cls(model(*_batch(token_rows, TINY_HF["pad_token_id"])))
    assert np.isfinite(padded).all()
    for name, out in (("alone", alone), ("padded batch", padded)):
        diff = np.abs(out - ref).max(axis=-1)
        assert diff.max() <= TOL, f"{name}: max |diff| per input {diff} (lengths {[len(r) for r in token_rows]})"


def test_windows_and_rope_bases_change_the_output(tiny_dirs, token_rows):
    """The parity above means something: a 16-token window and the two RoPE bases each move the CLS vector."""
    cfg = _read(tiny_dirs["rope_parameters"])
    ids, mask = _batch([token_rows[3]], 3)  # tens of tokens: past the window
    base = _normalised_cls(_load(tiny_dirs["rope_parameters"], cfg=cfg)(ids, mask))
    for change in ({"local_attention": 4096}, {"local_rope_theta": 80_000.0}, {"global_rope_theta": 5_000.0}):
        other = _normalised_cls(_load(tiny_dirs["rope_parameters"], cfg=dataclasses.replace(cfg, **change))(ids, mask))
        assert np.abs(other - base).max() > 1e-3, change


def test_biases_tanh_gelu_and_eval_mode_dropout_match_transformers(tmp_path, token_rows):
    torch_model = torch_modernbert(BIASED_HF, seed=1)
    model_dir = write_checkpoint(torch_model, str(tmp_path), tokenizer=False)
    model = _load(model_dir)
    for row in token_rows[:4]:
        out = _normalised_cls(model(*_batch([row], 3)))[0]
        assert np.abs(out - _torch_cls(torch_model, row)).max() <= TOL, len(row)


def test_train_mode_drops_and_eval_mode_does_not(tmp_path, token_rows):
    model = _load(write_checkpoint(torch_modernbert(BIASED_HF, seed=1), str(tmp_path), tokenizer=False))
    ids, mask = _batch([token_rows[3]], 3)
    evaluated = np.asarray(model(ids, mask))
    model.train()
    with pytest.raises(ValueError, match="train mode"):
        model(ids, mask)
    dropped = np.asarray(model(ids, mask, rngs=nnx.Rngs(dropout=0)))
    again = np.asarray(model(ids, mask, rngs=nnx.Rngs(dropout=0)))
    model.eval()
    np.testing.assert_array_equal(dropped, again)  # the randomness is the caller's key
    assert np.abs(dropped - evaluated).max() > 1e-2
    np.testing.assert_array_equal(np.asarray(model(ids, mask)), evaluated)


def test_a_masked_lm_checkpoint_loads_its_encoder(tmp_path, token_rows):
    """``model.``-prefixed keys load; the MLM head and decoder are ignored."""
    mlm = torch_modernbert(TINY_HF, seed=2, head="ForMaskedLM")
    model = _load(write_checkpoint(mlm, str(tmp_path), tokenizer=False))
    row = token_rows[3]
    assert np.abs(_normalised_cls(model(*_batch([row], 3)))[0] - _torch_cls(mlm.model, row)).max() <= TOL


def test_export_writes_what_transformers_loads(tmp_path, token_rows):
    """Every parameter back through the rules, with write_config, is a checkpoint transformers' own class runs."""
    import torch
    from safetensors.numpy import save_file
    from transformers import ModernBertModel

    torch_model = torch_modernbert(BIASED_HF, seed=3)
    src = write_checkpoint(torch_model, str(tmp_path / "src"), tokenizer=False)
    cfg = _read(src)
    model = _load(src, cfg=cfg)
    tensors = dict(
        FAMILY.conversion.to_hf(".".join(map(str, path)), np.asarray(var.get_value()), cfg)
        for path, var in nnx.to_flat_state(nnx.state(model))
    )
    out = tmp_path / "exported"
    out.mkdir()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(FAMILY.write_config(cfg)))
    assert FAMILY.read_config(FAMILY.write_config(cfg), "exported") == cfg
    back = ModernBertModel.from_pretrained(str(out), attn_implementation="eager").eval()
    row = token_rows[3]
    np.testing.assert_allclose(_torch_cls(back, row), _torch_cls(torch_model, row), atol=1e-6)
    with torch.inference_mode():
        assert back.config.layer_types == torch_model.config.layer_types


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 2.0}}}, "rope_parameters"),
        ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling"),
        ({"hidden_activation": "quick_gelu"}, "hidden_activation"),
        ({"layer_types": ["full_attention", "chunked_attention", "full_attention", "full_attention"]}, "layer_types"),
        ({"global_attn_every_n_layers": 0}, "global_attn_every_n_layers"),
        ({"norm_eps": -1.0}, "norm_eps"),
        ({"hidden_size": 30}, "hidden_size"),
        ({"pad_token_id": 512}, "pad_token_id"),
        ({"attention_bias": "yes"}, "attention_bias"),
    ],
)
def test_unsupported_or_bad_configs_name_the_field(change, field):
    with pytest.raises(ConfigError, match=field) as e:
        FAMILY.read_config({**TINY_HF, "model_type": "modernbert", **change}, "model/config.json")
    assert str(e.value).startswith("model/config.json: ")


def test_the_family_is_registered_with_cls_pooling_and_no_token_types():
    assert FAMILY.name == "modernbert" and FAMILY.default_pooling == "cls" and FAMILY.token_types is False
    cfg = ModernBertConfig()  # gte-modernbert-base
    assert cfg.layer_types[:4] == ("full_attention", "sliding_attention", "sliding_attention", "full_attention")
    assert (cfg.global_rope_theta, cfg.local_rope_theta, cfg.local_attention) == (160_000.0, 10_000.0, 128)
    model = nnx.eval_shape(
        lambda: FAMILY.build(cfg, dtype=jnp.float32, act_dtype=None, attention_impl="cpu", rngs=nnx.Rngs(0))
    )
    assert len(list(FAMILY.dense_layers(model))) == 4 * cfg.num_hidden_layers
    assert model.layers[0].attn_norm is None and model.layers[1].attn_norm is not None
