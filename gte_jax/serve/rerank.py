"""The reranking routes of ``gte-jax serve``: TEI's ``POST /rerank`` and ``POST /predict``, and the Cohere/Jina
``POST /v1/rerank``, over a :class:`~gte_jax.GTEReranker`.

Pairs go the embedding routes' way: body read and admitted by the :class:`~gte_jax.serve.app.Server`,
tokenised on a worker thread (:meth:`Tokenizer.pairs`), queued in a batcher of their own that runs the
engine's plan in fair rounds, answered with the checkpoint's activation unless raw scores are asked for.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gte_jax.engine.reranker import activate
from gte_jax.serve.http import CLIENT_CLOSED
from gte_jax.serve.schemas import (
    Limits,
    RequestError,
    _bool,
    _check_text,
    _dumps,
    _is_int,
    _string,
    _too_many,
    given,
    kind,
)

if TYPE_CHECKING:
    from gte_jax.engine.reranker import GTEReranker
    from gte_jax.serve.app import Server


@dataclasses.dataclass(frozen=True)
class PairsRequest:
    """Pairs to score, as every reranking route reduces to: one query with documents, or free pairs."""

    pairs: list[tuple[str, str]]
    raw_scores: bool = False
    truncate: bool = True
    return_text: bool = False
    top_n: int | None = None
    model: str | None = None


def _texts(value: Any, field: str, limits: Limits, *, objects: bool = False) -> list[str]:
    """A non-empty list of strings (or, with ``objects``, of ``{"text": ...}`` objects, as Cohere allows)."""
    if not isinstance(value, list) or not value:
        what = "missing" if value is None else f"{kind(value)}" if not isinstance(value, list) else "an empty list"
        raise RequestError(f"`{field}` is {what}; send a non-empty list of strings", param=field)
    _too_many(len(value), field, limits)
    out = []
    for i, item in enumerate(value):
        if objects and isinstance(item, dict):
            item = item.get("text")
        if not isinstance(item, str):
            raise RequestError(f"`{field}[{i}]` is {kind(item)}; send a string", param=field)
        _check_text(item, f"{field}[{i}]")
        out.append(item)
    return out


def _query(body: dict[str, Any]) -> str:
    query = _string(body, "query")
    if query is None:
        raise RequestError("`query` is missing; send the query as a string", param="query")
    return query


def parse_tei_rerank(body: dict[str, Any], limits: Limits) -> PairsRequest:
    """TEI's ``/rerank``: ``{"query", "texts", "raw_scores", "return_text", "truncate"}``."""
    query = _query(body)
    texts = _texts(body.get("texts"), "texts", limits)
    return PairsRequest(
        [(query, t) for t in texts],
        raw_scores=_bool(body, "raw_scores", False),
        truncate=_bool(body, "truncate", True),
        return_text=_bool(body, "return_text", False),
    )


def parse_predict(body: dict[str, Any], limits: Limits) -> PairsRequest:
    """TEI's ``/predict``: ``{"inputs": [a, b] | [[a, b], ...], "raw_scores", "truncate"}``."""
    value = body.get("inputs")
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RequestError(
            f"`inputs` is {kind(value) if value is not None else 'missing'}; send a pair [text, text] or a list of "
            "pairs",
            param="inputs",
        )
    _too_many(len(value), "inputs", limits)
    pairs = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(t, str) for t in pair):
            raise RequestError(f"`inputs[{i}]` is {given(pair)}; each input is a pair of two strings", param="inputs")
        for j, t in enumerate(pair):
            _check_text(t, f"inputs[{i}][{j}]")
        pairs.append((pair[0], pair[1]))
    return PairsRequest(pairs, raw_scores=_bool(body, "raw_scores", False), truncate=_bool(body, "truncate", True))


def parse_cohere(body: dict[str, Any], limits: Limits) -> PairsRequest:
    """The Cohere/Jina ``/v1/rerank``: ``{"model", "query", "documents", "top_n", "return_documents"}``."""
    query = _query(body)
    documents = _texts(body.get("documents"), "documents", limits, objects=True)
    top_n = body.get("top_n")
    if top_n is not None and (not _is_int(top_n) or top_n < 1):
        raise RequestError(f"`top_n` must be a positive integer, not {given(top_n)}", param="top_n")
    return PairsRequest(
        [(query, d) for d in documents],
        return_text=_bool(body, "return_documents", False),
        top_n=top_n,
        model=_string(body, "model"),
    )


def _ranked(scores: np.ndarray, top_n: int | None) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    return [int(i) for i in order[: top_n if top_n is not None else len(order)]]


class RerankRoutes:
    """The routes over ``reranker``, sharing ``server``'s body limits, admission, metrics and error bodies."""

    def __init__(self, server: Server, reranker: GTEReranker):
        from gte_jax.serve.batcher import Batcher

        self.server = server
        self.reranker = reranker
        self.batcher = Batcher(reranker, round_steps=server.settings.round_steps, metrics=server.metrics)
        self.limits = Limits(
            dim=reranker.dim,
            max_length=reranker.max_length,
            vocab_size=reranker.config.vocab_size,
            max_client_batch_size=server.settings.max_client_batch_size,
        )

    def _token_ids(self, req: PairsRequest, field: str) -> list[np.ndarray]:
        tok = self.reranker.tokenizer
        ids = tok.pairs(req.pairs)
        if not req.truncate:
            limit = tok.max_length
            over = tok.truncated(req.pairs, ids)
            if over:
                raise RequestError(
                    f"`{field}[{over[0]}]` with the query is longer than this model's limit of {limit} tokens and "
                    '`truncate` is false; send "truncate": true to score its first tokens, or shorten it',
                    param=field,
                    status=413,
                )
        return ids

    async def _scores(self, request: Request, req: PairsRequest, field: str) -> tuple[np.ndarray | None, int]:
        """``[pairs, labels]`` scores (activated unless ``raw_scores``; None if the client left) and the tokens
        the pairs took."""
        ids = await run_in_threadpool(self._token_ids, req, field)
        logits = await self.server.run_job(request, self.batcher, ids, normalize=False)
        tokens = sum(len(t) for t in ids)
        if logits is None:
            return None, tokens
        return (logits if req.raw_scores else activate(logits, self.reranker.activation)), tokens

    def _one_label(self) -> None:
        if self.reranker.num_labels != 1:
            raise RequestError(
                f"this model gives {self.reranker.num_labels} labels per pair, not one relevance score; use /predict",
                status=422,
            )

    async def tei_rerank(self, request: Request) -> Response:
        """TEI's ``POST /rerank`` -> ``[{"index", "score"[, "text"]}]``, best first."""

        async def handle(req: PairsRequest) -> Response:
            self._one_label()
            scores, _ = await self._scores(request, req, "texts")
            if scores is None:
                return Response(status_code=CLIENT_CLOSED)
            rows = [
                {"index": i, "score": float(scores[i, 0]), **({"text": req.pairs[i][1]} if req.return_text else {})}
                for i in _ranked(scores[:, 0], None)
            ]
            return Response(_dumps(rows), media_type="application/json")

        return await self.server.answer(request, parse_tei_rerank, handle)

    async def predict(self, request: Request) -> Response:
        """TEI's ``POST /predict`` -> per pair ``[{"label", "score"}]``, best label first."""
        labels = self.reranker.labels

        async def handle(req: PairsRequest) -> Response:
            scores, _ = await self._scores(request, req, "inputs")
            if scores is None:
                return Response(status_code=CLIENT_CLOSED)
            rows = [[{"label": labels[j], "score": float(row[j])} for j in _ranked(row, None)] for row in scores]
            return Response(_dumps(rows), media_type="application/json")

        return await self.server.answer(request, parse_predict, handle)

    async def cohere_rerank(self, request: Request) -> Response:
        """``POST /v1/rerank`` (Cohere, Jina) -> ``{"results": [{"index", "relevance_score"[, "document"]}], ...}``."""

        async def handle(req: PairsRequest) -> Response:
            self._one_label()
            scores, tokens = await self._scores(request, req, "documents")
            if scores is None:
                return Response(status_code=CLIENT_CLOSED)
            results = []
            for i in _ranked(scores[:, 0], req.top_n):
                item: dict[str, Any] = {"index": i, "relevance_score": float(scores[i, 0])}
                if req.return_text:
                    item["document"] = {"text": req.pairs[i][1]}
                results.append(item)
            body = {
                "results": results,
                "model": req.model or self.server.settings.served_reranker_name,
                "usage": {"total_tokens": tokens},
            }
            return Response(_dumps(body), media_type="application/json")

        return await self.server.answer(request, parse_cohere, handle)
