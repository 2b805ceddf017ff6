"""save_pretrained writes a sentence-transformers folder that sentence-transformers, transformers and gte_jax load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flax import nnx

from gte_jax import GTEEncoder
from gte_jax.export import hf_tensors
from gte_jax.params import map_key

TEXTS = ["what is a tensor?", "A tensor is a multi-dimensional array of numbers.", "", "word " * 400]


@pytest.fixture(scope="module")
def exported(minilm: GTEEncoder, tmp_path_factory) -> str:
    return minilm.save_pretrained(str(tmp_path_factory.mktemp("export")))


@pytest.mark.slow
def test_sentence_transformers_loads_the_same_vectors(minilm, exported):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(exported, device="cpu")
    assert st.max_seq_length == minilm.max_length
    np.testing.assert_allclose(st.encode(TEXTS), minilm.encode(TEXTS), atol=1e-5)


def test_gte_jax_loads_the_same_vectors_exactly(minilm, exported):
    again = GTEEncoder.from_pretrained(exported)
    assert again.pooling == minilm.pooling and again.max_length == minilm.max_length
    np.testing.assert_array_equal(again.encode(TEXTS), minilm.encode(TEXTS))


def test_transformers_loads_every_weight(exported, minilm_dir):
    from safetensors.numpy import load_file
    from transformers import AutoModel

    model, info = AutoModel.from_pretrained(exported, output_loading_info=True)
    assert type(model).__name__ == "BertModel"
    assert not info["missing_keys"] and not info["unexpected_keys"]  # the pooler is carried over, not re-initialised
    original = load_file(f"{minilm_dir}/model.safetensors")
    written = load_file(f"{exported}/model.safetensors")
    assert set(written) == set(original) - {"embeddings.position_ids"}
    for key, value in written.items():
        np.testing.assert_array_equal(value, original[key], err_msg=key)


def test_sentence_transformers_files(exported):
    modules = json.load(open(f"{exported}/modules.json"))
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"]
    pooling = json.load(open(f"{exported}/1_Pooling/config.json"))
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    assert json.load(open(f"{exported}/sentence_bert_config.json"))["max_seq_length"] == 256
    assert json.load(open(f"{exported}/config_sentence_transformers.json"))["similarity_fn_name"] == "cosine"
    config = json.load(open(f"{exported}/config.json"))
    assert config["model_type"] == "bert" and config["hidden_dropout_prob"] == 0.1


def test_export_table_inverts_the_load_table(minilm):
    """Every exported key maps back, through params.KEY_MAP, onto the parameter it came from."""
    tensors = hf_tensors(minilm.model, minilm.config)
    paths = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(minilm.model))}
    assert {map_key(k)[0] for k in tensors} == paths
