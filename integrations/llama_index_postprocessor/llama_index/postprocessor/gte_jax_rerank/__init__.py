"""LlamaIndex reranking backed by gte-jax: cross-encoders in JAX, in process or on a gte-jax serve server."""

from llama_index.postprocessor.gte_jax_rerank.base import GTEJaxRerank

__all__ = ["GTEJaxRerank"]
