"""Fixtures for the core tests: random-init GTE-shaped checkpoints and shared encoders."""

from __future__ import annotations

import pytest

from gte_jax import GTEEncoder

from checkpoints import SHAPES, TINY, torch_bert, write_checkpoint


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


@pytest.fixture(scope="session")
def tiny_torch():
    """A 2-layer, 32-wide random BERT: for tests about mechanics, not numerics at scale."""
    return torch_bert(TINY, seed=1)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tiny_torch, minilm_dir) -> str:
    return write_checkpoint(tiny_torch, str(tmp_path_factory.mktemp("tiny")), minilm_dir)
