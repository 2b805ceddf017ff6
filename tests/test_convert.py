"""`gte-jax convert`: a self-contained directory that loads without torch and gives the same vectors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from checkpoints import TINY_VOCAB_1000, torch_bert, truncate, write_checkpoint

TEXTS = ["converted checkpoints load without torch", ""]


def _run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "gte_jax.cli", *args], capture_output=True, text=True, **kw)


def test_convert_then_load_without_torch(minilm, minilm_dir, tmp_path):
    out = tmp_path / "converted"
    res = _run("convert", minilm_dir, str(out))
    assert res.returncode == 0, res.stderr
    assert "converted vs PyTorch BertModel: max abs difference" in res.stdout
    diff = float(res.stdout.split("converted vs PyTorch BertModel: max abs difference")[1].split()[0])
    assert diff <= 1e-5
    assert {"gte_jax.safetensors", "config.json", "tokenizer.json", "modules.json"} <= set(os.listdir(out))
    assert not any(f.endswith((".bin", "model.safetensors")) and f != "gte_jax.safetensors" for f in os.listdir(out))
    code = (
        "import sys, json\n"
        "sys.modules['torch'] = None\n"  # torch is not importable here
        "from gte_jax import GTEEncoder\n"
        f"enc = GTEEncoder.from_pretrained({str(out)!r})\n"
        f"print(json.dumps(enc.encode({TEXTS!r}).tolist()))\n"
        "assert enc.max_length == 256 and enc.pooling == 'mean'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    np.testing.assert_array_equal(np.array(json.loads(res.stdout), dtype=np.float32), minilm.encode(TEXTS))


def test_convert_refuses_a_non_empty_output(minilm_dir, tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    res = _run("convert", minilm_dir, str(tmp_path))
    assert res.returncode == 2 and f"gte-jax convert: error: {tmp_path} exists and is not empty" in res.stderr
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_convert_leaves_a_users_partial_directory_alone(tiny_dir, tmp_path):
    (tmp_path / "out.partial").mkdir()
    (tmp_path / "out.partial" / "keep.txt").write_text("precious")
    res = _run("convert", tiny_dir, str(tmp_path / "out"), "--no-verify")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out.partial" / "keep.txt").read_text() == "precious"
    assert "gte_jax.safetensors" in os.listdir(tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["out", "out.partial"]  # its own work directory is gone


def test_convert_refuses_an_output_that_is_a_file(tiny_dir, tmp_path):
    (tmp_path / "out").write_text("precious")
    res = _run("convert", tiny_dir, str(tmp_path / "out"), "--no-verify")
    assert res.returncode == 2, res.stderr
    assert f"gte-jax convert: error: {tmp_path / 'out'} exists and is not a directory; choose a new" in res.stderr
    assert (tmp_path / "out").read_text() == "precious"
    assert os.listdir(tmp_path) == ["out"]


def _config_field(field, value):
    def damage(model_dir, tokenizer_dir):
        path = os.path.join(model_dir, "config.json")
        with open(path) as f:
            config = json.load(f)
        with open(path, "w") as f:
            json.dump({**config, field: value}, f)
        return path

    return damage


def _truncated_weights(model_dir, tokenizer_dir):
    truncate(os.path.join(model_dir, "model.safetensors"))
    return os.path.join(model_dir, "model.safetensors")


def _malformed_config(model_dir, tokenizer_dir):
    path = os.path.join(model_dir, "config.json")
    with open(path, "a") as f:
        f.write(",")
    return path


def _small_embedding_table(model_dir, tokenizer_dir):
    shutil.rmtree(model_dir)
    return write_checkpoint(torch_bert(TINY_VOCAB_1000), model_dir, tokenizer_dir)


@pytest.mark.parametrize(
    "damage, message",
    [
        (_truncated_weights, "is corrupt or truncated (Error while deserializing header"),
        (_config_field("hidden_size", "384"), "hidden_size is '384', not a positive integer"),
        (_config_field("num_attention_heads", 0), "num_attention_heads is 0, not a positive integer"),
        (_config_field("intermediate_size", -64), "intermediate_size is -64, not a positive integer"),
        (_config_field("layer_norm_eps", "tiny"), "layer_norm_eps is 'tiny', not a positive number"),
        (_malformed_config, "is not valid JSON (Extra data at line"),
        (_small_embedding_table, "tokenizer vocabulary has 30522 ids but the embedding table has 1000 rows"),
    ],
    ids=["truncated-weights", "str-size", "zero-heads", "negative-size", "str-eps", "malformed-json", "vocab"],
)
def test_convert_bad_checkpoints_are_clear_errors(tiny_dir, minilm_dir, tmp_path, damage, message):
    src = shutil.copytree(tiny_dir, tmp_path / "src")
    named = damage(str(src), minilm_dir)
    res = _run("convert", str(src), str(tmp_path / "out"), "--no-verify")
    assert res.returncode == 2, res.stderr
    assert f"gte-jax convert: error: {named}" in res.stderr and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert os.listdir(tmp_path) == ["src"]  # no output, no work directory


def test_runtime_package_never_imports_torch(minilm_dir):
    code = (
        "import sys\nfrom gte_jax import GTEEncoder\n"
        f"GTEEncoder.from_pretrained({minilm_dir!r}).encode(['x'])\n"
        "assert 'torch' not in sys.modules, 'gte_jax imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_convert_copies_a_pooling_folder_under_another_name(tiny_dir, tmp_path):
    """modules.json may name its Pooling folder anything: convert copies that folder, so CLS pooling survives."""
    from gte_jax import GTEEncoder
    from gte_jax.checkpoints.hub import module_config_files

    src = tmp_path / "src"
    shutil.copytree(tiny_dir, src)
    os.makedirs(src / "pooling_cls")
    (src / "pooling_cls" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode": "cls"})
    )
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "pooling_cls", "type": "sentence_transformers.models.Pooling"},
    ]
    (src / "modules.json").write_text(json.dumps(modules))
    assert module_config_files(str(src)) == ["pooling_cls/config.json"]
    from gte_jax_convert.cli import convert

    out = convert(str(src), str(tmp_path / "out"), verify=False, log=lambda *_: None)
    assert GTEEncoder.from_pretrained(out).pooling == GTEEncoder.from_pretrained(str(src)).pooling == "cls"
