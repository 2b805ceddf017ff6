"""Hub lookups when the Hub does not answer: they fail fast with a message that names the way out offline, and a
cached model still loads. huggingface_hub's own client has no connect timeout, so without the probe these calls
wait until the kernel gives up on the connection (minutes)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from huggingface_hub import constants

from gte_jax.checkpoints.hub import HUB_CONNECT_TIMEOUT, ModelNotFoundError, hub_unreachable, resolve_model_dir

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@contextlib.contextmanager
def silent_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` where connections are never accepted: the listen queue is full, so the kernel
    drops further connection attempts, as a firewall that drops packets does."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):  # Linux accepts backlog + 1 connections into the queue; these take every place
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for s in [*fillers, server]:
            s.close()


@pytest.fixture
def online(monkeypatch):
    """``endpoint -> None``: huggingface_hub in this process looks online at ``endpoint``, with no proxy."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def at(endpoint: str) -> None:
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)

    return at


def test_probe_finds_a_listening_hub(online):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        online(f"http://127.0.0.1:{server.getsockname()[1]}")
        assert hub_unreachable() is None


def test_probe_gives_up_on_a_silent_hub(online):
    with silent_endpoint() as endpoint:
        online(endpoint)
        reason = hub_unreachable()
    assert reason == f"no connection to 127.0.0.1:{endpoint.rsplit(':', 1)[1]} within {HUB_CONNECT_TIMEOUT:g} s"


def test_silent_hub_fails_fast_and_names_the_bundled_model(tmp_path, minilm_dir):
    """The whole command, as a user runs it: exit 2 with one line, long before the kernel's connect timeout."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES and k != "HF_HUB_OFFLINE"}
    with silent_endpoint() as endpoint:
        res = subprocess.run(
            [sys.executable, "-m", "gte_jax.cli", "embed", "--model", "org/model", "--text", "x"],
            capture_output=True,
            text=True,
            env={**env, "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path)},
            timeout=60,  # without the probe: 2+ minutes (the kernel's SYN retries), here about 1.5 s plus start-up
        )
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("gte-jax embed: error: Could not load model 'org/model'")
    assert f"(no connection to {endpoint.removeprefix('http://')} within" in line and "not in the cache" in line
    assert minilm_dir in line and "gte-jax demo --print-model-dir" in line


def test_cached_model_loads_when_the_hub_is_silent(online, tmp_path, minilm_dir):
    cache = tmp_path / "hub"
    repo = cache / "models--org--minilm"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name in os.listdir(minilm_dir):
        os.symlink(os.path.join(minilm_dir, name), snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    with silent_endpoint() as endpoint:
        online(endpoint)
        assert resolve_model_dir("org/minilm", cache_dir=str(cache)) == str(snapshot)
        with pytest.raises(ModelNotFoundError, match="within .* s; it is not in the cache"):
            resolve_model_dir("org/other", cache_dir=str(cache))
