"""LangChain embeddings backed by gte-jax: GTE text embeddings in JAX on CPU, GPU and TPU."""

from langchain_gte_jax.embeddings import GTEEmbeddings

__all__ = ["GTEEmbeddings"]
__version__ = "0.1.0"
