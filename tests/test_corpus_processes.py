"""The corpus job as real processes: killed and resumed, memory flat in the corpus size, two hosts on localhost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from gte_jax.corpus.job import EmbedJob, run

from corpus_data import child_env, embed_cmd, read_result, run_measured, texts, write_jsonl, write_txt
from processes import free_port

pytestmark = pytest.mark.slow


def reference(tmp_path, corpus: str, **options) -> tuple[list, np.ndarray]:
    """A clean single-process run in this process."""
    out = tmp_path / "reference"
    run(EmbedJob(input=corpus, output=str(out), quiet=True, **options))
    return read_result(out)


def test_sigkill_then_rerun_resumes(tmp_path, minilm_dir):
    n, shard = 384, 64
    ids = [1_000_003 * i % 9_999_991 for i in range(n)]  # distinct, unordered
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"id": i, "text": t} for i, t in zip(ids, texts(n), strict=True)])
    out = tmp_path / "out"
    gte_jax = shutil.which("gte-jax")
    assert gte_jax, "the gte-jax console script is not installed (pip install -e .)"
    cmd = [gte_jax, "embed", corpus, "--model", minilm_dir, "--output", str(out), "--shard-size", str(shard)]

    proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "part-00000.parquet").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the job ended before writing a shard"
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = sorted(f for f in os.listdir(out) if f.startswith("part-"))
    assert 1 <= len(done) < n // shard, f"the kill came too late to test resuming: {done}"
    assert pq.read_table(out).num_rows == 64 * len(done)  # only whole shards are visible
    assert json.loads((out / "_manifest.json").read_text())["status"] == "running"

    rerun = subprocess.run(cmd + ["--quiet"], env=child_env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    got_ids, got = read_result(out)
    assert got_ids == sorted(ids)  # every input row exactly once
    want_ids, want = reference(tmp_path, corpus, model=minilm_dir, shard_size=shard)
    assert want_ids == got_ids
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["rows"]["embedded"] == n
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


def test_peak_memory_is_flat_in_corpus_size(tmp_path, minilm_dir):
    """10x the rows costs the same peak RSS: rows are ~100 KB, so holding the 400-row corpus would add ~40 MB."""

    def corpus(n: int) -> str:
        # Control characters are real text to the job but dropped by BERT's normaliser: big rows, cheap to embed.
        return write_txt(tmp_path / f"corpus-{n}.txt", [f"row {i} " + "\x01" * 100_000 for i in range(n)])

    peaks = {}
    for n in (40, 400):
        out = tmp_path / f"out-{n}"
        # Small shards keep the tokenizer's transient memory (several times a piece's bytes) small next to the signal.
        cmd = embed_cmd(corpus(n), "--model", minilm_dir, "--output", str(out), "--shard-size", "10", "--quiet")
        code, peaks[n], err = run_measured(cmd + ["--max-length", "16"])
        assert code == 0, err
        assert pq.read_table(out).num_rows == n
    mib = {n: round(p / 2**20) for n, p in peaks.items()}
    assert peaks[400] <= peaks[40] + 20 * 2**20, f"peak RSS grew with the corpus (MiB): {mib}"


def test_two_processes_split_the_shards(tmp_path, minilm_dir):
    n, shard = 300, 64  # shards 0, 2, 4 on process 0; 1, 3 on process 1
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in texts(n)])
    out = tmp_path / "out"
    args = [corpus, "--model", minilm_dir, "--output", str(out), "--shard-size", str(shard), "--quiet"]
    args += ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2"]
    procs = [
        subprocess.Popen(embed_cmd(*args, "--process-id", str(k)), env=child_env(), stderr=subprocess.PIPE, text=True)
        for k in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err

    manifests = [json.loads((out / f"_manifest.process-0000{k}-of-00002.json").read_text()) for k in range(2)]
    assert [[s["shard"] for s in m["shards"]] for m in manifests] == [[0, 2, 4], [1, 3]]
    assert [m["rows"]["embedded"] for m in manifests] == [64 + 64 + 44, 64 + 64]
    assert sorted(f for f in os.listdir(out) if not f.startswith("_")) == [f"part-0000{k}.parquet" for k in range(5)]
    got_ids, got = read_result(out)
    want_ids, want = reference(tmp_path, corpus, model=minilm_dir, shard_size=shard)
    assert got_ids == want_ids == list(range(n))
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)

    # Resuming with one process instead: nothing is left to embed, and one manifest replaces the two.
    manifest = run(EmbedJob(input=corpus, output=str(out), model=minilm_dir, shard_size=shard, quiet=True))
    assert [s["shard"] for s in manifest["shards"]] == [0, 1, 2, 3, 4] and manifest["rows"]["embedded"] == n
    assert sorted(f for f in os.listdir(out) if f.startswith("_")) == ["_manifest.json"]
