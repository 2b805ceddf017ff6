"""LlamaIndex embeddings backed by gte-jax: GTE text embeddings in JAX on CPU, GPU and TPU."""

from llama_index.embeddings.gte_jax.base import GTEEmbedding

__all__ = ["GTEEmbedding"]
