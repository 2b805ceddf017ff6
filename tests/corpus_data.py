"""Small corpora and helpers for the corpus-job tests (real files, the real MiniLM model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq

from gte_jax.cli import main

from processes import cpu_env

WORDS = ["cats", "rivers", "tensors", "bread", "towers", "reefs", "music", "rain", "engines", "gardens"]


def texts(n: int) -> list[str]:
    """Short, distinct sentences (a single 16-token bucket, so the tests compile little)."""
    return [f"sentence {i} is about {WORDS[i % len(WORDS)]} and {WORDS[(i * 7) % len(WORDS)]}" for i in range(n)]


def write_jsonl(path, records: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return str(path)


def write_txt(path, lines: list[str]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    return str(path)


def read_result(out_dir) -> tuple[list, np.ndarray]:
    """``(ids, embeddings)`` of an output directory, sorted by id."""
    table = pq.read_table(str(out_dir))
    ids = table.column("id").to_pylist()
    vectors = np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(len(ids), -1)
    order = sorted(range(len(ids)), key=ids.__getitem__)
    return [ids[i] for i in order], vectors[order]


def embed_cmd(*args: str) -> list[str]:
    """``gte-jax embed ARGS`` in a fresh interpreter."""
    return [sys.executable, "-m", "gte_jax.cli", "embed", *args]


def child_env() -> dict[str, str]:
    return cpu_env(1, PYTHONUNBUFFERED="1")


def run_measured(cmd: list[str]) -> tuple[int, int, str]:
    """Runs ``cmd``; returns its exit code, its own peak RSS in bytes (Linux ru_maxrss is KiB) and stderr."""
    with subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        stderr = proc.stderr.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024, stderr


def embed(*args) -> int:
    """``gte-jax embed ARGS --quiet`` in this process; returns the exit code."""
    return main(["embed", *map(str, args), "--quiet"])


def tmp_files(out_dir) -> list[str]:
    """Hidden temporary files and lock files left in an output directory."""
    return sorted(n for n in os.listdir(out_dir) if n.endswith((".tmp", ".lock")))
