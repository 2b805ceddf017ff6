"""A fixed contrastive batch for the train-step tests: STS-B sentences as anchor, positive and hard negative."""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from gte_jax.train.data import Examples, tokenize

_ROOT_CONFTEST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conftest.py")


def read_sts(split: str):
    """The root conftest's STS-B reader (loaded by path: tests/conftest.py shadows the module name)."""
    spec = importlib.util.spec_from_file_location("_root_conftest", _ROOT_CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.read_sts(split)


LR = 0.1  # SGD: the parameters after a step differ exactly as much as the gradients do
ROWS = 16


def train_examples(rows: int = ROWS) -> Examples:
    """``rows`` (anchor, positive, negative) triplets: an STS-B pair and another pair's sentence."""
    s1, s2, scores = read_sts("dev")
    negatives = s2[rows : 2 * rows]
    return Examples("sts-dev", ("anchor", "positive", "negative"), (s1[:rows], s2[:rows], negatives), None)


def train_batch(tokenizer, rows: int = ROWS) -> dict[str, np.ndarray]:
    """The batch dict of ``train_examples`` in file order."""
    data = tokenize(train_examples(rows), tokenizer)
    return data.batch(np.arange(rows))
