"""Reranking over HTTP: TEI's /rerank and /predict and the Cohere/Jina /v1/rerank of a real `gte-jax serve`,
with real clients, against GTEReranker.predict (itself equal to sentence-transformers' CrossEncoder)."""

from __future__ import annotations

import concurrent.futures

import httpx
import numpy as np
import pytest
from serve_server import ServeProcess

from gte_jax import GTEReranker

pytestmark = pytest.mark.slow  # servers in subprocesses

QUERY = "what is a tensor?"
DOCS = [
    "A tensor is a multi-dimensional array of numbers.",
    "Paris is the capital of France.",
    "Tensors generalise vectors and matrices to more dimensions.",
    "",
    "sourdough bread " * 300,  # past the model's limit: truncated
]


@pytest.fixture(scope="module")
def servers(tmp_path_factory, minilm_dir, cross_encoder_dir):
    dirs = {"log_dir": str(tmp_path_factory.mktemp("logs")), "cache_dir": str(tmp_path_factory.mktemp("cache"))}
    both = ServeProcess(minilm_dir, "--reranker", cross_encoder_dir, "--no-warmup", **dirs)
    alone = ServeProcess(cross_encoder_dir, "--no-warmup", **dirs)
    try:
        yield both.wait_ready(), alone.wait_ready()
    finally:
        both.stop()
        alone.stop()


@pytest.fixture(scope="module")
def reference(cross_encoder_dir):
    reranker = GTEReranker.from_pretrained(cross_encoder_dir)
    return reranker, reranker.predict([(QUERY, d) for d in DOCS])


def test_tei_rerank_equals_predict(servers, reference):
    reranker, scores = reference
    for server in servers:
        got = httpx.post(f"{server.url}/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True}).json()
        assert [r["index"] for r in got] == list(np.argsort(-scores, kind="stable"))
        assert np.abs(np.array([r["score"] for r in got]) - np.sort(scores)[::-1]).max() <= 1e-5
        assert [r["text"] for r in got] == [DOCS[r["index"]] for r in got]
    raw = httpx.post(f"{servers[0].url}/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    logits = reranker.predict([(QUERY, d) for d in DOCS], activation="identity")
    assert np.abs(np.array([r["score"] for r in sorted(raw, key=lambda r: r["index"])]) - logits).max() <= 1e-5


def test_cohere_rerank_with_the_openai_style_client_shape(servers, reference):
    _, scores = reference
    body = {"model": "ce", "query": QUERY, "documents": DOCS, "top_n": 2, "return_documents": True}
    got = httpx.post(f"{servers[0].url}/v1/rerank", json=body).json()
    best = list(np.argsort(-scores, kind="stable")[:2])
    assert [r["index"] for r in got["results"]] == best
    assert np.abs(np.array([r["relevance_score"] for r in got["results"]]) - scores[best]).max() <= 1e-5
    assert got["results"][0]["document"] == {"text": DOCS[best[0]]}
    assert got["model"] == "ce" and got["usage"]["total_tokens"] > 0


def test_predict_gives_label_scores_per_pair(servers, reference):
    _, scores = reference
    got = httpx.post(f"{servers[1].url}/predict", json={"inputs": [[QUERY, d] for d in DOCS]}).json()
    assert np.abs(np.array([row[0]["score"] for row in got]) - scores).max() <= 1e-5
    assert got[0][0]["label"] == "LABEL_0"


def test_concurrent_requests_get_their_own_scores(servers, cross_encoder_dir):
    reranker = GTEReranker.from_pretrained(cross_encoder_dir)
    queries = [f"query number {i} about {w}" for i, w in enumerate(["tensors", "bread", "Paris", "plants"] * 4)]

    def ask(q: str) -> list[float]:
        got = httpx.post(f"{servers[0].url}/rerank", json={"query": q, "texts": DOCS}, timeout=120).json()
        return [r["score"] for r in sorted(got, key=lambda r: r["index"])]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, queries))
    for q, got in zip(queries, answers, strict=True):
        assert np.abs(np.array(got) - reranker.predict([(q, d) for d in DOCS])).max() <= 1e-5


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/rerank", {"texts": ["a"]}, "query"),
        ("/rerank", {"query": "q", "texts": "a"}, "texts"),
        ("/rerank", {"query": "q", "texts": ["a", 3]}, "texts[1]"),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
        ("/v1/rerank", {"query": "q"}, "documents"),
        ("/predict", {"inputs": [["a"]]}, "inputs[0]"),
        ("/rerank", {"query": "q", "texts": ["a"], "raw_scores": "yes"}, "raw_scores"),
        ("/rerank", {"query": "q", "texts": ["a", DOCS[4]], "truncate": False}, "texts[1]"),  # 413: past the limit
    ],
)
def test_bad_requests_name_the_field(servers, path, body, field):
    res = httpx.post(f"{servers[0].url}{path}", json=body)
    assert 400 <= res.status_code < 500, res.text
    assert f"`{field}" in res.text


def test_a_reranker_alone_serves_no_embeddings(servers):
    res = httpx.post(f"{servers[1].url}/v1/embeddings", json={"input": "x"})
    assert res.status_code == 404 and "/v1/rerank" in res.text
    info = httpx.get(f"{servers[1].url}/info").json()
    assert "reranker" in info["model_type"] and "embedding" not in info["model_type"]
