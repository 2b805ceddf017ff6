"""GTEEmbedding: LlamaIndex's BaseEmbedding over a shared gte_jax.GTEEncoder."""

from __future__ import annotations

import asyncio
from typing import Any

from gte_jax import DEFAULT_MODEL, GTEEncoder
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, model_validator

# The settings an encoder is loaded with; the others apply per call.
ENCODER_FIELDS = ("model_name", "dtype", "max_length")


class GTEEmbedding(BaseEmbedding):
    """GTE text embeddings (``thenlper/gte-small``, ``-base``, ``-large``) computed in JAX.

    The model loads when the object is built, so a wrong name fails there
    (``gte_jax.ModelNotFoundError``). Objects with the same ``model_name``,
    ``dtype`` and ``max_length`` share one :class:`gte_jax.GTEEncoder` per
    process: one copy of the weights, one set of compiled programs.

    Queries go through ``GTEEncoder.encode_query`` and texts through ``encode_document``, so a
    checkpoint with ``"query"`` / ``"document"`` prompts in its ``config_sentence_transformers.json``
    gets them; ``query_prompt`` / ``document_prompt`` set them for one without (GTE has none).

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
        default="float32",
        description=(
            '"float32" (matches PyTorch), "bfloat16" or "int8" (faster on CPUs with AVX512-BF16 / VNNI or AMX; '
            "bfloat16 on GPU/TPU)."
        ),
    )
    max_length: int | None = Field(
        default=None, description="Truncation length in tokens; None uses the checkpoint's own (512 for GTE)."
    )
    normalize: bool = Field(default=True, description="L2-normalise each vector (GTE is trained for cosine).")
    query_prompt: str | None = Field(
        default=None,
        description='Put verbatim before every query ("query: "), as a sentence-transformers prompt; None uses the '
        'checkpoint\'s "query" prompt (GTE has none), "" none at all.',
    )
    document_prompt: str | None = Field(
        default=None,
        description='Put verbatim before every text ("passage: "); None uses the checkpoint\'s "document", '
        '"passage" or "corpus" prompt (GTE has none), "" none at all.',
    )
    query_instruction: str | None = Field(
        default=None, description="Older form of query_prompt: prepended with a space; GTE itself uses none."
    )
    text_instruction: str | None = Field(
        default=None, description="Older form of document_prompt: prepended with a space; GTE itself uses none."
    )

    model_config = ConfigDict(extra="forbid")  # a misspelt option is an error, not silently the default

    _encoder: GTEEncoder = PrivateAttr()

    @model_validator(mode="after")
    def _one_prompt_per_side(self) -> GTEEmbedding:
        for prompt, instruction in (("query_prompt", "query_instruction"), ("document_prompt", "text_instruction")):
            if getattr(self, prompt) is not None and getattr(self, instruction) is not None:
                raise ValueError(f"give {prompt} or {instruction}, not both ({instruction} is the older form).")
        return self

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

    @staticmethod
    def _prompt(prompt: str | None, instruction: str | None) -> str | None:
        """The prompt for one side: ``*_prompt`` as given, else the instruction and a space, else None (the
        checkpoint's own)."""
        return prompt if prompt is not None else (f"{instruction} " if instruction else None)

    def _get_query_embedding(self, query: str) -> Embedding:
        prompt = self._prompt(self.query_prompt, self.query_instruction)
        return self._encoder.encode_query([query], prompt=prompt, normalize=self.normalize)[0].tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        prompt = self._prompt(self.document_prompt, self.text_instruction)
        return self._encoder.encode_document(texts, prompt=prompt, normalize=self.normalize).tolist()

    # The model runs in a worker thread so that the event loop keeps serving other tasks meanwhile.
    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
