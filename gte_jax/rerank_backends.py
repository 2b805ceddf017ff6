"""Where the integrations' rerankers run: in this process (a shared :class:`~gte_jax.GTEReranker`) or on a server.

Both backends answer ``rank(query, documents, top_n) -> [(index, score)]``, best first, and ``arank`` for the
async paths. The server one POSTs ``gte-jax serve``'s Cohere/Jina-shaped ``/v1/rerank``: ``{"query",
"documents", "top_n"[, "model"]}`` -> ``{"results": [{"index", "relevance_score"}]}``; it needs httpx
(``pip install httpx``), imported only there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from gte_jax.engine.reranker import DEFAULT_RERANKER, GTEReranker
from gte_jax.engine.tokenization import lone_surrogate


class RerankBackend(Protocol):
    """What the LangChain and LlamaIndex rerankers call."""

    def rank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[tuple[int, float]]: ...

    async def arank(
        self, query: str, documents: Sequence[str], top_n: int | None = None
    ) -> list[tuple[int, float]]: ...


class RerankServerError(RuntimeError):
    """The server could not be reached, refused the request, or answered in a shape that is not /v1/rerank's."""


def _httpx() -> Any:
    try:
        import httpx
    except ImportError as e:  # only the server mode needs it
        raise ImportError(
            "reranking against a server (base_url=) needs httpx: pip install httpx (or an integration's [server] extra)"
        ) from e
    return httpx


def rerank_url(base_url: str) -> str:
    """``/v1/rerank`` under ``base_url``: ``http://host:8080`` and ``http://host:8080/v1`` (OpenAI style) alike."""
    base = base_url.rstrip("/")
    return f"{base}/rerank" if base.endswith("/v1") else f"{base}/v1/rerank"


class RerankClient:
    """Reranks through a ``gte-jax serve --reranker`` server (or any server with Cohere's /v1/rerank shape).

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8080``.
        model: sent as the request's ``model``; None sends none (the server's own model).
        api_key: sent as ``Authorization: Bearer <api_key>``.
        timeout: seconds for each request.
    """

    def __init__(self, base_url: str, *, model: str | None = None, api_key: str | None = None, timeout: float = 60.0):
        _httpx()  # fail at construction, not at the first query
        self.url = rerank_url(base_url)
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout

    def _body(self, query: str, documents: Sequence[str], top_n: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"query": query, "documents": list(documents), "return_documents": False}
        if top_n is not None:
            body["top_n"] = top_n
        if self.model is not None:
            body["model"] = self.model
        return body

    def rank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[tuple[int, float]]:
        """``[(index into documents, relevance score)]``, best first, at most ``top_n`` of them.

        Raises:
            RerankServerError: the server is unreachable, answered an error status, or sent no valid results.
        """
        _check_texts(query, documents)  # as GTEReranker checks them: a clear error here, not an encoding one in httpx
        if not documents:
            return []
        httpx = _httpx()
        try:
            response = httpx.post(
                self.url, json=self._body(query, documents, top_n), headers=self.headers, timeout=self.timeout
            )
        except httpx.TransportError as e:
            raise RerankServerError(f"cannot reach {self.url}: {e}; is `gte-jax serve --reranker` running?") from e
        return self._results(response, len(documents))

    async def arank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[tuple[int, float]]:
        """Like :meth:`rank`, without blocking the event loop."""
        _check_texts(query, documents)  # as GTEReranker checks them: a clear error here, not an encoding one in httpx
        if not documents:
            return []
        httpx = _httpx()
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(self.url, json=self._body(query, documents, top_n), headers=self.headers)
        except httpx.TransportError as e:
            raise RerankServerError(f"cannot reach {self.url}: {e}; is `gte-jax serve --reranker` running?") from e
        return self._results(response, len(documents))

    def _results(self, response: Any, n: int) -> list[tuple[int, float]]:
        if response.status_code >= 400:
            hint = " (does the server run with --reranker?)" if response.status_code in (404, 405) else ""
            raise RerankServerError(f"{self.url} answered {response.status_code}{hint}: {_error_message(response)}")
        try:
            results = response.json()["results"]
            ranked = [(int(r["index"]), float(r["relevance_score"])) for r in results]
        except (ValueError, KeyError, TypeError) as e:
            raise RerankServerError(
                f"{self.url} did not answer with /v1/rerank's {{'results': [{{'index', 'relevance_score'}}]}}: "
                f"{response.text[:200]!r}"
            ) from e
        bad = [i for i, _ in ranked if not 0 <= i < n]
        if bad:
            raise RerankServerError(f"{self.url} answered index {bad[0]}, outside the {n} documents sent.")
        return ranked


def _check_texts(query: Any, documents: Sequence[Any]) -> None:
    if not isinstance(query, str):
        raise TypeError(f"query must be a string, not {type(query).__name__}.")
    if isinstance(documents, str):
        raise TypeError("documents must be a list of strings, not one string; wrap it in a list.")
    for i, text in enumerate(documents):
        if not isinstance(text, str):
            raise TypeError(f"document {i} is {type(text).__name__}; documents must be strings.")
    for name, text in [("query", query), *((f"document {i}", d) for i, d in enumerate(documents))]:
        at = lone_surrogate(text)
        if at is not None:
            raise ValueError(f"{name} holds a lone surrogate at character {at}; drop it.")


def _error_message(response: Any) -> str:
    """The message of an OpenAI-, TEI- or Cohere-shaped error body, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for value in (error, body.get("message"), body.get("detail")):
            if isinstance(value, str) and value:
                return value
    return response.text[:200]


class InProcessRerank:
    """A :meth:`GTEReranker.shared` reranker: objects with the same model and settings share its weights.

    Args:
        model: a Hub id or a local directory of a one-label cross-encoder; None is :data:`DEFAULT_RERANKER`.
        dtype, max_length: as for :meth:`GTEReranker.from_pretrained` (None: float32, the checkpoint's length).
        batch_size: most pairs per device step; None is the reranker's default.

    Raises:
        ModelNotFoundError, ConfigError, CheckpointError: as for :meth:`GTEReranker.from_pretrained`.
        ValueError: the model gives several scores per pair (a classifier, not a reranker).
    """

    def __init__(
        self,
        model: str | None,
        *,
        dtype: str | None = None,
        max_length: int | None = None,
        batch_size: int | None = None,
    ):
        self.reranker = GTEReranker.shared(model or DEFAULT_RERANKER, dtype=dtype or "float32", max_length=max_length)
        if self.reranker.num_labels != 1:
            raise ValueError(
                f"{model}: a reranker gives one score per pair; this model gives {self.reranker.num_labels} labels."
            )
        self.batch_size = batch_size

    def rank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[tuple[int, float]]:
        """``[(index into documents, score)]``, best first, at most ``top_n`` of them."""
        ranked = self.reranker.rank(query, list(documents), top_k=top_n, batch_size=self.batch_size)
        return [(r["corpus_id"], r["score"]) for r in ranked]

    async def arank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[tuple[int, float]]:
        """Like :meth:`rank`, in a worker thread so that the event loop keeps running."""
        return await asyncio.to_thread(self.rank, query, documents, top_n)


# Loading settings that only mean something in this process: a server has its own.
IN_PROCESS_ONLY = ("dtype", "max_length", "batch_size")


def rerank_backend(
    model: str | None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float = 60.0,
    **in_process: Any,
) -> RerankBackend:
    """:class:`RerankClient` for ``base_url``, else :class:`InProcessRerank`.

    Args:
        in_process: ``dtype``, ``max_length``, ``batch_size`` of :class:`InProcessRerank`; with ``base_url`` only
            ``None`` (unset), as the server's settings apply there.

    Raises:
        ValueError: an in-process setting given with ``base_url``.
    """
    if base_url is None:
        return InProcessRerank(model, **in_process)
    given = [name for name, value in in_process.items() if value is not None]
    if given:
        raise ValueError(
            f"{', '.join(given)} apply in process only; against base_url={base_url!r} the server's own settings "
            "apply (gte-jax serve --dtype, --max-length, --batch-size): drop them, or drop base_url."
        )
    return RerankClient(base_url, model=model, api_key=api_key, timeout=timeout)


__all__ = [
    "InProcessRerank",
    "RerankBackend",
    "RerankClient",
    "RerankServerError",
    "rerank_backend",
    "rerank_url",
]
