"""LangChain embeddings and reranking backed by gte-jax: GTE text embeddings and cross-encoders in JAX."""

from langchain_gte_jax.embeddings import GTEEmbeddings
from langchain_gte_jax.rerank import GTERerank

__all__ = ["GTEEmbeddings", "GTERerank"]
__version__ = "0.1.0"
