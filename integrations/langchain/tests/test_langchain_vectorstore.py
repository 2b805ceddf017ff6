"""End to end: GTEEmbeddings behind LangChain's InMemoryVectorStore, retrieving STS-B paraphrases."""

from __future__ import annotations

import pytest
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_gte_jax import GTEEmbeddings


@pytest.mark.slow
def test_in_memory_store_retrieves_paraphrases_as_well_as_sentence_transformers(
    minilm_dir, sts_paraphrases, reference_top1_hits
):
    queries, corpus, gold = sts_paraphrases
    store = InMemoryVectorStore.from_texts(corpus, GTEEmbeddings(model_name=minilm_dir))
    hits = sum(store.similarity_search(q, k=1)[0].page_content == corpus[g] for q, g in zip(queries, gold, strict=True))
    print(
        f"top-1 paraphrase hits over {len(corpus)} texts: {hits}/{len(queries)} (sentence-transformers: "
        f"{reference_top1_hits})"
    )
    # One hit of slack: texts that tokenise the same (BERT is uncased) tie, and stores break ties differently.
    assert hits >= reference_top1_hits - 1
