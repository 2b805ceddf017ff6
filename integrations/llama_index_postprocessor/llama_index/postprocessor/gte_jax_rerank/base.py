"""GTEJaxRerank: LlamaIndex's BaseNodePostprocessor over a gte_jax cross-encoder, in process or on a server."""

from __future__ import annotations

from typing import Any

from gte_jax.rerank_backends import IN_PROCESS_ONLY, RerankBackend, rerank_backend
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

# The settings a backend is built from; top_n and keep_retrieval_score apply per call.
BACKEND_FIELDS = ("model", "base_url", "api_key", "timeout", *IN_PROCESS_ONLY)


class GTEJaxRerank(BaseNodePostprocessor):
    """Reranks retrieved nodes with a cross-encoder run by gte-jax, as ``SentenceTransformerRerank`` does.

    In process (``base_url=None``) the model loads when the object is built, so a wrong name fails there
    (``gte_jax.ModelNotFoundError``); objects with the same ``model``, ``dtype`` and ``max_length`` share one
    :class:`gte_jax.GTEReranker`. With ``base_url`` the texts go to a ``gte-jax serve --reranker`` server's
    ``/v1/rerank`` (needs httpx) and the server's settings apply.

    Each node comes back as a new ``NodeWithScore`` whose score is the cross-encoder's; the caller's are unchanged.

    Example:
        .. code-block:: python

            from llama_index.postprocessor.gte_jax_rerank import GTEJaxRerank

            reranker = GTEJaxRerank(model="cross-encoder/ms-marco-MiniLM-L6-v2", top_n=3)
            query_engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[reranker])
    """

    model: str | None = Field(
        default=None,
        description=(
            "A Hub id or local directory of a one-label cross-encoder; None is gte_jax's default reranker in "
            "process, and the server's own model with base_url (sent as the request's model when given)."
        ),
    )
    top_n: int | None = Field(default=2, gt=0, description="How many nodes to return; None returns them all.")
    batch_size: int | None = Field(
        default=None, gt=0, description="Most pairs per device step; None is the backend's default. In process only."
    )
    dtype: str | None = Field(
        default=None, description='"float32" (None; matches PyTorch), "bfloat16" or "int8". In process only.'
    )
    max_length: int | None = Field(
        default=None,
        gt=0,
        description="Most tokens of a (query, text) pair; None uses the checkpoint's own. In process only.",
    )
    base_url: str | None = Field(
        default=None,
        description="A gte-jax serve --reranker server, e.g. http://127.0.0.1:8080; None runs the model here.",
    )
    api_key: str | None = Field(
        default=None, exclude=True, description="The server's --api-key, sent as Authorization: Bearer."
    )
    timeout: float = Field(default=60.0, gt=0, description="Seconds for each request to the server.")
    keep_retrieval_score: bool = Field(
        default=False, description="Keep the retriever's score in the node's metadata as \"retrieval_score\"."
    )

    model_config = ConfigDict(extra="forbid")  # a misspelt option is an error, not silently the default

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
        return rerank_backend(settings.pop("model"), **settings)

    @classmethod
    def class_name(cls) -> str:
        return "GTEJaxRerank"

    @property
    def reranker(self) -> Any:
        """The shared :class:`gte_jax.GTEReranker` in process; None against a server."""
        return getattr(self._backend, "reranker", None)

    @staticmethod
    def _texts(nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> tuple[str, list[str]]:
        if query_bundle is None:
            raise ValueError("GTEJaxRerank needs the query: pass query_bundle= or query_str= to postprocess_nodes.")
        return query_bundle.query_str, [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]

    def _reranked(self, nodes: list[NodeWithScore], ranked: list[tuple[int, float]]) -> list[NodeWithScore]:
        out = []
        for i, score in ranked:
            node = nodes[i].node
            if self.keep_retrieval_score:  # on a copy: the caller's node (and the index's) keeps its metadata
                node = node.model_copy(update={"metadata": {**node.metadata, "retrieval_score": nodes[i].score}})
            out.append(NodeWithScore(node=node, score=score))
        return out

    def _event_payload(self, nodes: list[NodeWithScore], query: str) -> dict[str, Any]:
        return {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: self.model or self.base_url,
            EventPayload.QUERY_STR: query,
            EventPayload.TOP_K: self.top_n,
        }

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        """The ``top_n`` nodes by the cross-encoder's score for the query, best first.

        Raises:
            ValueError: no query.
            gte_jax.rerank_backends.RerankServerError: the server failed (with ``base_url``).
        """
        query, texts = self._texts(nodes, query_bundle)
        if not nodes:
            return []
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._event_payload(nodes, query)) as event:
            reranked = self._reranked(nodes, self._backend.rank(query, texts, self.top_n))
            event.on_end(payload={EventPayload.NODES: reranked})
        return reranked

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        """Like :meth:`_postprocess_nodes`; the model runs in a worker thread, a request does not block."""
        query, texts = self._texts(nodes, query_bundle)
        if not nodes:
            return []
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._event_payload(nodes, query)) as event:
            reranked = self._reranked(nodes, await self._backend.arank(query, texts, self.top_n))
            event.on_end(payload={EventPayload.NODES: reranked})
        return reranked
