"""Fixtures for the integration packages' tests: an STS-B paraphrase-retrieval task and its reference score, and
real ``gte-jax serve`` servers."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

# The core tests' helpers (checkpoint files, the serve subprocess), reused rather than copied; appended, so that
# nothing of the integrations' own is shadowed.
TESTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
if TESTS_DIR not in sys.path:
    sys.path.append(TESTS_DIR)

PARAPHRASE_SCORE = 4.0  # STS-B gold scores run 0-5; 4 and above are near-paraphrases


@pytest.fixture(scope="session")
def sts_paraphrases(sts_test) -> tuple[list[str], list[str], list[int]]:
    """``(queries, corpus, gold)``: retrieve each near-paraphrase's sentence2 given its sentence1.

    ``queries`` are the sentence1s of STS-B test pairs scored >= 4.0, ``corpus`` every distinct
    sentence2 of the test set (1,300-odd distractors), ``gold[i]`` the corpus index of query i's
    own sentence2.
    """
    s1, s2, scores = sts_test
    corpus = list(dict.fromkeys(s2))  # distinct, in order: duplicate texts would make ties
    index = {text: i for i, text in enumerate(corpus)}
    pairs = [(a, index[b]) for a, b, score in zip(s1, s2, scores, strict=True) if score >= PARAPHRASE_SCORE]
    return [a for a, _ in pairs], corpus, [i for _, i in pairs]


@pytest.fixture(scope="session")
def sentence_transformer(minilm_dir):
    """The reference implementation: sentence-transformers (PyTorch) on the same MiniLM checkpoint."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_dir, device="cpu")


@pytest.fixture(scope="session")
def reference_top1_hits(sentence_transformer, sts_paraphrases) -> int:
    """How many queries sentence-transformers' own MiniLM vectors answer right (top-1 by cosine)."""
    import torch

    queries, corpus, gold = sts_paraphrases
    threads = torch.get_num_threads()
    # One thread: next to JAX's thread pool (and parallel test runs) torch's OpenMP barriers stall,
    # which made this fixture 4x slower on a 2-core machine.
    torch.set_num_threads(1)
    try:
        q = sentence_transformer.encode(queries, normalize_embeddings=True, convert_to_numpy=True)
        c = sentence_transformer.encode(corpus, normalize_embeddings=True, convert_to_numpy=True)
    finally:
        torch.set_num_threads(threads)
    return int(np.sum(np.argmax(q @ c.T, axis=1) == np.asarray(gold)))


@pytest.fixture
def loop_ticks_during():
    """``f(make_coroutine) -> ticks``: how often a 1 ms ticker ran on the event loop while the coroutine ran.

    Work done on the loop's own thread stops the ticker for the whole call; work handed to a thread does not.
    """
    import asyncio

    def measure(make_coroutine) -> int:
        async def run() -> int:
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.001)
                    ticks += 1

            task = asyncio.create_task(ticker())
            await asyncio.sleep(0)  # let the ticker start
            start = ticks
            await make_coroutine()
            task.cancel()
            return ticks - start

        return asyncio.run(run())

    return measure


def serve_has_reranker() -> bool:
    """Whether ``gte-jax serve`` has the ``--reranker`` option (the /v1/rerank routes) in this checkout."""
    from serve_server import serve_command

    done = subprocess.run([*serve_command(), "serve", "--help"], capture_output=True, text=True, timeout=120)
    return "--reranker" in done.stdout


@pytest.fixture(scope="session")
def serve_logs(tmp_path_factory) -> dict[str, str]:
    return {
        "log_dir": str(tmp_path_factory.mktemp("serve-logs")),
        "cache_dir": str(tmp_path_factory.mktemp("jax-cache")),
    }


@pytest.fixture(scope="session")
def rerank_server(minilm_dir, cross_encoder_dir, serve_logs):
    """A real ``gte-jax serve --reranker cross_encoder_dir`` (embedding model: MiniLM) and its base URL."""
    if not serve_has_reranker():
        pytest.skip("gte-jax serve has no --reranker option yet (the /v1/rerank route is not in this checkout)")
    from serve_server import ServeProcess

    server = ServeProcess(minilm_dir, "--reranker", cross_encoder_dir, "--no-warmup", **serve_logs)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def embedding_server(minilm_dir, serve_logs):
    """A real ``gte-jax serve`` with no reranker: its /v1/rerank is not there."""
    from serve_server import ServeProcess

    server = ServeProcess(minilm_dir, "--no-warmup", **serve_logs)
    try:
        yield server.wait_ready()
    finally:
        server.stop()
