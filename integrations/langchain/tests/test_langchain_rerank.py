"""GTERerank: reranking an InMemoryVectorStore's top-k, in process and against a real gte-jax serve."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from gte_jax import GTEReranker, ModelNotFoundError
from gte_jax.rerank_backends import RerankServerError
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.vectorstores import InMemoryVectorStore
from pydantic import ValidationError

from langchain_gte_jax import GTEEmbeddings, GTERerank

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
def retrieved(minilm_dir) -> list[Document]:
    """The vector store's top K for QUERY, each with its corpus position in the metadata."""
    store = InMemoryVectorStore.from_texts(
        CORPUS, GTEEmbeddings(model_name=minilm_dir), metadatas=[{"row": i} for i in range(len(CORPUS))]
    )
    return store.similarity_search(QUERY, k=K)


@pytest.fixture(scope="module")
def expected(cross_encoder_dir, retrieved) -> np.ndarray:
    """GTEReranker.predict's scores of (QUERY, document) for the retrieved documents, checked against PyTorch."""
    from sentence_transformers import CrossEncoder

    pairs = [(QUERY, d.page_content) for d in retrieved]
    scores = GTEReranker.from_pretrained(cross_encoder_dir).predict(pairs)
    reference = CrossEncoder(cross_encoder_dir, device="cpu").predict(pairs)
    np.testing.assert_allclose(scores, reference, atol=1e-5)
    return scores


def test_reranks_the_vector_stores_top_k_by_the_cross_encoder(cross_encoder_dir, retrieved, expected):
    before = [(d.page_content, dict(d.metadata)) for d in retrieved]
    reranker = GTERerank(model_name=cross_encoder_dir, top_n=3)
    assert isinstance(reranker, BaseDocumentCompressor)
    result = reranker.compress_documents(retrieved, QUERY)
    order = np.argsort(-expected, kind="stable")
    assert [d.page_content for d in result] == [retrieved[i].page_content for i in order[:3]]
    assert list(order[:3]) != [0, 1, 2]  # the cross-encoder disagrees with the embeddings: a real reordering
    np.testing.assert_allclose([d.metadata["relevance_score"] for d in result], expected[order[:3]], atol=1e-6)
    assert all(type(d.metadata["relevance_score"]) is float for d in result)
    assert [d.metadata["row"] for d in result] == [retrieved[i].metadata["row"] for i in order[:3]]  # kept
    assert [(d.page_content, d.metadata) for d in retrieved] == before  # the caller's documents are unchanged


def test_top_n_none_returns_all_and_async_equals_sync(cross_encoder_dir, retrieved, expected):
    reranker = GTERerank(model_name=cross_encoder_dir, top_n=None)
    result = reranker.compress_documents(retrieved, QUERY)
    assert [d.page_content for d in result] == [retrieved[i].page_content for i in np.argsort(-expected, kind="stable")]
    again = asyncio.run(reranker.acompress_documents(retrieved, QUERY))
    assert [(d.page_content, d.metadata) for d in again] == [(d.page_content, d.metadata) for d in result]
    assert reranker.compress_documents([], QUERY) == []


def test_objects_with_the_same_settings_share_one_reranker(cross_encoder_dir):
    first = GTERerank(model_name=cross_encoder_dir, top_n=2)
    assert GTERerank(model_name=cross_encoder_dir, top_n=5, batch_size=4).reranker is first.reranker
    assert GTERerank(model_name=cross_encoder_dir, max_length=32).reranker is not first.reranker
    assert GTERerank(model_name=cross_encoder_dir, max_length=32).reranker.max_length == 32


def test_changing_the_model_loads_it_first(cross_encoder_dir):
    reranker = GTERerank(model_name=cross_encoder_dir)
    with pytest.raises(ModelNotFoundError):
        reranker.model_name = "/nonexistent/dir"
    assert reranker.model_name == cross_encoder_dir and reranker.reranker is not None  # unchanged
    reranker.max_length = 32
    assert reranker.reranker.max_length == 32


def test_bad_settings_and_input_are_named(cross_encoder_dir, retrieved):
    with pytest.raises(ValidationError, match="top_k"):
        GTERerank(model_name=cross_encoder_dir, top_k=3)  # LangChain's name is top_n
    with pytest.raises(ValidationError, match="top_n"):
        GTERerank(model_name=cross_encoder_dir, top_n=0)
    with pytest.raises(ModelNotFoundError, match="nonexistent"):
        GTERerank(model_name="/nonexistent/dir")
    with pytest.raises(ValueError, match="dtype apply in process only"):
        GTERerank(base_url="http://127.0.0.1:1", dtype="bfloat16")
    with pytest.raises(TypeError, match="query must be a string"):
        GTERerank(model_name=cross_encoder_dir).compress_documents(retrieved, ["not", "a", "str"])


def test_a_model_with_several_labels_is_refused(tmp_path, minilm_dir):
    from transformers import BertConfig, BertForSequenceClassification

    from checkpoints import copy_tokenizer

    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, num_labels=3)
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    copy_tokenizer(minilm_dir, str(tmp_path))
    with pytest.raises(ValueError, match="gives 3 labels"):
        GTERerank(model_name=str(tmp_path))


def test_an_unreachable_server_is_a_clear_error(retrieved):
    from processes import free_port

    url = f"http://127.0.0.1:{free_port()}"
    reranker = GTERerank(base_url=url, timeout=10)
    with pytest.raises(RerankServerError, match=f"cannot reach {url}/v1/rerank.*--reranker"):
        reranker.compress_documents(retrieved, QUERY)
    with pytest.raises(RerankServerError, match="cannot reach"):
        asyncio.run(reranker.acompress_documents(retrieved, QUERY))


@pytest.mark.slow
def test_a_server_without_a_reranker_is_a_clear_error(embedding_server, retrieved):
    reranker = GTERerank(base_url=embedding_server.url)
    with pytest.raises(RerankServerError, match=rf"{embedding_server.url}/v1/rerank answered 4\d\d") as info:
        reranker.compress_documents(retrieved, QUERY)
    if "answered 404" in str(info.value):  # today: no such route; the hint says what to start the server with
        assert "--reranker" in str(info.value)


@pytest.mark.slow
def test_against_a_real_server_equals_in_process(rerank_server, cross_encoder_dir, retrieved, expected):
    remote = GTERerank(base_url=rerank_server.url, top_n=3)
    result = remote.compress_documents(retrieved, QUERY)
    order = np.argsort(-expected, kind="stable")[:3]
    assert [d.page_content for d in result] == [retrieved[i].page_content for i in order]
    np.testing.assert_allclose([d.metadata["relevance_score"] for d in result], expected[order], atol=1e-5)
    again = asyncio.run(GTERerank(base_url=f"{rerank_server.url}/v1", top_n=3).acompress_documents(retrieved, QUERY))
    assert [d.page_content for d in again] == [d.page_content for d in result]
