"""End to end: GTEEmbedding behind LlamaIndex's VectorStoreIndex, retrieving STS-B paraphrases."""

from __future__ import annotations

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.schema import TextNode

from llama_index.embeddings.gte_jax import GTEEmbedding


@pytest.mark.slow
def test_vector_store_index_retrieves_paraphrases_as_well_as_sentence_transformers(
    minilm_dir, sts_paraphrases, reference_top1_hits
):
    queries, corpus, gold = sts_paraphrases
    # Nodes rather than Documents: no text splitter, so one node per sentence and no tokenizer download.
    nodes = [TextNode(text=text, id_=str(i)) for i, text in enumerate(corpus)]
    index = VectorStoreIndex(nodes, embed_model=GTEEmbedding(model_name=minilm_dir))
    retriever = index.as_retriever(similarity_top_k=1)
    hits = sum(retriever.retrieve(q)[0].node.node_id == str(g) for q, g in zip(queries, gold, strict=True))
    print(
        f"top-1 paraphrase hits over {len(corpus)} texts: {hits}/{len(queries)} (sentence-transformers: "
        f"{reference_top1_hits})"
    )
    # One hit of slack: texts that tokenise the same (BERT is uncased) tie, and stores break ties differently.
    assert hits >= reference_top1_hits - 1
