"""HTTP plumbing every route of ``gte-jax serve`` shares: the API key check, the per-route metrics, the error
bodies of the OpenAI and TEI APIs, and noticing a client that left."""

from __future__ import annotations

import hmac
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gte_jax.serve.metrics import Metrics
from gte_jax.serve.schemas import RequestError

OPEN_PATHS = frozenset({"/health", "/metrics"})  # answered without the API key, for probes and scrapers
OPENAI_PATHS = frozenset({"/v1/embeddings", "/embeddings", "/v1/models", "/v1/rerank"})
# A body over the limit is still read (and dropped) up to this size, so the client gets to read the 413
# instead of a connection reset; past it the connection is closed.
DRAIN_LIMIT = 64 << 20
CLIENT_CLOSED = 499  # nginx's code for "the client went away first": only ever seen in the metrics

_OPENAI_TYPES = {401: "authentication_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}
_TEI_TYPES = {401: "Unauthorized", 429: "Overloaded", 500: "Backend", 503: "Unhealthy"}


def _api(path: str) -> str:
    return "openai" if path in OPENAI_PATHS else "tei"


def error_response(path: str, error: RequestError) -> JSONResponse:
    """``error`` in the error body of the API that ``path`` belongs to."""
    api = _api(path)
    status = error.status or (400 if api == "openai" else 422)
    if api == "openai":
        kind = _OPENAI_TYPES.get(status, "invalid_request_error")
        body: Any = {"error": {"message": error.message, "type": kind, "param": error.param, "code": None}}
    else:
        body = {"error": error.message, "error_type": _TEI_TYPES.get(status, "Validation")}
    headers = {"Retry-After": "1"} if status == 429 else None
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(body, status_code=status, headers=headers)


class Authenticate:
    """ASGI middleware: every path but :data:`OPEN_PATHS` needs ``Authorization: Bearer <api_key>``."""

    def __init__(self, app: ASGIApp, api_key: str | None):
        self.app = app
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.key):
            error = RequestError(
                "missing or wrong API key: send the header 'Authorization: Bearer <key>' with the key this "
                "server was started with (--api-key)",
                status=401,
            )
            return await error_response(scope["path"], error)(scope, receive, send)
        await self.app(scope, receive, send)


class Observe:
    """ASGI middleware: counts every answer by route and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: frozenset[str]):
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in self.routes else "other"  # bounded label values
        status = 500
        began = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.request_duration.labels(route).observe(time.perf_counter() - began)


async def _disconnected(receive: Receive) -> None:
    """Returns when the client closes the connection (the request body has been read by then)."""
    while (await receive())["type"] != "http.disconnect":
        pass
