"""`gte-jax convert`: a self-contained directory that loads without torch and gives the same vectors."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

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
    import json

    np.testing.assert_array_equal(np.array(json.loads(res.stdout), dtype=np.float32), minilm.encode(TEXTS))


def test_convert_refuses_a_non_empty_output(minilm_dir, tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    res = _run("convert", minilm_dir, str(tmp_path))
    assert res.returncode == 2 and "exists and is not empty" in res.stderr
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_runtime_package_never_imports_torch(minilm_dir):
    code = (
        "import sys\nfrom gte_jax import GTEEncoder\n"
        f"GTEEncoder.from_pretrained({minilm_dir!r}).encode(['x'])\n"
        "assert 'torch' not in sys.modules, 'gte_jax imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
