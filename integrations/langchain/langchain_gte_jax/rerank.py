"""GTERerank: LangChain's BaseDocumentCompressor over a gte_jax cross-encoder, in process or on a server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gte_jax.rerank_backends import IN_PROCESS_ONLY, RerankBackend, rerank_backend
from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr

# The settings a backend is built from; top_n applies per call.
BACKEND_FIELDS = ("model_name", "base_url", "api_key", "timeout", *IN_PROCESS_ONLY)


class GTERerank(BaseDocumentCompressor):
    """Reranks retrieved documents with a cross-encoder run by gte-jax, best first, keeping the ``top_n``.

    In process (``base_url=None``) the model loads when the object is built, so a wrong name fails there;
    objects with the same ``model_name``, ``dtype`` and ``max_length`` share one
    :class:`gte_jax.GTEReranker`. With ``base_url`` the documents go to a ``gte-jax serve --reranker``
    server's ``/v1/rerank`` (needs httpx) and the server's settings apply.

    The documents come back as copies, their metadata with a ``relevance_score``; the caller's are unchanged.

    Example:
        .. code-block:: python

            from langchain_gte_jax import GTERerank

            reranker = GTERerank(model_name="cross-encoder/ms-marco-MiniLM-L6-v2", top_n=3)
            best = reranker.compress_documents(store.similarity_search(query, k=20), query)
    """

    model_name: str | None = None
    """A Hub id or local directory of a one-label cross-encoder; ``None`` is gte_jax's default reranker in
    process, and the server's own model with ``base_url`` (sent as the request's ``model`` when given)."""
    top_n: int | None = Field(default=3, gt=0)
    """How many documents to return; ``None`` returns them all, reordered."""
    batch_size: int | None = Field(default=None, gt=0)
    """Most pairs per device step; ``None`` uses the reranker's default for the backend. In process only."""
    dtype: str | None = None
    """``"float32"`` (``None``; matches PyTorch), ``"bfloat16"`` or ``"int8"``. In process only."""
    max_length: int | None = Field(default=None, gt=0)
    """Most tokens of a (query, document) pair; ``None`` uses the checkpoint's own. In process only."""
    base_url: str | None = None
    """A ``gte-jax serve --reranker`` server, e.g. ``http://127.0.0.1:8080``; ``None`` runs the model here."""
    api_key: SecretStr | None = None
    """The server's ``--api-key``, sent as ``Authorization: Bearer``."""
    timeout: float = Field(default=60.0, gt=0)
    """Seconds for each request to the server."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)

    _backend: RerankBackend = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        """Loads (or reuses) the reranker, or sets up the server client.

        Raises:
            gte_jax.ModelNotFoundError: an unknown model (in process).
            ValueError: an in-process setting with ``base_url``, or a model with several labels.
        """
        self._backend = self._make_backend({name: getattr(self, name) for name in BACKEND_FIELDS})

    def __setattr__(self, name: str, value: Any) -> None:
        """Setting a field the backend is built from builds that backend first (no change if that fails)."""
        if name in BACKEND_FIELDS and value != getattr(self, name):
            backend = self._make_backend({field: getattr(self, field) for field in BACKEND_FIELDS} | {name: value})
            super().__setattr__(name, value)
            self._backend = backend
        else:
            super().__setattr__(name, value)

    @staticmethod
    def _make_backend(settings: dict[str, Any]) -> RerankBackend:
        key = settings.pop("api_key")
        return rerank_backend(
            settings.pop("model_name"),
            api_key=key.get_secret_value() if isinstance(key, SecretStr) else key,
            **settings,
        )

    @property
    def reranker(self) -> Any:
        """The shared :class:`gte_jax.GTEReranker` in process; None against a server."""
        return getattr(self._backend, "reranker", None)

    def _reranked(self, documents: Sequence[Document], ranked: list[tuple[int, float]]) -> list[Document]:
        # Copies with a fresh metadata dict: the caller's documents (and a vector store's) stay as they were.
        return [
            documents[i].model_copy(update={"metadata": {**documents[i].metadata, "relevance_score": score}})
            for i, score in ranked
        ]

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The ``top_n`` documents by the cross-encoder's score for ``query``, best first.

        Args:
            documents: the retrieved documents; their ``page_content`` is scored.
            query: the query.
            callbacks: accepted for LangChain's interface; unused.

        Returns:
            Copies of the documents with ``metadata["relevance_score"]`` (a float); ``[]`` for no documents.

        Raises:
            TypeError: ``query`` is not a string.
            gte_jax.rerank_backends.RerankServerError: the server failed (with ``base_url``).
        """
        texts = [d.page_content for d in documents]
        return self._reranked(documents, self._backend.rank(query, texts, self.top_n))

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Like :meth:`compress_documents`; the model runs in a worker thread, a request does not block."""
        texts = [d.page_content for d in documents]
        return self._reranked(documents, await self._backend.arank(query, texts, self.top_n))
