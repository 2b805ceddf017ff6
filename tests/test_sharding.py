"""Data and tensor parallelism on 8 simulated CPU devices, and 2 processes over jax.distributed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "sharded_worker.py")


def _env(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


@pytest.fixture(scope="module")
def texts_file(sts_test, tmp_path_factory):
    path = tmp_path_factory.mktemp("texts") / "texts.json"
    path.write_text(json.dumps(sts_test[0][:150] + ["", "x " * 600]))
    return str(path)


def _encode(minilm_dir, texts_file, out, mesh, devices, *dist):
    cmd = [sys.executable, WORKER, minilm_dir, texts_file, str(out), mesh, *map(str, dist)]
    return subprocess.Popen(cmd, env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out


@pytest.fixture(scope="module")
def one_device(minilm_dir, texts_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "v.npy"
    assert "devices=1 " in _wait(_encode(minilm_dir, texts_file, out, "data", 1))
    return np.load(out)


@pytest.mark.slow
@pytest.mark.parametrize("mesh, shape", [("data", "{'data': 8}"), ("data,model", "{'data': 4, 'model': 2}")])
def test_eight_devices_match_one(minilm_dir, texts_file, one_device, tmp_path, mesh, shape):
    out = tmp_path / "v.npy"
    log = _wait(_encode(minilm_dir, texts_file, out, mesh, 8))
    assert f"devices=8 mesh={shape}" in log
    assert np.abs(np.load(out) - one_device).max() <= 1e-6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_cover_the_single_process_result(minilm_dir, texts_file, one_device, tmp_path):
    port = _free_port()
    procs = [_encode(minilm_dir, texts_file, tmp_path / f"p{i}.npy", "data", 2, i, 2, port) for i in range(2)]
    logs = [_wait(p) for p in procs]
    assert all("devices=4 mesh={'data': 4}" in log for log in logs)
    p0, p1 = np.load(tmp_path / "p0.npy"), np.load(tmp_path / "p1.npy")
    assert np.abs(p0 - one_device[0::2]).max() <= 1e-6
    assert np.abs(p1 - one_device[1::2][:40]).max() <= 1e-6
