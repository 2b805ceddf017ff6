"""GTEEmbeddings: LangChain's Embeddings interface over a shared gte_jax.GTEEncoder."""

from __future__ import annotations

import asyncio
from typing import Any

from gte_jax import DEFAULT_MODEL, GTEEncoder
from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

# The settings an encoder is loaded with; the others apply per call.
ENCODER_FIELDS = ("model_name", "dtype", "max_length")


class GTEEmbeddings(BaseModel, Embeddings):
    """GTE text embeddings (``thenlper/gte-small``, ``-base``, ``-large``) computed in JAX.

    The model loads when the object is built, so a wrong name fails there and not
    at the first query. Objects with the same ``model_name``, ``dtype`` and
    ``max_length`` share one :class:`gte_jax.GTEEncoder` per process, hence one
    copy of the weights and one set of compiled programs.

    Queries go through ``GTEEncoder.encode_query`` and documents through ``encode_document``,
    so a checkpoint whose ``config_sentence_transformers.json`` has ``"query"`` / ``"document"``
    prompts (e5, bge) gets them; ``query_prompt`` / ``document_prompt`` set them for one that
    has none. GTE uses no prompts: its queries and documents are embedded the same way.
    Vectors are L2-normalised by default, so cosine similarity is a dot product.

    Example:
        .. code-block:: python

            from langchain_gte_jax import GTEEmbeddings

            embeddings = GTEEmbeddings()  # thenlper/gte-small from the Hugging Face Hub
            vectors = embeddings.embed_documents(["JAX is a numerical library.", "Flax builds on JAX."])
            query = embeddings.embed_query("What is JAX?")
    """

    model_name: str = DEFAULT_MODEL
    """A Hugging Face Hub id (``thenlper/gte-base``) or a local model directory."""
    dtype: str = "float32"
    """``"float32"`` (matches PyTorch), ``"bfloat16"`` or ``"int8"`` (faster on CPUs with AVX512-BF16 /
    VNNI or AMX; bfloat16 on GPU/TPU)."""
    max_length: int | None = None
    """Truncation length in tokens; ``None`` uses the checkpoint's own (512 for GTE)."""
    batch_size: int | None = Field(default=None, gt=0)
    """Most texts per device step; ``None`` uses the encoder's default for the backend (64 on CPU)."""
    normalize: bool = True
    """L2-normalise each vector (GTE is trained for cosine similarity)."""
    show_progress: bool = False
    """Show a tqdm progress bar while embedding documents."""
    query_prompt: str | None = None
    """Put before every query (``"query: "``), as a sentence-transformers prompt: verbatim, counted against
    ``max_length``; ``None`` uses the checkpoint's ``"query"`` prompt (none for GTE), ``""`` none at all."""
    document_prompt: str | None = None
    """Put before every document (``"passage: "``); ``None`` uses the checkpoint's ``"document"``,
    ``"passage"`` or ``"corpus"`` prompt (none for GTE), ``""`` none at all."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

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

    @property
    def encoder(self) -> GTEEncoder:
        """The underlying encoder (shared with other objects for the same model and settings)."""
        return self._encoder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embeds documents.

        Args:
            texts: the texts; longer ones are truncated to ``max_length`` tokens.

        Returns:
            One vector of Python floats per text, in input order; ``[]`` for no texts.

        Raises:
            TypeError: ``texts`` is a single string, or an item is not a string.
        """
        if isinstance(texts, str):
            # A bare string would otherwise be embedded as one text and come back one level too flat.
            raise TypeError("embed_documents takes a list of strings, not a str; use embed_query for one text.")
        vectors = self._encoder.encode_document(
            list(texts),
            prompt=self.document_prompt,
            batch_size=self.batch_size,
            normalize=self.normalize,
            show_progress=self.show_progress,
        )
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embeds one query text, with the query prompt if there is one (GTE has none).

        Raises:
            TypeError: ``text`` is not a string.
        """
        if not isinstance(text, str):
            raise TypeError(f"embed_query takes a str, not {type(text).__name__}.")
        vectors = self._encoder.encode_query(
            [text], prompt=self.query_prompt, batch_size=self.batch_size, normalize=self.normalize
        )
        return vectors[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Like :meth:`embed_documents`, in a worker thread so the event loop keeps running."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Like :meth:`embed_query`, in a worker thread so the event loop keeps running."""
        return await asyncio.to_thread(self.embed_query, text)
