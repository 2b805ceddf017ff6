"""Checkpoint conversion: key table, formats, and one error listing every problem."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gte_jax import CheckpointError, GTEConfig, GTEEncoder
from gte_jax.checkpoints.params import check_vocab, load_model, map_key
from gte_jax.engine.tokenization import Tokenizer

from checkpoints import TINY, TINY_VOCAB_1000, copy_tokenizer, torch_bert, truncate, write_checkpoint

TEXTS = ["a short text", "another, somewhat longer text about conversion", ""]


def _reference(model_dir):
    from gte_jax_convert.reference import torch_embeddings

    return torch_embeddings(model_dir, TEXTS, max_length=512)


def test_key_table_covers_every_bert_parameter(tiny_torch):
    mapped = {
        k: map_key(k) for k in tiny_torch.state_dict() if not k.startswith("pooler.") and k != "embeddings.position_ids"
    }
    assert all(v is not None for v in mapped.values()), [k for k, v in mapped.items() if v is None]
    assert map_key("bert.encoder.layer.1.attention.self.query.weight")[0] == "layer.1.attention.query.kernel"
    assert map_key("encoder.layer.0.output.LayerNorm.gamma")[0] == "layer.0.output_LayerNorm.scale"


@pytest.mark.parametrize("fmt", ["sharded", "bin"])
def test_formats_load_to_the_same_vectors(tmp_path, tiny_torch, tiny_dir, minilm_dir, fmt):
    other = write_checkpoint(tiny_torch, str(tmp_path / fmt), minilm_dir, fmt, prefix="bert." if fmt == "bin" else "")
    if fmt == "sharded":
        assert os.path.exists(os.path.join(other, "model.safetensors.index.json"))
    a = GTEEncoder.from_pretrained(tiny_dir).encode(TEXTS)
    b = GTEEncoder.from_pretrained(other).encode(TEXTS)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - _reference(tiny_dir)).max() <= 1e-5


def test_prefixed_keys_and_unused_heads_are_accepted(tmp_path, tiny_dir, minilm_dir):
    tensors = load_file(os.path.join(tiny_dir, "model.safetensors"))
    tensors = {"bert." + k: v for k, v in tensors.items()}
    tensors["bert.embeddings.position_ids"] = np.arange(512, dtype=np.int64)[None]
    tensors["bert.pooler.dense.weight"] = np.zeros((32, 32), np.float32)
    tensors["cls.predictions.bias"] = np.zeros(30522, np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    for name in ("config.json",):
        os.link(os.path.join(tiny_dir, name), tmp_path / name)
    copy_tokenizer(minilm_dir, str(tmp_path))
    np.testing.assert_array_equal(
        GTEEncoder.from_pretrained(str(tmp_path)).encode(TEXTS), GTEEncoder.from_pretrained(tiny_dir).encode(TEXTS)
    )


def test_every_problem_is_reported_at_once(tmp_path, tiny_dir):
    tensors = load_file(os.path.join(tiny_dir, "model.safetensors"))
    del tensors["encoder.layer.1.intermediate.dense.weight"]  # missing
    tensors["encoder.layer.0.output.dense.weight"] = np.zeros((32, 63), np.float32)  # mis-shaped
    tensors["encoder.layer.7.attention.self.query.bias"] = np.zeros(32, np.float32)  # no such layer
    tensors["encoder.layer.0.attention.self.key.weight"] = np.zeros((31, 32), np.float32)  # cannot reshape
    tensors["decoder.weight"] = np.zeros(3, np.float32)  # unexpected
    tensors["embeddings.token_type_embeddings.weight"] = np.zeros((2, 32), np.int32)  # not float
    path = str(tmp_path / "model.safetensors")
    save_file(tensors, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path, TINY)
    msg = str(err.value)
    assert "6 problems" in msg
    for needle in (
        "missing key for layer.1.intermediate.kernel",
        "'encoder.layer.0.output.dense.weight' has shape (32, 63), which does not fit layer.0.output.kernel",
        "'encoder.layer.0.attention.self.key.weight' has shape (31, 32)",
        "unexpected key 'encoder.layer.7.attention.self.query.bias'",
        "unexpected key 'decoder.weight'",
        "'embeddings.token_type_embeddings.weight' has dtype int32",
    ):
        assert needle in msg


def test_config_that_does_not_fit_the_weights_is_refused(tiny_dir):
    wrong = GTEConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)
    with pytest.raises(CheckpointError, match="missing key for layer.2"):
        load_model(os.path.join(tiny_dir, "model.safetensors"), wrong)


def test_no_weights_is_a_clear_error(tmp_path, tiny_dir):
    os.link(os.path.join(tiny_dir, "config.json"), tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="no weights found; expected one of gte_jax.safetensors"):
        GTEEncoder.from_pretrained(str(tmp_path))


def test_bin_without_torch_says_what_to_do(tmp_path, tiny_torch, minilm_dir):
    model_dir = write_checkpoint(tiny_torch, str(tmp_path / "bin"), minilm_dir, "bin")
    code = (
        "import sys; sys.modules['torch'] = None\n"  # as if torch were not installed
        "from gte_jax import GTEEncoder, CheckpointError\n"
        f"try:\n    GTEEncoder.from_pretrained({model_dir!r})\n"
        "except CheckpointError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "torch is not installed" in out and "model.safetensors" in out


def _tokenizer_vocab_size(model_dir: str) -> int:
    return Tokenizer.from_dir(model_dir, 128).backend.get_vocab_size(with_added_tokens=True)


def test_check_vocab_refuses_ids_past_the_embedding_table(tmp_path, minilm_dir):
    model_dir = write_checkpoint(torch_bert(TINY_VOCAB_1000), str(tmp_path / "vocab1000"), minilm_dir)
    cfg = GTEConfig.from_hf_config(os.path.join(model_dir, "config.json"))
    with pytest.raises(CheckpointError) as err:
        check_vocab(_tokenizer_vocab_size(model_dir), cfg, model_dir)
    msg = str(err.value)
    assert model_dir in msg and "tokenizer vocabulary has 30522 ids" in msg and "embedding table has 1000 rows" in msg
    assert "use the tokenizer files that were published with these weights" in msg
    check_vocab(1000, cfg, model_dir)  # every id fits
    check_vocab(_tokenizer_vocab_size(minilm_dir), GTEConfig.from_hf_config(f"{minilm_dir}/config.json"), minilm_dir)


def _shard(model_dir: str, i: int) -> str:
    return sorted(f for f in os.listdir(model_dir) if f.startswith("model-"))[i]


@pytest.mark.parametrize(
    "fmt, damaged, action, message",
    [
        ("safetensors", "model.safetensors", "truncate", "is corrupt or truncated (Error while deserializing header"),
        ("bin", "pytorch_model.bin", "truncate", "is corrupt or truncated ("),
        ("sharded", -1, "truncate", "is corrupt or truncated (Error while deserializing header"),
        ("sharded", 0, "remove", "which does not exist; download the model again."),
        ("sharded", "model.safetensors.index.json", "truncate", "is corrupt or truncated (Unterminated string"),
    ],
    ids=["safetensors", "bin", "shard", "missing-shard", "index"],
)
def test_damaged_weights_name_the_file(tmp_path, tiny_torch, minilm_dir, fmt, damaged, action, message):
    model_dir = write_checkpoint(tiny_torch, str(tmp_path), minilm_dir, fmt, shard_size="20KB")
    path = os.path.join(model_dir, damaged if isinstance(damaged, str) else _shard(model_dir, damaged))
    if action == "truncate":
        truncate(path)
    else:
        os.remove(path)
    with pytest.raises(CheckpointError) as err:
        GTEEncoder.from_pretrained(model_dir)
    msg = str(err.value)
    assert path in msg and message in msg and msg.endswith("download the model again."), msg


@pytest.mark.parametrize(
    ("fmt", "dtype"), [("safetensors", "bfloat16"), ("safetensors", "float16"), ("bin", "bfloat16")]
)
def test_half_precision_checkpoints_load(tmp_path, tiny_torch, minilm_dir, fmt, dtype):
    """Many fine-tuned checkpoints are stored in bf16: they load, and give transformers' float32 vectors."""
    import copy

    import torch

    half = copy.deepcopy(tiny_torch).to(getattr(torch, dtype))
    out = write_checkpoint(half, str(tmp_path / f"{fmt}-{dtype}"), minilm_dir, fmt)
    vectors = GTEEncoder.from_pretrained(out).encode(TEXTS)
    assert np.abs(vectors - _reference(out)).max() <= 1e-5
    bf16 = GTEEncoder.from_pretrained(out, dtype="bfloat16").encode(TEXTS)  # runs in the dtype asked for
    assert np.min(np.sum(bf16 * vectors, axis=1)) > 0.999
