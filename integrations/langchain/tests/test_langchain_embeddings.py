"""GTEEmbeddings beyond the standard suites: values, sharing, async, and bad input."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from gte_jax import ModelNotFoundError
from pydantic import ValidationError

from langchain_gte_jax import GTEEmbeddings

TEXTS = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today."]


@pytest.fixture(scope="module")
def embeddings(minilm_dir) -> GTEEmbeddings:
    return GTEEmbeddings(model_name=minilm_dir)


def test_defaults():
    fields = GTEEmbeddings.model_fields
    assert fields["model_name"].default == "thenlper/gte-small"
    assert fields["dtype"].default == "float32"
    assert fields["max_length"].default is None
    assert fields["normalize"].default is True
    assert fields["show_progress"].default is False


def test_vectors_match_sentence_transformers(embeddings, sentence_transformer):
    ours = np.array(embeddings.embed_documents(TEXTS))
    ref = sentence_transformer.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert all(type(x) is float for x in embeddings.embed_documents(TEXTS)[0])


def test_query_is_embedded_like_a_document(embeddings):
    np.testing.assert_allclose(embeddings.embed_query(TEXTS[0]), embeddings.embed_documents(TEXTS)[0], atol=1e-6)


def test_normalize_false_gives_raw_mean_pooled_vectors(minilm_dir, embeddings):
    raw = np.array(GTEEmbeddings(model_name=minilm_dir, normalize=False).embed_documents(TEXTS))
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    assert not np.allclose(norms, 1.0)
    np.testing.assert_allclose(raw / norms, embeddings.embed_documents(TEXTS), atol=1e-6)


def test_instances_with_the_same_settings_share_one_encoder(minilm_dir, embeddings):
    # batch_size, normalize and show_progress are per call, so they do not need an encoder of their own.
    same = GTEEmbeddings(model_name=minilm_dir, batch_size=8, normalize=False, show_progress=True)
    assert same.encoder is embeddings.encoder
    assert GTEEmbeddings(model_name=minilm_dir, max_length=64).encoder is not embeddings.encoder


def test_async_matches_sync(embeddings):
    async def both():
        return await embeddings.aembed_documents(TEXTS), await embeddings.aembed_query(TEXTS[1])

    docs, query = asyncio.run(both())
    np.testing.assert_allclose(docs, embeddings.embed_documents(TEXTS), atol=1e-6)
    np.testing.assert_allclose(query, embeddings.embed_query(TEXTS[1]), atol=1e-6)


def test_async_leaves_the_event_loop_free(embeddings, loop_ticks_during):
    texts = TEXTS * 43  # a few device steps of one shape
    embeddings.embed_documents(texts)  # compile first, so that the awaited call is all model work
    assert loop_ticks_during(lambda: embeddings.aembed_documents(texts)) >= 5


def test_empty_list_gives_empty_list(embeddings):
    assert embeddings.embed_documents([]) == []
    assert asyncio.run(embeddings.aembed_documents([])) == []


def test_non_string_item_is_a_type_error_naming_it(embeddings):
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        embeddings.embed_documents(["fine", 3])
    with pytest.raises(TypeError, match=r"texts\[0\] is NoneType"):
        asyncio.run(embeddings.aembed_documents([None]))


def test_single_string_to_embed_documents_is_a_type_error(embeddings):
    with pytest.raises(TypeError, match="embed_query"):
        embeddings.embed_documents("one text")


def test_non_string_query_is_a_type_error(embeddings):
    with pytest.raises(TypeError, match="embed_query takes a str, not list"):
        embeddings.embed_query(["a list"])


@pytest.mark.parametrize("name", ["/nonexistent/dir", "no-such-org/no-such-model"])
def test_missing_model_fails_at_construction(name):
    with pytest.raises(ModelNotFoundError, match="no-such-model|nonexistent"):
        GTEEmbeddings(model_name=name)


def test_unknown_argument_is_rejected(minilm_dir):
    with pytest.raises(ValidationError, match="model_kwargs"):
        GTEEmbeddings(model_name=minilm_dir, model_kwargs={"device": "cpu"})


def test_changing_an_encoder_setting_loads_that_encoder(minilm_dir):
    embeddings = GTEEmbeddings(model_name=minilm_dir)
    embeddings.max_length = 32
    assert embeddings.encoder.max_length == 32
    expected = GTEEmbeddings(model_name=minilm_dir, max_length=32).embed_query(TEXTS[0])
    np.testing.assert_allclose(embeddings.embed_query(TEXTS[0]), expected)
    with pytest.raises(ModelNotFoundError):
        embeddings.model_name = "/nonexistent/dir"
    assert embeddings.model_name == minilm_dir and embeddings.encoder.max_length == 32  # unchanged


@pytest.fixture(scope="module")
def prompt_model(minilm_with_prompts) -> str:
    """MiniLM with "query" and "document" prompts (as e5 or bge have) in its config_sentence_transformers.json."""
    return minilm_with_prompts({"query": "query: ", "document": "passage: "})


def test_queries_and_documents_get_the_checkpoint_prompts(prompt_model):
    from sentence_transformers import SentenceTransformer

    embeddings = GTEEmbeddings(model_name=prompt_model)
    reference = SentenceTransformer(prompt_model, device="cpu")
    query = reference.encode_query(TEXTS[0], normalize_embeddings=True)
    documents = reference.encode_document(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(embeddings.embed_query(TEXTS[0]), query, atol=1e-5)
    np.testing.assert_allclose(embeddings.embed_documents(TEXTS), documents, atol=1e-5)
    assert not np.allclose(embeddings.embed_query(TEXTS[0]), embeddings.embed_documents(TEXTS[:1])[0], atol=1e-3)


def test_prompt_fields(minilm_dir, prompt_model, embeddings):
    assert GTEEmbeddings.model_fields["query_prompt"].default is None
    assert GTEEmbeddings.model_fields["document_prompt"].default is None
    # for a checkpoint without prompts: the fields supply them, verbatim
    prompted = GTEEmbeddings(model_name=minilm_dir, query_prompt="query: ", document_prompt="passage: ")
    encoder = prompted.encoder
    np.testing.assert_allclose(prompted.embed_query(TEXTS[0]), encoder.encode(TEXTS[0], prompt="query: "), atol=1e-6)
    np.testing.assert_allclose(prompted.embed_documents(TEXTS), encoder.encode(TEXTS, prompt="passage: "), atol=1e-6)
    # "" turns a checkpoint's prompt off
    plain = GTEEmbeddings(model_name=prompt_model, query_prompt="", document_prompt="")
    np.testing.assert_allclose(plain.embed_query(TEXTS[0]), embeddings.embed_query(TEXTS[0]), atol=1e-6)
    np.testing.assert_allclose(plain.embed_documents(TEXTS), embeddings.embed_documents(TEXTS), atol=1e-6)
