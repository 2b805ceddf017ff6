"""Data and tensor parallelism on 8 simulated CPU devices, and 2 processes over jax.distributed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from gte_jax import GTEConfig, GTEEncoder
from gte_jax.engine import sharding
from gte_jax.models.bert import FAMILY as BERT

from processes import cpu_env, free_port

WORKER = os.path.join(os.path.dirname(__file__), "sharded_worker.py")


@pytest.fixture(scope="module")
def texts_file(sts_test, tmp_path_factory):
    path = tmp_path_factory.mktemp("texts") / "texts.json"
    path.write_text(json.dumps(sts_test[0][:150] + ["", "x " * 600]))
    return str(path)


def _encode(minilm_dir, texts_file, out, devices, *options):
    cmd = [sys.executable, WORKER, minilm_dir, texts_file, str(out), *map(str, options)]
    return subprocess.Popen(cmd, env=cpu_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(proc) -> dict:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def one_device(minilm_dir, texts_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "v.npy"
    assert _wait(_encode(minilm_dir, texts_file, out, 1))["devices"] == 1
    return np.load(out)


@pytest.mark.slow
@pytest.mark.parametrize("mesh, shape", [("data", {"data": 8}), ("data,model", {"data": 4, "model": 2})])
def test_eight_devices_match_one(minilm_dir, texts_file, one_device, tmp_path, mesh, shape):
    out = tmp_path / "v.npy"
    report = _wait(_encode(minilm_dir, texts_file, out, 8, "--mesh", mesh))
    assert report["devices"] == 8 and report["mesh"] == shape
    assert np.abs(np.load(out) - one_device).max() <= 1e-6


def _two_processes(minilm_dir, texts_file, tmp_path, *options):
    port = free_port()
    procs = [
        _encode(
            minilm_dir,
            texts_file,
            tmp_path / f"p{i}.npy",
            2,
            "--process-id",
            i,
            "--num-processes",
            2,
            "--port",
            port,
            *options,
        )
        for i in range(2)
    ]
    reports = [_wait(p) for p in procs]
    assert all(r["devices"] == 4 and r["mesh"] == {"data": 4} for r in reports)
    return reports, np.load(tmp_path / "p0.npy"), np.load(tmp_path / "p1.npy")


@pytest.mark.slow
def test_two_processes_cover_the_single_process_result(minilm_dir, texts_file, one_device, tmp_path):
    _, p0, p1 = _two_processes(
        minilm_dir, texts_file, tmp_path, "--take", 40, "--num-processes", 2
    )  # process 1 has less work
    assert np.abs(p0 - one_device[0::2]).max() <= 1e-6
    assert np.abs(p1 - one_device[1::2][:40]).max() <= 1e-6


@pytest.mark.slow
def test_warmup_covers_what_two_processes_run(minilm_dir, tmp_path):
    # Lockstep steps have processes x rows global rows; warm-up must compile exactly those shapes.
    rng = np.random.default_rng(1)
    words = "the model embeds passages queries and documents for retrieval across many topics".split()
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 701))) for _ in range(90)]
    path = tmp_path / "varied.json"
    path.write_text(json.dumps(texts))
    options = ("--max-length", 128, "--warmup", "--take", 20, "--num-processes", 2)
    reports, p0, p1 = _two_processes(minilm_dir, str(path), tmp_path, *options)
    assert [r["compiles"] for r in reports] == [0, 0] and reports[0]["warmed"] > 0
    single = GTEEncoder.from_pretrained(minilm_dir, max_length=128).encode(texts)
    assert np.abs(p0 - single[0::2]).max() <= 1e-5
    assert np.abs(p1 - single[1::2][:20]).max() <= 1e-5


@pytest.mark.parametrize("preset", ["gte_small", "gte_base", "gte_large"])
def test_every_tensor_parallel_spec_matches_parameters_of_each_preset(preset):
    # A renamed module would otherwise fall back to replication without a word.
    paths = _param_paths(getattr(GTEConfig, preset)())
    for pattern, spec in BERT.param_specs:
        assert any(re.search(pattern, p) for p in paths), f"{pattern} ({spec}) matches no parameter of {preset}"


def test_gte_large_parameters_get_the_intended_specs():
    mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
    expected = {  # layer 0's parameters; every layer is alike
        "attention.query.kernel": P(None, "model", None),  # [D, N, H]: heads split
        "attention.key.bias": P("model", None),
        "attention.output.kernel": P("model", None, None),  # [N, H, D]
        "attention.output.bias": P(),  # added after the all-reduce: a copy everywhere
        "intermediate.kernel": P(None, "model"),  # [D, F]: the FFN's inner dimension split
        "intermediate.bias": P("model"),
        "output.kernel": P("model", None),  # [F, D]
        "output.bias": P(),
        "attention_LayerNorm.scale": P(),
        "output_LayerNorm.bias": P(),
    }
    paths = _param_paths(GTEConfig.gte_large())
    for suffix, spec in expected.items():
        path = f"layer.0.{suffix}"
        assert path in paths, path
        assert sharding.param_sharding(mesh, path, BERT.param_specs).spec == spec, path
    for path in (p for p in paths if p.startswith("embeddings.")):
        assert sharding.param_sharding(mesh, path, BERT.param_specs).spec == P(), path


def _param_paths(cfg) -> list[str]:
    from flax import nnx

    from gte_jax.checkpoints.params import abstract_model

    _, state = nnx.split(abstract_model(cfg))
    return [".".join(map(str, path)) for path, _ in nnx.to_flat_state(state)]
