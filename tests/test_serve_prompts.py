"""The server and encode() take one path from texts to token ids: equal vectors on a checkpoint whose Pooling
leaves the prompt out (include_prompt: false), with the prompt named in the request or by default."""

from __future__ import annotations

import json
import os

import httpx
import numpy as np
import pytest
from serve_server import ServeProcess

from gte_jax import GTEEncoder

pytestmark = pytest.mark.slow  # a server in a subprocess

TEXTS = ["A cat.", "A man is playing a guitar.", "a longer text about the weather in the mountains " * 20]


@pytest.fixture(scope="module")
def instructor_style(minilm_with_prompts):
    path = minilm_with_prompts({"query": "Represent this query for retrieval: ", "passage": "passage: "})
    pooling = os.path.join(path, "1_Pooling")
    os.remove(pooling) if os.path.islink(pooling) else None
    os.makedirs(pooling, exist_ok=True)
    with open(os.path.join(pooling, "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": 384, "pooling_mode": "mean", "include_prompt": False}, f)
    return path


def test_server_equals_encode_with_the_prompt_left_out_of_pooling(instructor_style, tmp_path):
    from sentence_transformers import SentenceTransformer

    enc = GTEEncoder.from_pretrained(instructor_style)
    assert not enc.include_prompt
    expected = enc.encode(TEXTS, prompt_name="query")
    reference = SentenceTransformer(instructor_style, device="cpu").encode(TEXTS, prompt_name="query")
    assert np.abs(expected - reference).max() <= 1e-5
    server = ServeProcess(
        instructor_style, "--no-warmup", log_dir=str(tmp_path), cache_dir=str(tmp_path / "cache")
    ).wait_ready()
    try:
        got = httpx.post(f"{server.url}/embed", json={"inputs": TEXTS, "prompt_name": "query"}, timeout=120).json()
    finally:
        server.stop()
    assert np.abs(np.array(got) - expected).max() <= 1e-5
