"""The READMEs' examples run offline as pasted: the Python blocks in order in one fresh process (as a reader pastes
them into one session), the offline shell lines in bash. Offline means the Hub is off and nothing is cached, so
each example runs on the bundled all-MiniLM-L6-v2 that `gte-jax demo --print-model-dir` names."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
ADAPTER_READMES = {name: os.path.join(ROOT, "integrations", name, "README.md") for name in ("langchain", "llama_index")}
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
OFFLINE_SHELL = "MODEL=$(gte-jax demo --print-model-dir)\n"

# Python blocks of README.md that this file does not run as part of the whole, by a line each holds, and why.
NOT_RUN = {
    "import mteb\n": "evaluates STSBenchmark, whose data mteb downloads from the Hub (tests/test_mteb.py: local data)",
    "import pyarrow.parquet as pq\n": "reads the shards that the `gte-jax embed corpus.jsonl` command above writes",
    "from openai import OpenAI\n": "clients of a `gte-jax serve` on port 8080 (tests/test_serve.py runs them)",
    "for batch in batches:": "a sketch around the reader's own batches (tests/test_train_step.py runs the step)",
    "import ray\n": "run on its own by test_ray_example_runs_on_cpu: it starts a Ray cluster",
    "from gte_jax import GTEEncoder, GTEReranker\n": "needs a cross-encoder from the Hub; none ships offline "
    "(tests/test_reranker.py runs predict and rank on local ones)",
}


# The adapters' reranking examples need a cross-encoder checkpoint, and none ships offline: the integrations'
# tests run the same calls on a random-init cross-encoder (test_langchain_rerank.py, test_llama_index_rerank.py).
ADAPTER_NOT_RUN = ("GTERerank(", "GTEJaxRerank(")


def code_blocks(path: str, language: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [m.group(2) for m in FENCE.finditer(f.read()) if m.group(1) == language]


def run_python(code: str, cwd, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(cwd / "hf-home")}  # nothing cached
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def offline_block() -> str:
    """The README's Python line that every later block builds on: ``MODEL = demo_model_dir()``."""
    return next(b for b in code_blocks(README, "python") if "MODEL = demo_model_dir()" in b)


def test_every_block_left_out_is_there_once():
    blocks = code_blocks(README, "python")
    for line in NOT_RUN:
        assert sum(line in b for b in blocks) == 1, f"NOT_RUN names a block that is gone or ambiguous: {line!r}"


@pytest.mark.slow
def test_python_examples_run_offline(tmp_path, minilm_dir):
    blocks = [b for b in code_blocks(README, "python") if not any(line in b for line in NOT_RUN)]
    assert blocks[0] == offline_block() and len(blocks) >= 5
    res = run_python("\n".join(blocks), tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "(1, 384)" in res.stdout  # the research block's print: the module ran on MiniLM's 384 dimensions
    assert "using the bundled sentence-transformers/all-MiniLM-L6-v2" in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("adapter", list(ADAPTER_READMES))
def test_adapter_readme_example_runs_offline(adapter, tmp_path, minilm_dir):
    (block,) = [b for b in code_blocks(ADAPTER_READMES[adapter], "python") if not any(n in b for n in ADAPTER_NOT_RUN)]
    res = run_python(block, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout == "JAX compiles numerical Python with XLA.\n"  # the retrieval it prints


@pytest.mark.slow
def test_offline_shell_lines_run(tmp_path, minilm_dir):
    (block,) = [b for b in code_blocks(README, "bash") if b.startswith(OFFLINE_SHELL)]
    bin_dir = tmp_path / "bin"  # `gte-jax` is the package under test, whatever else is on PATH
    bin_dir.mkdir()
    (bin_dir / "gte-jax").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m gte_jax.cli "$@"\n')
    (bin_dir / "gte-jax").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HF_HOME": str(tmp_path / "hf")}
    res = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (line,) = res.stdout.splitlines()
    record = json.loads(line)
    assert record["id"] == 0 and len(record["embedding"]) == 384


@pytest.mark.slow
def test_ray_example_runs_on_cpu(tmp_path, minilm_dir):
    pytest.importorskip("ray", reason='needs Ray Data: pip install ".[ray]"')
    (block,) = [b for b in code_blocks(README, "python") if "import ray\n" in b]
    assert "num_gpus" not in block  # on a machine without GPUs an actor asking for one is never scheduled
    res = run_python(offline_block() + "\n" + block, tmp_path, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    table = pq.read_table(tmp_path / "emb-ray").sort_by("id")
    assert table.column("id").to_pylist() == [0, 1]
    assert [len(v) for v in table.column("embedding").to_pylist()] == [384, 384]
