"""The HTTP side of ``gte-jax serve``: Starlette routes in the shapes of the OpenAI and TEI embedding APIs.

A request goes: body read (bounded by ``payload_limit``) -> admitted (at most
``max_concurrent_requests`` at once, else 429) -> parsed and tokenised on a worker thread ->
queued in the :class:`~gte_jax.serve.batcher.Batcher`, whose thread runs the device -> response
built on a worker thread. The event loop only moves bytes, so it keeps answering while the
device works. A client that disconnects while its request waits takes its queued inputs with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gte_jax.engine.prompts import resolve_prompt
from gte_jax.serve import defaults, schemas
from gte_jax.serve.batcher import Batcher, NonFiniteVectors, ShuttingDown
from gte_jax.serve.http import CLIENT_CLOSED, DRAIN_LIMIT, Authenticate, Observe, _disconnected, error_response
from gte_jax.serve.metrics import Metrics
from gte_jax.serve.schemas import Inputs, RequestError

T = TypeVar("T")  # a parsed request


@dataclasses.dataclass(frozen=True)
class Settings:
    """What ``gte-jax serve`` was started with (see ``gte-jax serve --help``)."""

    model_id: str
    served_model_name: str
    dtype: str = "float32"
    api_key: str | None = None
    round_steps: int = defaults.ROUND_STEPS
    max_client_batch_size: int = 2048
    max_concurrent_requests: int = 512
    payload_limit: int = 2_000_000
    body_timeout: float = defaults.BODY_TIMEOUT
    warmed_up: bool = False
    reranker_id: str = ""
    served_reranker_name: str = ""


class Server:
    """The routes' shared state: the encoder and its batcher, the reranker's routes, the metrics and the limits.

    ``encoder`` is None when the server runs a reranker alone (``gte-jax serve --model RERANKER``).
    """

    def __init__(self, encoder: Any, settings: Settings, reranker: Any = None):
        from gte_jax.serve.rerank import RerankRoutes

        if encoder is None and reranker is None:
            raise ValueError("a server needs an encoder, a reranker or both")
        self.encoder = encoder
        self.settings = settings
        self.metrics = Metrics()
        model = encoder if encoder is not None else reranker
        self.rerank = RerankRoutes(self, reranker) if reranker is not None else None
        self.batchers = [] if self.rerank is None else [self.rerank.batcher]
        if encoder is not None:
            self.batcher = Batcher(encoder, round_steps=settings.round_steps, metrics=self.metrics)
            self.batchers.insert(0, self.batcher)
        else:
            assert self.rerank is not None
            self.batcher = self.rerank.batcher  # the one engine queue, for the routes every server has
        self.metrics.watch_queue(
            lambda: sum(b.queued_requests for b in self.batchers), lambda: sum(b.queued_inputs for b in self.batchers)
        )
        self.limits = schemas.Limits(
            dim=model.dim,
            max_length=model.max_length,
            vocab_size=model.config.vocab_size,
            max_client_batch_size=settings.max_client_batch_size,
        )
        self.in_flight = 0  # only touched on the event loop

    # ---- request plumbing -------------------------------------------------------------------------------

    async def _read_body(self, request: Request) -> bytes:
        """The body, at most ``payload_limit`` bytes, read within ``body_timeout`` seconds.

        Raises:
            RequestError: (413) the body is bigger; (415) it is compressed; (408) it came too slowly.
        """
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise RequestError(
                f"Content-Encoding {encoding} is not supported; send the body uncompressed (without the header)",
                status=415,
            )
        timeout = self.settings.body_timeout
        try:
            return await asyncio.wait_for(self._read_limited(request), timeout)
        except asyncio.TimeoutError:
            raise RequestError(
                f"the request body did not arrive within {timeout:g} s (--body-timeout); send the whole body "
                "that Content-Length announces",
                status=408,
            ) from None

    async def _read_limited(self, request: Request) -> bytes:
        limit = self.settings.payload_limit
        declared = request.headers.get("content-length", "")
        declared_size = int(declared) if declared.isdigit() else 0
        over = declared_size > limit
        if over and request.headers.get("expect", "").lower() == "100-continue":
            raise self._too_big(declared_size)  # the client has not sent the body yet: nothing to drain
        body, size = bytearray(), 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                over = True
            if over:
                if size > DRAIN_LIMIT:
                    break
                continue
            body += chunk
        if over:
            raise self._too_big(max(size, declared_size))
        return bytes(body)

    def _too_big(self, size: int) -> RequestError:
        return RequestError(
            f"the request body is {size} bytes, more than this server takes ({self.settings.payload_limit} bytes, "
            "--payload-limit); send fewer or shorter inputs per request",
            status=413,
        )

    @contextlib.contextmanager
    def _admit(self) -> Iterator[None]:
        """Holds one of the ``max_concurrent_requests`` places until the answer is ready.

        Raises:
            RequestError: (429) every place is taken.
        """
        if self.in_flight >= self.settings.max_concurrent_requests:
            raise RequestError(
                f"the server is busy: {self.in_flight} requests are in flight, its limit "
                "(--max-concurrent-requests); retry shortly",
                status=429,
            )
        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            yield
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()

    def _prompt(self, prompt_name: str | None) -> str:
        """The prompt ``encode()`` would prepend: ``prompt_name``'s, else the model's default ("" for none)."""
        enc = self.encoder
        try:
            return resolve_prompt(enc.prompts, enc.default_prompt_name, None, prompt_name)
        except ValueError:
            known = ", ".join(schemas.given(p) for p in sorted(enc.prompts)) or "it has none"
            raise RequestError(
                f"`prompt_name` {schemas.given(prompt_name)} is not one of this model's prompts ({known}); "
                "send one of those, or leave it out",
                param="prompt_name",
            ) from None

    def _token_ids(self, inputs: Inputs, truncate: bool, field: str, prompt_name: str | None) -> list[np.ndarray]:
        """Token ids per input, cut to the model's limit (or, if ``truncate`` is false, a 413 for a longer one)."""
        if inputs.token_ids is not None:
            ids, overlong = inputs.token_ids, list(inputs.overlong)
        else:
            texts, prompt = inputs.texts or [], self._prompt(prompt_name)
            ids = self.encoder.prepare(texts, prompt=prompt)  # encode()'s own path from texts to token ids
            overlong = [] if truncate else self.encoder.tokenizer.truncated([prompt + t for t in texts], ids)
        if overlong and not truncate:
            i, limit = overlong[0], self.encoder.max_length
            raise RequestError(
                f"`{field}[{i}]` is longer than this model's limit of {limit} tokens and `truncate` is false; "
                f'send "truncate": true to embed its first {limit} tokens, or shorten it',
                param=field,
                status=413,
            )
        return ids

    async def _embed(self, request: Request, ids: list[np.ndarray], normalize: bool) -> np.ndarray | None:
        """The vectors of ``ids`` from the encoder's batcher; None if the client disconnected first."""
        return await self.run_job(request, self.batcher, ids, normalize=normalize)

    async def run_job(
        self, request: Request, batcher: Batcher, ids: list[np.ndarray], *, normalize: bool
    ) -> np.ndarray | None:
        """The rows of ``ids`` from ``batcher`` (vectors, or a reranker's logits); None if the client disconnected
        first (its queued work is dropped)."""
        try:
            job = batcher.submit(ids, normalize=normalize)
        except ShuttingDown as e:
            raise RequestError(str(e), status=503) from None
        gone = asyncio.ensure_future(_disconnected(request.receive))
        either: list[asyncio.Future[Any]] = [job.future, gone]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            batcher.cancel(job)
            raise
        finally:
            gone.cancel()
        if not job.future.done():
            batcher.cancel(job)
            job.future.cancel()
            return None
        try:
            vectors = job.future.result()
        except NonFiniteVectors as e:
            raise RequestError(f"the model could not answer this request: {e}", status=500) from None
        except Exception as e:  # the engine failed (device error): the server's fault, not the client's
            raise RequestError(f"the engine failed on this request ({type(e).__name__}: {e})", status=500) from e
        self.metrics.inputs.inc(len(ids))
        self.metrics.tokens.inc(sum(len(t) for t in ids))
        return vectors

    async def answer(
        self,
        request: Request,
        parse: Callable[[dict[str, Any], schemas.Limits], T],
        handle: Callable[[T], Awaitable[Response]],
    ) -> Response:
        """Reads, admits and parses a POST, runs ``handle`` on it, and turns a client's mistake into a 4xx."""
        began = time.perf_counter()

        def parsed(body: bytes) -> T:
            return parse(schemas.parse_json(body), self.limits)

        try:
            body = await self._read_body(request)
            with self._admit():
                if len(body) > 65536:  # checking a big body takes milliseconds: keep it off the event loop
                    req = await run_in_threadpool(parsed, body)
                else:
                    req = parsed(body)
                self.metrics.stage.labels("parse").observe(time.perf_counter() - began)
                return await handle(req)
        except RequestError as e:
            return error_response(request.url.path, e)
        except ClientDisconnect:
            return Response(status_code=CLIENT_CLOSED)

    async def _tokenized(
        self, inputs: Inputs, truncate: bool, field: str, prompt_name: str | None = None
    ) -> list[np.ndarray]:
        began = time.perf_counter()
        ids = await run_in_threadpool(self._token_ids, inputs, truncate, field, prompt_name)
        self.metrics.stage.labels("tokenize").observe(time.perf_counter() - began)
        return ids

    async def _respond(self, build: Callable[[], bytes]) -> Response:
        began = time.perf_counter()
        content = await run_in_threadpool(build)
        self.metrics.stage.labels("respond").observe(time.perf_counter() - began)
        return Response(content, media_type="application/json")

    # ---- routes -----------------------------------------------------------------------------------------

    async def openai_embeddings(self, request: Request) -> Response:
        """``POST /v1/embeddings`` (and ``/embeddings``): OpenAI's request and response."""

        async def handle(req: schemas.OpenAIRequest) -> Response:
            ids = await self._tokenized(req.inputs, True, "input")
            vectors = await self._embed(request, ids, normalize=True)
            if vectors is None:
                return Response(status_code=CLIENT_CLOSED)
            model = req.model or self.settings.served_model_name
            tokens = sum(len(t) for t in ids)
            return await self._respond(
                lambda: schemas.openai_body(
                    schemas.shape_vectors(vectors, req.dimensions, True),
                    model=model,
                    encoding_format=req.encoding_format,
                    prompt_tokens=tokens,
                )
            )

        return await self.answer(request, schemas.parse_openai, handle)

    async def embed(self, request: Request) -> Response:
        """TEI's ``POST /embed``: ``{"inputs", "normalize", "truncate", "dimensions"}`` -> ``[[float]]``."""

        async def handle(req: schemas.EmbedRequest) -> Response:
            ids = await self._tokenized(req.inputs, req.truncate, "inputs", req.prompt_name)
            # With `dimensions`, cutting unit vectors and normalising again equals normalising the cut raw
            # vectors, so normalize=true always runs the programs encode() runs.
            vectors = await self._embed(request, ids, normalize=req.normalize)
            if vectors is None:
                return Response(status_code=CLIENT_CLOSED)
            return await self._respond(
                lambda: schemas.tei_body(schemas.shape_vectors(vectors, req.dimensions, req.normalize))
            )

        return await self.answer(request, schemas.parse_embed, handle)

    async def tokenize(self, request: Request) -> Response:
        """TEI's ``POST /tokenize``: the tokens the model sees (cut to its limit), with character offsets."""

        async def handle(req: schemas.TokenizeRequest) -> Response:
            if not req.truncate:  # the same check as /embed: a text past the model's limit is a 413
                await self._tokenized(Inputs(texts=req.texts), False, "inputs", req.prompt_name)
            return await self._respond(lambda: schemas.tokens_body(self._tokens(req)))

        return await self.answer(request, schemas.parse_tokenize, handle)

    def _tokens(self, req: schemas.TokenizeRequest) -> list[list[dict[str, Any]]]:
        """The tokens the model sees of each text, tokenising only the part of a long text that it keeps."""
        tok = self.encoder.tokenizer
        prompt = self._prompt(req.prompt_name)
        limit = tok.max_length if req.add_special_tokens else tok.max_length - len(tok.backend.encode("").ids)
        rows = []
        for text in req.texts:
            tokens = tok.tokens(prompt + text, add_special_tokens=req.add_special_tokens)
            rows.append(schemas.token_list(tokens, len(prompt), limit))
        return rows

    async def health(self, request: Request) -> Response:
        """``GET /health``: 200 while the engine's worker runs and its last step gave finite vectors, else 503."""
        for batcher in self.batchers:
            if not batcher.alive:
                error = RequestError("the engine worker has stopped; restart the server", status=503)
                return error_response(request.url.path, error)
            if batcher.nonfinite is not None:
                return error_response(request.url.path, RequestError(batcher.nonfinite, status=503))
        return JSONResponse({"status": "ok"})

    async def info(self, request: Request) -> Response:
        """``GET /info``: the model, the devices and the batching limits (TEI's field names where they exist)."""
        from gte_jax import __version__

        s = self.settings
        model = self.encoder if self.encoder is not None else self.rerank.reranker  # type: ignore[union-attr]
        devices = list(model.mesh.devices.flat)
        model_type: dict[str, Any] = {}
        if self.encoder is not None:
            model_type["embedding"] = {"pooling": self.encoder.pooling, "dimension": self.encoder.dim}
        if self.rerank is not None:
            rr = self.rerank.reranker
            model_type["reranker"] = {
                "id2label": dict(enumerate(rr.labels)),
                "activation": rr.activation,
                "model_id": s.reranker_id,
                "served_model_name": s.served_reranker_name,
                "max_input_length": rr.max_length,
            }
        return JSONResponse(
            {
                "model_id": s.model_id,
                "served_model_name": s.served_model_name,
                "model_dtype": s.dtype,
                "model_type": model_type,
                "dimension": model.dim,
                "max_input_length": model.max_length,
                "vocab_size": self.limits.vocab_size,
                "auto_truncate": True,
                "platform": devices[0].platform,
                "devices": [str(d) for d in devices],
                "max_batch_tokens": model.max_batch_tokens,
                "step_batch_size": model.batch_size,
                "max_client_batch_size": s.max_client_batch_size,
                "max_concurrent_requests": s.max_concurrent_requests,
                "payload_limit": s.payload_limit,
                "round_steps": s.round_steps,
                "warmed_up": s.warmed_up,
                "version": __version__,
            }
        )

    async def models(self, request: Request) -> Response:
        """``GET /v1/models``: OpenAI's model list, with the one served model."""
        model = {"id": self.settings.served_model_name, "object": "model", "created": 0, "owned_by": "gte-jax"}
        return JSONResponse({"object": "list", "data": [model]})

    async def prometheus(self, request: Request) -> Response:
        """``GET /metrics``: Prometheus text format."""
        body, content_type = self.metrics.render()
        return Response(body, headers={"Content-Type": content_type})


def create_app(encoder: Any, settings: Settings, reranker: Any = None) -> Starlette:
    """The ASGI app serving ``encoder`` (a :class:`~gte_jax.GTEEncoder`, or None) and ``reranker`` (a
    :class:`~gte_jax.GTEReranker`, or None); their batchers run between startup and shutdown (the ASGI
    lifespan), and shutdown finishes the queued work first.
    """
    server = Server(encoder, settings, reranker)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for batcher in server.batchers:
            batcher.start()
        try:
            yield
        finally:
            for batcher in server.batchers:
                await run_in_threadpool(batcher.close)

    table: list[tuple[str, str, Callable[[Request], Awaitable[Response]]]] = []
    if encoder is not None:
        table += [
            ("POST", "/v1/embeddings", server.openai_embeddings),
            ("POST", "/embeddings", server.openai_embeddings),
            ("POST", "/embed", server.embed),
            ("POST", "/tokenize", server.tokenize),
        ]
    if server.rerank is not None:
        table += [
            ("POST", "/rerank", server.rerank.tei_rerank),
            ("POST", "/predict", server.rerank.predict),
            ("POST", "/v1/rerank", server.rerank.cohere_rerank),
        ]
    table += [
        ("GET", "/health", server.health),
        ("GET", "/info", server.info),
        ("GET", "/metrics", server.prometheus),
        ("GET", "/v1/models", server.models),
    ]
    routes = [Route(path, endpoint, methods=[method]) for method, path, endpoint in table]
    paths = frozenset(path for _, path, _ in table)
    listing = ", ".join(f"{method} {path}" for method, path, _ in table)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = f"{exc.detail}: {request.method} {request.url.path}"
        if exc.status_code == 404:
            message += f"; this server has {listing}"
        elif exc.status_code == 405:
            message += f"; use {exc.headers.get('Allow', '') if exc.headers else ''}"
        return error_response(request.url.path, RequestError(message, status=exc.status_code))

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(Observe, metrics=server.metrics, routes=paths),
            Middleware(Authenticate, api_key=settings.api_key),
        ],
        exception_handlers={HTTPException: http_error},
    )
    app.state.server = server
    return app
