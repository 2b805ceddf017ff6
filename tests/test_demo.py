"""The README's main job: `gte-jax demo` works offline and says which model it used."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_and_finds_the_nearest_passage():
    res = subprocess.run([sys.executable, "-m", "gte_jax.cli", "demo"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("model: ")
    blocks = res.stdout.split("query:")
    assert "what is a tensor?" in blocks[1] and "A tensor is a multi-dimensional array" in blocks[1]
    assert "Photosynthesis" in blocks[2] and "Eiffel Tower" in blocks[3]
