"""from_pretrained: model resolution, offline errors, sentence-transformers settings, max_length."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest

from gte_jax import CheckpointError, GTEEncoder, ModelNotFoundError
from gte_jax.errors import ConfigError

from checkpoints import TINY_VOCAB_1000, torch_bert, write_checkpoint


def test_unreachable_hub_model_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache: nothing to fall back on
    with pytest.raises(ModelNotFoundError) as err:
        GTEEncoder.from_pretrained("no-such-org/no-such-gte-model", cache_dir=str(tmp_path))
    msg = str(err.value)
    assert "no-such-org/no-such-gte-model" in msg and "local model directory" in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained traceback soup


def test_missing_local_directory_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match="is not a model directory"):
        GTEEncoder.from_pretrained("/nonexistent/model/dir")


def _copy(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def test_max_length_defaults_and_limits(minilm_dir, tmp_path):
    assert GTEEncoder.from_pretrained(minilm_dir).max_length == 256  # sentence_bert_config.json
    assert GTEEncoder.from_pretrained(minilm_dir, max_length=512).max_length == 512
    with pytest.raises(ValueError, match="accepts 2 to 512 tokens"):
        GTEEncoder.from_pretrained(minilm_dir, max_length=513)
    with pytest.raises(ValueError, match="dtype 'float16' is not supported"):
        GTEEncoder.from_pretrained(minilm_dir, dtype="float16")


def test_cls_pooling_from_sentence_transformers_config(minilm_dir, tmp_path):
    from gte_jax_convert.reference import torch_embeddings

    model_dir = _copy(minilm_dir, tmp_path / "cls")
    pooling = {"word_embedding_dimension": 384, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    with open(os.path.join(model_dir, "1_Pooling", "config.json"), "w") as f:
        json.dump(pooling, f)
    enc = GTEEncoder.from_pretrained(model_dir)
    assert enc.pooling == "cls"
    texts = ["first token pooling", "bge and e5 style checkpoints"]
    ref = torch_embeddings(model_dir, texts, max_length=enc.max_length, pooling="cls")
    assert np.abs(enc.encode(texts) - ref).max() <= 1e-5


def test_unsupported_pooling_is_refused(minilm_dir, tmp_path):
    # every sentence-transformers mode runs (tests/test_pooling.py); an unknown one is refused by name
    model_dir = _copy(minilm_dir, tmp_path / "median")
    with open(os.path.join(model_dir, "1_Pooling", "config.json"), "w") as f:
        json.dump({"pooling_mode": "median"}, f)
    with pytest.raises(ValueError, match=r"pooling 'median'"):
        GTEEncoder.from_pretrained(model_dir)


def test_shared_encoders_are_one_object(minilm_dir):
    a = GTEEncoder.shared(minilm_dir, max_length=128)
    assert GTEEncoder.shared(minilm_dir, max_length=128) is a
    assert GTEEncoder.shared(minilm_dir + "/", max_length=128, dtype="float32") is a
    assert GTEEncoder.shared(minilm_dir, max_length=64) is not a


def test_tokenizer_with_ids_past_the_embedding_table_is_refused(tmp_path, minilm_dir):
    # 1,000 embedding rows, bert-base-uncased's 30,522-id tokenizer: ids >= 1000 would embed as NaN.
    model_dir = write_checkpoint(torch_bert(TINY_VOCAB_1000), str(tmp_path / "vocab1000"), minilm_dir)
    with pytest.raises(CheckpointError) as err:
        GTEEncoder.from_pretrained(model_dir)
    msg = str(err.value)
    assert model_dir in msg and "30522 ids" in msg and "1000 rows" in msg


def test_config_with_a_wrong_type_names_the_file_and_field(minilm_dir, tmp_path):
    model_dir = _copy(minilm_dir, tmp_path / "bad-config")
    path = os.path.join(model_dir, "config.json")
    with open(path) as f:
        config = json.load(f)
    with open(path, "w") as f:
        json.dump({**config, "hidden_size": "384"}, f)
    with pytest.raises(ConfigError, match=f"^{re.escape(path)}: hidden_size is '384', not a positive integer"):
        GTEEncoder.from_pretrained(model_dir)
