"""Helpers for tests that start other processes: a free port, a CPU environment with N devices."""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_env(devices: int = 1, **extra: str) -> dict[str, str]:
    """This environment, with JAX on the CPU split into ``devices`` devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return {**env, **extra}
