"""GTEJaxRerank: reranking a VectorStoreIndex retriever's top-k, in process and against a real gte-jax serve."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from gte_jax import GTEReranker, ModelNotFoundError
from llama_index.core import VectorStoreIndex
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from pydantic import ValidationError

from llama_index.postprocessor.gte_jax_rerank import GTEJaxRerank

CORPUS = [
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "A man is playing the flute.",
    "The stock market fell sharply today.",
    "Shares dropped steeply this afternoon.",
    "A cat sleeps on the sofa.",
    "Kittens nap on couches.",
    "JAX compiles Python functions with XLA.",
    "Rain is expected over the weekend.",
    "A woman is playing the violin.",
    "The recipe needs two eggs and some flour.",
    "He scored the winning goal in extra time.",
]
QUERY = "What instrument is the man playing?"
K = 6


@pytest.fixture(scope="module")
def retrieved(minilm_dir) -> list[NodeWithScore]:
    """The index retriever's top K for QUERY (GTEEmbedding on MiniLM)."""
    from llama_index.embeddings.gte_jax import GTEEmbedding

    # Nodes rather than Documents: no text splitter, so one node per sentence and no tokenizer download.
    nodes = [TextNode(text=text, id_=str(i)) for i, text in enumerate(CORPUS)]
    index = VectorStoreIndex(nodes, embed_model=GTEEmbedding(model_name=minilm_dir))
    return index.as_retriever(similarity_top_k=K).retrieve(QUERY)


@pytest.fixture(scope="module")
def expected(cross_encoder_dir, retrieved) -> np.ndarray:
    """GTEReranker.predict's scores of (QUERY, text) for the retrieved nodes, checked against PyTorch."""
    from sentence_transformers import CrossEncoder

    pairs = [(QUERY, n.node.get_content()) for n in retrieved]
    scores = GTEReranker.from_pretrained(cross_encoder_dir).predict(pairs)
    reference = CrossEncoder(cross_encoder_dir, device="cpu").predict(pairs)
    np.testing.assert_allclose(scores, reference, atol=1e-5)
    return scores


def ids(nodes: list[NodeWithScore]) -> list[str]:
    return [n.node.node_id for n in nodes]


def test_reranks_the_retrievers_top_k_by_the_cross_encoder(cross_encoder_dir, retrieved, expected):
    before = [(n.node.node_id, n.score, dict(n.node.metadata)) for n in retrieved]
    reranker = GTEJaxRerank(model=cross_encoder_dir, top_n=3)
    assert isinstance(reranker, BaseNodePostprocessor)
    result = reranker.postprocess_nodes(retrieved, query_str=QUERY)
    order = np.argsort(-expected, kind="stable")
    assert ids(result) == [retrieved[i].node.node_id for i in order[:3]]
    assert list(order[:3]) != [0, 1, 2]  # the cross-encoder disagrees with the embeddings: a real reordering
    np.testing.assert_allclose([n.score for n in result], expected[order[:3]], atol=1e-6)
    assert [(n.node.node_id, n.score, n.node.metadata) for n in retrieved] == before  # the caller's are unchanged


def test_all_nodes_the_retrieval_score_and_async(cross_encoder_dir, retrieved, expected):
    reranker = GTEJaxRerank(model=cross_encoder_dir, top_n=None, keep_retrieval_score=True)
    result = reranker.postprocess_nodes(retrieved, QueryBundle(QUERY))
    order = np.argsort(-expected, kind="stable")
    assert ids(result) == [retrieved[i].node.node_id for i in order]
    assert [n.node.metadata["retrieval_score"] for n in result] == [retrieved[i].score for i in order]
    assert all("retrieval_score" not in n.node.metadata for n in retrieved)
    again = asyncio.run(reranker.apostprocess_nodes(retrieved, query_str=QUERY))
    assert [(n.node.node_id, n.score) for n in again] == [(n.node.node_id, n.score) for n in result]
    assert reranker.postprocess_nodes([], query_str=QUERY) == []


def test_objects_with_the_same_settings_share_one_reranker(cross_encoder_dir):
    first = GTEJaxRerank(model=cross_encoder_dir)
    assert GTEJaxRerank(model=cross_encoder_dir, top_n=5, batch_size=4).reranker is first.reranker
    assert GTEJaxRerank(model=cross_encoder_dir, max_length=32).reranker is not first.reranker


def test_fields_and_bad_input(cross_encoder_dir, retrieved):
    fields = GTEJaxRerank.model_fields
    assert fields["top_n"].default == 2 and fields["base_url"].default is None
    assert all(fields[name].description for name in fields if name != "callback_manager")
    assert GTEJaxRerank.class_name() == "GTEJaxRerank"
    assert "api_key" not in GTEJaxRerank(model=cross_encoder_dir, api_key="secret").to_dict()
    with pytest.raises(ValidationError, match="top_k"):
        GTEJaxRerank(model=cross_encoder_dir, top_k=3)
    with pytest.raises(ModelNotFoundError, match="nonexistent"):
        GTEJaxRerank(model="/nonexistent/dir")
    with pytest.raises(ValueError, match="max_length apply in process only"):
        GTEJaxRerank(base_url="http://127.0.0.1:1", max_length=64)
    with pytest.raises(ValueError, match="needs the query"):
        GTEJaxRerank(model=cross_encoder_dir).postprocess_nodes(retrieved)


@pytest.mark.slow
def test_against_a_real_server_equals_in_process(rerank_server, retrieved, expected):
    remote = GTEJaxRerank(base_url=rerank_server.url, top_n=3)
    result = remote.postprocess_nodes(retrieved, query_str=QUERY)
    order = np.argsort(-expected, kind="stable")[:3]
    assert ids(result) == [retrieved[i].node.node_id for i in order]
    np.testing.assert_allclose([n.score for n in result], expected[order], atol=1e-5)
    again = asyncio.run(remote.apostprocess_nodes(retrieved, query_str=QUERY))
    assert ids(again) == ids(result)
