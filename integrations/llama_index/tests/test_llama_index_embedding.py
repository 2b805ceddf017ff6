"""GTEEmbedding's contract with LlamaIndex: sync, async, batching, instructions, and bad input."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from gte_jax import ModelNotFoundError
from pydantic import ValidationError

from llama_index.embeddings.gte_jax import GTEEmbedding

TEXTS = [
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "The stock market fell sharply today.",
    "Shares dropped steeply this afternoon.",
    "A cat sleeps on the sofa.",
    "Kittens nap on couches.",
    "JAX compiles Python functions with XLA.",
    "Rain is expected over the weekend.",
    "The recipe needs two eggs and some flour.",
    "He scored the winning goal in extra time.",
]
INSTRUCTION = "query:"


@pytest.fixture(scope="module")
def embed_model(minilm_dir) -> GTEEmbedding:
    # A batch size below len(TEXTS), so that batch calls are split into several model calls.
    return GTEEmbedding(model_name=minilm_dir, embed_batch_size=4)


def test_fields_and_defaults():
    fields = GTEEmbedding.model_fields
    assert fields["model_name"].default == "thenlper/gte-small"
    assert fields["query_instruction"].default is None and fields["text_instruction"].default is None
    assert fields["normalize"].default is True and fields["dtype"].default == "float32"
    for name in ("model_name", "embed_batch_size", "dtype", "max_length", "normalize", "query_instruction"):
        assert fields[name].description, name
    assert GTEEmbedding.class_name() == "GTEEmbedding"


def test_text_vectors_match_sentence_transformers(embed_model, sentence_transformer):
    ours = np.array(embed_model.get_text_embedding_batch(TEXTS))
    np.testing.assert_allclose(ours, sentence_transformer.encode(TEXTS, normalize_embeddings=True), atol=1e-5)
    assert all(type(x) is float for x in ours.tolist()[0])


def test_batch_larger_than_embed_batch_size_equals_one_at_a_time(embed_model):
    batch = embed_model.get_text_embedding_batch(TEXTS)
    assert len(batch) == len(TEXTS) > embed_model.embed_batch_size
    single = [embed_model.get_text_embedding(t) for t in TEXTS]
    np.testing.assert_allclose(batch, single, atol=1e-6)
    np.testing.assert_allclose(embed_model._get_text_embeddings(TEXTS), single, atol=1e-6)  # one model call


def test_query_and_text_agree_without_instructions(embed_model):
    np.testing.assert_allclose(
        embed_model.get_query_embedding(TEXTS[0]), embed_model.get_text_embedding(TEXTS[0]), atol=1e-6
    )


def test_instructions_are_prepended(minilm_dir, embed_model):
    with_instr = GTEEmbedding(
        model_name=minilm_dir, embed_batch_size=4, query_instruction=INSTRUCTION, text_instruction="passage:"
    )
    prefixed_query = embed_model.get_text_embedding(f"{INSTRUCTION} {TEXTS[0]}")
    np.testing.assert_allclose(with_instr.get_query_embedding(TEXTS[0]), prefixed_query, atol=1e-6)
    assert not np.allclose(with_instr.get_query_embedding(TEXTS[0]), embed_model.get_query_embedding(TEXTS[0]))
    prefixed_texts = [embed_model.get_text_embedding(f"passage: {t}") for t in TEXTS[:5]]
    np.testing.assert_allclose(with_instr.get_text_embedding_batch(TEXTS[:5]), prefixed_texts, atol=1e-6)


def test_async_equals_sync(embed_model):
    async def run():
        # aget_text_embedding_batch gathers its chunks concurrently: several threads in one encoder at once.
        return await asyncio.gather(
            embed_model.aget_query_embedding(TEXTS[1]),
            embed_model.aget_text_embedding(TEXTS[2]),
            embed_model.aget_text_embedding_batch(TEXTS),
        )

    query, text, batch = asyncio.run(run())
    np.testing.assert_allclose(query, embed_model.get_query_embedding(TEXTS[1]), atol=1e-6)
    np.testing.assert_allclose(text, embed_model.get_text_embedding(TEXTS[2]), atol=1e-6)
    np.testing.assert_allclose(batch, embed_model.get_text_embedding_batch(TEXTS), atol=1e-6)


def test_async_leaves_the_event_loop_free(minilm_dir, loop_ticks_during):
    model = GTEEmbedding(model_name=minilm_dir, embed_batch_size=64)
    texts = TEXTS * 13  # two device steps of one shape
    model.get_text_embedding_batch(texts)  # compile first, so that the awaited call is all model work
    assert loop_ticks_during(lambda: model._aget_text_embeddings(texts)) >= 5


def test_instances_with_the_same_settings_share_one_encoder(minilm_dir, embed_model):
    same = GTEEmbedding(model_name=minilm_dir, embed_batch_size=32, query_instruction=INSTRUCTION, normalize=False)
    assert same.encoder is embed_model.encoder
    assert GTEEmbedding(model_name=minilm_dir, max_length=64).encoder is not embed_model.encoder


def test_empty_list_gives_empty_list(embed_model):
    assert embed_model.get_text_embedding_batch([]) == []
    assert embed_model._get_text_embeddings([]) == []
    assert asyncio.run(embed_model.aget_text_embedding_batch([])) == []


@pytest.mark.parametrize("instruction", [None, "passage:"])
def test_non_string_is_a_type_error(minilm_dir, instruction):
    model = GTEEmbedding(model_name=minilm_dir, embed_batch_size=4, text_instruction=instruction)
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        model.get_text_embedding_batch(["fine", 7])
    with pytest.raises(TypeError, match=r"texts\[0\] is bytes"):
        asyncio.run(model.aget_text_embedding(b"bytes"))


@pytest.mark.parametrize("name", ["/nonexistent/dir", "no-such-org/no-such-model"])
def test_missing_model_fails_at_construction(name):
    with pytest.raises(ModelNotFoundError, match="no-such-model|nonexistent"):
        GTEEmbedding(model_name=name)


@pytest.mark.parametrize("option", [{"batch_size": 8}, {"modle_name": "thenlper/gte-base"}])
def test_unknown_keyword_is_rejected(minilm_dir, option):
    # Accepted silently, GTEEmbedding(batch_size=8) kept embed_batch_size 64 and modle_name= loaded gte-small.
    with pytest.raises(ValidationError, match=next(iter(option))):
        GTEEmbedding(model_name=minilm_dir, **option)


def test_changing_an_encoder_setting_loads_that_encoder(minilm_dir):
    model = GTEEmbedding(model_name=minilm_dir)
    model.max_length = 32
    assert model.encoder.max_length == 32
    np.testing.assert_allclose(
        model.get_text_embedding(TEXTS[0]),
        GTEEmbedding(model_name=minilm_dir, max_length=32).get_text_embedding(TEXTS[0]),
    )
    with pytest.raises(ModelNotFoundError):
        model.model_name = "/nonexistent/dir"
    assert model.model_name == minilm_dir and model.encoder.max_length == 32  # unchanged by the failed load


def test_embed_batch_size_only_chunks_calls_and_leaves_device_steps_to_the_encoder(minilm_dir, monkeypatch):
    model = GTEEmbedding(model_name=minilm_dir, embed_batch_size=4)
    calls = []
    encode = model.encoder.encode
    monkeypatch.setattr(model.encoder, "encode", lambda texts, **kw: calls.append(kw) or encode(texts, **kw))
    model.get_text_embedding_batch(TEXTS)
    assert len(calls) == 3 and all("batch_size" not in kw for kw in calls)  # the encoder's backend default


@pytest.fixture(scope="module")
def prompt_model(minilm_with_prompts) -> str:
    """MiniLM with "query" and "passage" prompts (as e5 has) in its config_sentence_transformers.json."""
    return minilm_with_prompts({"query": "query: ", "passage": "passage: "})


def test_queries_and_texts_get_the_checkpoint_prompts(prompt_model, sentence_transformer):
    model = GTEEmbedding(model_name=prompt_model)
    query = sentence_transformer.encode(TEXTS[0], prompt="query: ", normalize_embeddings=True)
    texts = sentence_transformer.encode(TEXTS[:4], prompt="passage: ", normalize_embeddings=True)
    np.testing.assert_allclose(model.get_query_embedding(TEXTS[0]), query, atol=1e-5)
    np.testing.assert_allclose(model.get_text_embedding_batch(TEXTS[:4]), texts, atol=1e-5)
    np.testing.assert_allclose(model.get_text_embedding(TEXTS[0]), texts[0], atol=1e-5)


def test_prompt_fields_and_instructions_agree(minilm_dir, prompt_model, embed_model):
    fields = GTEEmbedding.model_fields
    assert fields["query_prompt"].default is None and fields["document_prompt"].default is None
    assert fields["query_prompt"].description and fields["document_prompt"].description
    # a prompt is put verbatim, an instruction with a space: "query: " and "query:" are the same
    prompted = GTEEmbedding(model_name=minilm_dir, query_prompt="query: ", document_prompt="passage: ")
    instructed = GTEEmbedding(model_name=minilm_dir, query_instruction="query:", text_instruction="passage:")
    np.testing.assert_allclose(prompted.get_query_embedding(TEXTS[0]), instructed.get_query_embedding(TEXTS[0]))
    np.testing.assert_allclose(prompted.get_text_embedding_batch(TEXTS), instructed.get_text_embedding_batch(TEXTS))
    # "" turns a checkpoint's own prompt off
    plain = GTEEmbedding(model_name=prompt_model, query_prompt="", document_prompt="")
    np.testing.assert_allclose(
        plain.get_query_embedding(TEXTS[0]), embed_model.get_query_embedding(TEXTS[0]), atol=1e-6
    )
    np.testing.assert_allclose(plain.get_text_embedding(TEXTS[1]), embed_model.get_text_embedding(TEXTS[1]), atol=1e-6)
    with pytest.raises(ValidationError, match="not both"):
        GTEEmbedding(model_name=minilm_dir, document_prompt="p: ", text_instruction="p:")
