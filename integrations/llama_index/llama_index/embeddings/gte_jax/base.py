"""GTEEmbedding: LlamaIndex's BaseEmbedding over a shared gte_jax.GTEEncoder."""

from __future__ import annotations

import asyncio
from typing import Any

from gte_jax import DEFAULT_MODEL, GTEEncoder
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr


def _prepend(instruction: str | None, text: str) -> str:
    # A non-string goes through untouched, so that gte_jax rejects it (naming its index) rather than
    # the f-string quietly turning it into text.
    return f"{instruction} {text}" if instruction and isinstance(text, str) else text


# The settings an encoder is loaded with; the others apply per call.
ENCODER_FIELDS = ("model_name", "dtype", "max_length")


class GTEEmbedding(BaseEmbedding):
    """GTE text embeddings (``thenlper/gte-small``, ``-base``, ``-large``) computed in JAX.

    The model loads when the object is built, so a wrong name fails there
    (``gte_jax.ModelNotFoundError``). Objects with the same ``model_name``,
    ``dtype`` and ``max_length`` share one :class:`gte_jax.GTEEncoder` per
    process: one copy of the weights, one set of compiled programs.

    Example:
        .. code-block:: python

            from llama_index.core import Settings
            from llama_index.embeddings.gte_jax import GTEEmbedding

            Settings.embed_model = GTEEmbedding()  # thenlper/gte-small from the Hugging Face Hub
    """

    model_name: str = Field(
        default=DEFAULT_MODEL, description="A Hugging Face Hub id (thenlper/gte-base) or a local model directory."
    )
    # Larger than BaseEmbedding's 10: fewer, bigger calls let the encoder fill its device steps.
    embed_batch_size: int = Field(
        default=64,
        gt=0,
        le=2048,
        description="Texts per call from LlamaIndex to the encoder; the encoder sizes its device steps itself.",
    )
    dtype: str = Field(
        default="float32", description='"float32" (matches PyTorch) or "bfloat16" (bf16 matmuls: faster on GPU/TPU).'
    )
    max_length: int | None = Field(
        default=None, description="Truncation length in tokens; None uses the checkpoint's own (512 for GTE)."
    )
    normalize: bool = Field(default=True, description="L2-normalise each vector (GTE is trained for cosine).")
    query_instruction: str | None = Field(
        default=None, description="Prepended (with a space) to queries; GTE itself uses none."
    )
    text_instruction: str | None = Field(
        default=None, description="Prepended (with a space) to texts; GTE itself uses none."
    )

    model_config = ConfigDict(extra="forbid")  # a misspelt option is an error, not silently the default

    _encoder: GTEEncoder = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        """Loads (or reuses) the encoder; raises gte_jax.ModelNotFoundError for an unknown model."""
        self._encoder = GTEEncoder.shared(self.model_name, dtype=self.dtype, max_length=self.max_length)

    def __setattr__(self, name: str, value: Any) -> None:
        """Setting ``model_name``, ``dtype`` or ``max_length`` loads that encoder first (no change if that fails)."""
        if name in ENCODER_FIELDS and value != getattr(self, name):
            settings = {field: getattr(self, field) for field in ENCODER_FIELDS} | {name: value}
            encoder = GTEEncoder.shared(settings.pop("model_name"), **settings)
            super().__setattr__(name, value)
            self._encoder = encoder
        else:
            super().__setattr__(name, value)

    @classmethod
    def class_name(cls) -> str:
        return "GTEEmbedding"

    @property
    def encoder(self) -> GTEEncoder:
        """The underlying encoder (shared with other objects for the same model and settings)."""
        return self._encoder

    def _embed(self, texts: list[str]) -> list[Embedding]:
        vectors = self._encoder.encode(texts, normalize=self.normalize)
        return vectors.tolist()

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([_prepend(self.query_instruction, query)])[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([_prepend(self.text_instruction, text)])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed([_prepend(self.text_instruction, t) for t in texts])

    # The model runs in a worker thread so that the event loop keeps serving other tasks meanwhile.
    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
