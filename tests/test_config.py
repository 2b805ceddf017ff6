"""GTEConfig: presets, Hugging Face config.json round trip, and refusals."""

from __future__ import annotations

import json

import pytest

from gte_jax import GTEConfig


@pytest.mark.parametrize(
    "preset, dims",
    [
        (GTEConfig.gte_small(), (384, 12, 12, 1536)),
        (GTEConfig.gte_base(), (768, 12, 12, 3072)),
        (GTEConfig.gte_large(), (1024, 24, 16, 4096)),
    ],
)
def test_presets_have_the_published_shapes(preset, dims):
    assert (preset.hidden_size, preset.num_hidden_layers, preset.num_attention_heads, preset.intermediate_size) == dims
    assert preset.layer_norm_eps == 1e-12 and preset.vocab_size == 30522 and preset.max_position_embeddings == 512


def test_from_hf_config_reads_minilm(minilm_dir):
    cfg = GTEConfig.from_hf_config(f"{minilm_dir}/config.json")
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.head_dim) == (384, 6, 32)
    assert GTEConfig.from_hf_config(cfg.to_hf_config()) == cfg


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "roberta"}, "model_type 'roberta' is not supported"),
        ({"hidden_act": "gelu_new"}, "hidden_act 'gelu_new'"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
        ({"num_attention_heads": 5}, "not divisible"),
    ],
)
def test_unsupported_configs_are_refused(tmp_path, change, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**GTEConfig.gte_small().to_hf_config(), **change}))
    with pytest.raises(ValueError, match=message):
        GTEConfig.from_hf_config(path)
