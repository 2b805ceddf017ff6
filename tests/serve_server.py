"""A real ``gte-jax serve`` subprocess for the server tests: a free loopback port, a bounded start, a clean stop."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from processes import free_port


def serve_command() -> list[str]:
    """``gte-jax`` as installed, else the same CLI through this interpreter."""
    exe = shutil.which("gte-jax")
    return [exe] if exe else [sys.executable, "-m", "gte_jax.cli"]


class ServeProcess:
    """``gte-jax serve --model MODEL --host 127.0.0.1 --port <free> ARGS``, its output in ``log_path``.

    Args:
        model: the model directory.
        args: more ``gte-jax serve`` options.
        log_dir: where the server's stdout and stderr go (a file, never a pipe that could fill up).
        cache_dir: a JAX compilation cache shared by the servers of one test session, so that a
            program one server compiled loads from disk in the next.
    """

    def __init__(self, model: str, *args: str, log_dir: str, cache_dir: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(log_dir, f"serve-{self.port}.log")
        env = {
            **os.environ,
            "JAX_COMPILATION_CACHE_DIR": cache_dir,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # on a GPU, leave memory to the test process too
        }
        cmd = [*serve_command(), "serve", "--model", model, "--host", "127.0.0.1", "--port", str(self.port), *args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_ready(self, timeout: float = 120.0) -> ServeProcess:
        """Returns once ``/health`` answers 200.

        Raises:
            RuntimeError: the process exited, or ``timeout`` seconds passed (with the server's log).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gte-jax serve exited with code {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gte-jax serve did not answer /health within {timeout:.0f} s:\n{self.log()[-4000:]}")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """``/metrics`` as ``{(sample name, sorted labels): value}``."""
        text = httpx.get(f"{self.url}/metrics", timeout=10.0).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        """One sample of ``/metrics`` (0 if it has not been created yet)."""
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def wait_for(self, condition, timeout: float = 30.0, what: str = "a condition") -> None:
        """Polls ``condition(metrics_dict)`` until it holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition(self.metrics()):
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}:\n{self.log()[-3000:]}")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit code."""
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)
