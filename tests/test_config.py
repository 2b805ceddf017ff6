"""GTEConfig: presets, Hugging Face config.json round trip, and refusals."""

from __future__ import annotations

import json

import pytest

from gte_jax import GTEConfig
from gte_jax.errors import ConfigError


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
    with pytest.raises(ConfigError, match=message):
        GTEConfig.from_hf_config(path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hidden_size": "384"}, "hidden_size is '384', not a positive integer"),
        ({"num_attention_heads": 0}, "num_attention_heads is 0, not a positive integer"),  # was ZeroDivisionError
        ({"num_hidden_layers": -2}, "num_hidden_layers is -2, not a positive integer"),
        ({"intermediate_size": 1536.5}, "intermediate_size is 1536.5, not a positive integer"),
        ({"vocab_size": True}, "vocab_size is True, not a positive integer"),
        ({"max_position_embeddings": [512]}, r"max_position_embeddings is \[512\], not a positive integer"),
        ({"layer_norm_eps": "1e-12"}, "layer_norm_eps is '1e-12', not a positive number"),
        ({"layer_norm_eps": 0}, "layer_norm_eps is 0, not a positive number"),
        ({"pad_token_id": 30522}, "pad_token_id is 30522, not an integer from 0 to 30521"),
    ],
)
def test_wrong_types_and_values_name_the_file_and_field(tmp_path, change, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**GTEConfig.gte_small().to_hf_config(), **change}))
    with pytest.raises(ConfigError, match=message) as err:
        GTEConfig.from_hf_config(path)
    assert str(err.value).startswith(f"{path}: ") and str(err.value).endswith("; fix the config.")


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"hidden_size": 384,}', r"is not valid JSON \(.* at line 1, column 21\)"),
        ("[384, 12]", "holds a JSON list, not an object"),
        (None, "does not exist; pass a model directory that holds its config.json"),
    ],
)
def test_unreadable_config_json_names_the_file(tmp_path, text, message):
    path = tmp_path / "config.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        GTEConfig.from_hf_config(path)
    assert str(err.value).startswith(str(path))


def test_direct_construction_is_validated_too():
    with pytest.raises(ConfigError, match="num_attention_heads is 0"):
        GTEConfig(num_attention_heads=0)
