"""Fixtures for the core tests: random-init GTE-shaped checkpoints and shared encoders."""

from __future__ import annotations

import pytest
from checkpoints import SHAPES, torch_bert, write_checkpoint

from gte_jax import GTEEncoder


@pytest.fixture(scope="session")
def gte_checkpoints(tmp_path_factory, minilm_dir):
    """``(shape, fmt) -> directory``, written once per session on first use."""
    made: dict[tuple[str, str], str] = {}
    models: dict[str, object] = {}

    def get(shape: str, fmt: str) -> str:
        if (shape, fmt) not in made:
            if shape not in models:
                models.clear()  # hold at most one torch model (gte-large is 1.3 GB)
                models[shape] = torch_bert(SHAPES[shape])
            out = tmp_path_factory.mktemp(f"{shape}-{fmt}")
            made[shape, fmt] = write_checkpoint(models[shape], str(out), minilm_dir, fmt)
        return made[shape, fmt]

    return get


@pytest.fixture(scope="session")
def minilm(minilm_dir) -> GTEEncoder:
    """One encoder on the real all-MiniLM-L6-v2 weights, shared across tests (compiles once per shape)."""
    return GTEEncoder.from_pretrained(minilm_dir)
