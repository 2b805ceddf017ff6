"""``gte-jax serve``: a real server process, real clients (openai, LangChain, LlamaIndex, httpx), real weights.

Every vector that comes back is checked against in-process ``GTEEncoder.encode`` of the same texts.
The servers start with ``--no-warmup`` (compiling every batch shape up front takes about a minute
on 2 cores) and share a JAX compilation cache, so each shape compiles once for the whole file.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import random
import socket
import subprocess
import threading
import time
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from langchain_openai import OpenAIEmbeddings
from llama_index.embeddings.openai_like import OpenAILikeEmbedding
from serve_server import ServeProcess, serve_command

from gte_jax.serve import defaults
from gte_jax.serve.cli import _bind

from checkpoints import TINY, torch_bert, write_checkpoint
from processes import free_port

pytestmark = pytest.mark.slow  # real server processes: each starts in seconds

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
NAME = "minilm"
TIMEOUT = 120.0  # seconds, for every client call: a test fails, it never hangs
TEXTS = [
    "what is a tensor?",
    "A tensor is a multi-dimensional array of numbers, generalising vectors and matrices.",
    "Paris est la capitale de la France 🗼",
    "",
    "Photosynthesis converts light energy into chemical energy.",
]
LONG = " ".join(["the quick brown fox jumps over the lazy dog"] * 40)  # ~360 tokens: past MiniLM's 256
# A request that keeps the engine busy for seconds: 48 texts of 256 tokens.
BIG = [f"document {i}: {LONG}" for i in range(48)]


def close(got, expected) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=np.float32), expected, atol=1e-5, rtol=0)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def serve_dirs(tmp_path_factory) -> dict[str, str]:
    return {
        "log_dir": str(tmp_path_factory.mktemp("serve-logs")),
        "cache_dir": str(tmp_path_factory.mktemp("serve-jax-cache")),
    }


@dataclasses.dataclass
class Servers:
    # --api-key, --max-client-batch-size 64, --body-timeout 5: most tests. --round-steps 64: a request queued
    # behind the big one waits for all of its steps (a client can leave before its inputs run).
    main: ServeProcess
    busy: ServeProcess  # --max-concurrent-requests 1: back-pressure; no --served-model-name
    fair: ServeProcess  # the default --round-steps, on MiniLM with a "passage" prompt


PASSAGE = "passage: "


@pytest.fixture(scope="module")
def servers(minilm_dir, minilm_with_prompts, serve_dirs) -> Servers:
    main = ServeProcess(
        minilm_dir,
        "--no-warmup",
        "--api-key",
        KEY,
        "--max-client-batch-size",
        "64",
        "--served-model-name",
        NAME,
        "--round-steps",
        "64",
        "--body-timeout",
        "5",
        **serve_dirs,
    )
    busy = ServeProcess(minilm_dir, "--no-warmup", "--max-concurrent-requests", "1", **serve_dirs)
    fair = ServeProcess(minilm_with_prompts({"passage": PASSAGE}), "--no-warmup", **serve_dirs)
    try:
        main.wait_ready()
        busy.wait_ready()
        fair.wait_ready()
        yield Servers(main, busy, fair)
    finally:
        main.stop()
        busy.stop()
        fair.stop()


@pytest.fixture(scope="module")
def server(servers) -> ServeProcess:
    return servers.main


@pytest.fixture(scope="module")
def ref(minilm) -> dict[str, np.ndarray]:
    """In-process vectors: the truth every response is held to."""
    return {
        "texts": minilm.encode(TEXTS + [LONG]),
        "raw": minilm.encode(TEXTS[:2], normalize=False),
        "big": minilm.encode(BIG),
    }


class Recorder:
    """httpx event hook: keeps the JSON bodies a client sends."""

    def __init__(self):
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> None:
        self.bodies.append(json.loads(request.content))


def test_openai_client_base64_float_dimensions_and_token_ids(server, minilm, ref):
    sent = Recorder()
    http = httpx.Client(timeout=TIMEOUT, event_hooks={"request": [sent]})
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, http_client=http, max_retries=0)
    texts = TEXTS + [LONG]

    default = client.embeddings.create(model=NAME, input=texts)  # the client asks for base64 itself
    assert sent.bodies[-1]["encoding_format"] == "base64"
    close([d.embedding for d in default.data], ref["texts"])
    assert [d.index for d in default.data] == list(range(len(texts)))
    assert default.model == NAME
    tokens = sum(len(t) for t in minilm.tokenize(texts))  # LONG counts as its 256 kept tokens
    assert default.usage.prompt_tokens == default.usage.total_tokens == tokens

    floats = client.embeddings.create(model="any-name", input=texts, encoding_format="float")
    close([d.embedding for d in floats.data], ref["texts"])
    assert floats.model == "any-name"  # accepted and echoed

    short = client.embeddings.create(model=NAME, input=texts, dimensions=64)
    close([d.embedding for d in short.data], unit(ref["texts"][:, :64]))

    one = client.embeddings.create(model=NAME, input=TEXTS[0])
    close([one.data[0].embedding], ref["texts"][:1])

    ids = [t.tolist() for t in minilm.tokenize(texts)]
    by_ids = client.embeddings.create(model=NAME, input=ids)
    close([d.embedding for d in by_ids.data], ref["texts"])
    single_ids = client.embeddings.create(model=NAME, input=ids[0])
    close([single_ids.data[0].embedding], ref["texts"][:1])

    # Without the /v1 prefix too, as TEI serves it; base64 is little-endian float32.
    r = httpx.post(
        f"{server.url}/embeddings", json={"input": texts, "encoding_format": "base64"}, headers=AUTH, timeout=TIMEOUT
    )
    assert r.status_code == 200, r.text
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in r.json()["data"]]
    close(decoded, ref["texts"])


def test_langchain_openai_embeddings(server, ref):
    emb = OpenAIEmbeddings(
        base_url=f"{server.url}/v1",
        api_key=KEY,
        model=NAME,
        check_embedding_ctx_length=False,
        max_retries=0,
        timeout=TIMEOUT,
    )
    close(emb.embed_documents(TEXTS), ref["texts"][: len(TEXTS)])
    close([emb.embed_query(TEXTS[0])], ref["texts"][:1])
    close(asyncio.run(emb.aembed_documents(TEXTS[:3])), ref["texts"][:3])


def test_llama_index_openai_like_embedding(server, ref):
    emb = OpenAILikeEmbedding(
        model_name=NAME, api_base=f"{server.url}/v1", api_key=KEY, embed_batch_size=3, max_retries=0, timeout=TIMEOUT
    )
    close(emb.get_text_embedding_batch(TEXTS), ref["texts"][: len(TEXTS)])
    close([emb.get_query_embedding(TEXTS[1])], ref["texts"][1:2])


def test_tei_embed_and_tokenize(server, minilm, ref):
    texts = TEXTS + [LONG]
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=TIMEOUT) as c:

        def post(path: str, body: dict[str, Any]) -> Any:
            r = c.post(path, json=body)
            assert r.status_code == 200, r.text
            return r.json()

        close(post("/embed", {"inputs": texts}), ref["texts"])  # LONG is truncated, as encode truncates it
        close(post("/embed", {"inputs": TEXTS[0]}), ref["texts"][:1])
        raw = ref["raw"]
        close(post("/embed", {"inputs": TEXTS[:2], "normalize": False}), raw)
        close(post("/embed", {"inputs": TEXTS[:2], "normalize": False, "dimensions": 32}), raw[:, :32])
        close(post("/embed", {"inputs": TEXTS[:2], "dimensions": 32}), unit(raw[:, :32]))
        ids = [t.tolist() for t in minilm.tokenize(texts)]
        close(post("/embed", {"inputs": ids, "truncate": True}), ref["texts"])

        tokens = post("/tokenize", {"inputs": texts})
        assert [[t["id"] for t in row] for row in tokens] == ids
        first = tokens[0]
        assert first[0] == {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None}
        assert first[1]["text"] == "what" and (first[1]["start"], first[1]["stop"]) == (0, 4)
        bare = post("/tokenize", {"inputs": TEXTS[0], "add_special_tokens": False})
        assert [t["id"] for t in bare[0]] == ids[0][1:-1]


def test_health_info_models_metrics_and_auth(server):
    assert httpx.get(f"{server.url}/health", timeout=TIMEOUT).status_code == 200  # no key needed
    metrics = httpx.get(f"{server.url}/metrics", timeout=TIMEOUT)
    assert metrics.status_code == 200 and "gte_jax_requests_total" in metrics.text
    assert metrics.headers["content-type"].startswith("text/plain")
    assert httpx.get(f"{server.url}/info", timeout=TIMEOUT).status_code == 401
    info = httpx.get(f"{server.url}/info", headers=AUTH, timeout=TIMEOUT).json()
    assert info["dimension"] == 384 and info["max_input_length"] == 256 and info["model_dtype"] == "float32"
    assert info["served_model_name"] == NAME and info["max_client_batch_size"] == 64
    assert info["platform"] and len(info["devices"]) >= 1 and info["version"]
    models = httpx.get(f"{server.url}/v1/models", headers=AUTH, timeout=TIMEOUT).json()
    assert [m["id"] for m in models["data"]] == [NAME]


def test_concurrent_clients_each_get_their_own_vectors(server, minilm, sts_test):
    s1, s2, _ = sts_test
    tokens = minilm.tokenize(s1 + s2)
    pool = [t for t, ids in zip(s1 + s2, tokens, strict=True) if len(ids) <= 32]  # buckets 16-32: few shapes
    rng = random.Random(0)
    clients = 40
    requests = [rng.sample(pool, rng.randint(1, 32)) for _ in range(clients)]
    expected = dict(zip(pool, minilm.encode(pool), strict=True))
    before = server.metrics()
    start = threading.Barrier(clients)
    results: list[Any] = [None] * clients

    def client(i: int) -> None:
        try:
            with httpx.Client(base_url=server.url, headers=AUTH, timeout=TIMEOUT) as c:
                start.wait(timeout=TIMEOUT)
                if i % 2:
                    r = c.post("/embed", json={"inputs": requests[i]})
                else:
                    r = c.post("/v1/embeddings", json={"input": requests[i], "model": NAME})
                body = r.json()
                if r.status_code == 200 and not i % 2:
                    body = [d["embedding"] for d in body["data"]]
                results[i] = (r.status_code, body)
        except Exception as e:  # reported below, with the others
            results[i] = (None, repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT + 30)
    failed = [(i, r) for i, r in enumerate(results) if r is None or r[0] != 200]
    assert not failed, f"{len(failed)} of {clients} requests failed: {failed[:3]}"
    for i, (_, vectors) in enumerate(results):
        close(vectors, np.stack([expected[t] for t in requests[i]]))

    after = server.metrics()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("gte_jax_requests_total", route="/v1/embeddings", status="200") == clients // 2
    assert delta("gte_jax_requests_total", route="/embed", status="200") == clients - clients // 2
    inputs = sum(len(r) for r in requests)
    assert delta("gte_jax_inputs_total") == delta("gte_jax_batch_inputs_sum") == inputs  # each through the engine once
    single = delta("gte_jax_batch_requests_bucket", le="1.0")  # engine calls that served one request
    assert single < delta("gte_jax_batch_requests_count"), "no engine call served more than one request"


@dataclasses.dataclass
class Bad:
    """A bad request and the answer it must get."""

    name: str
    path: str
    status: int
    fragment: str  # in the error message
    json: Any = None
    content: bytes | None = None
    method: str = "POST"
    headers: dict[str, str] | None = None  # None: the right API key
    busy: bool = False  # sent to the busy server while a big request holds its only place


V1 = "/v1/embeddings"
BAD = [
    Bad("malformed JSON", V1, 400, "not valid JSON", content=b'{"input": ["a"'),
    Bad("body not an object", V1, 400, "JSON object", content=b'["a"]'),
    Bad("input missing", V1, 400, "`input` is missing", json={"model": NAME}),
    Bad("input a number", V1, 400, "`input` must be", json={"input": 3}),
    Bad("input null", V1, 400, "`input` is missing", json={"input": None}),
    Bad("non-string in the texts", V1, 400, "`input[1]` is a number", json={"input": ["a", 3]}),
    Bad("empty input list", V1, 400, "`input` is an empty list", json={"input": []}),
    Bad("dimensions 0", V1, 400, "`dimensions`", json={"input": "a", "dimensions": 0}),
    Bad("dimensions past the model", V1, 400, "1 to 384", json={"input": "a", "dimensions": 385}),
    Bad("dimensions a string", V1, 400, "`dimensions`", json={"input": "a", "dimensions": "64"}),
    Bad("encoding_format", V1, 400, "`encoding_format`", json={"input": "a", "encoding_format": "int8"}),
    Bad("model not a string", V1, 400, "`model`", json={"input": "a", "model": 7}),
    Bad("token id past the vocabulary", V1, 400, "`input[0][1]`", json={"input": [[101, 30522, 102]]}),
    Bad("negative token id", V1, 400, "`input[1]` = -1", json={"input": [101, -1, 102]}),
    Bad("empty token-id list", V1, 400, "`input[1]` is an empty list", json={"input": [[101], []]}),
    Bad("lone surrogate", V1, 400, "lone surrogate", content=b'{"input": ["ok", "bad \\ud800"]}'),
    Bad("body over --payload-limit", V1, 413, "--payload-limit", content=b'"' + b"a" * 2_100_000 + b'"'),
    Bad("more inputs than allowed", V1, 413, "--max-client-batch-size", json={"input": ["a"] * 65}),
    Bad("no API key", V1, 401, "API key", json={"input": "a"}, headers={}),
    Bad("wrong API key", "/embed", 401, "API key", json={"inputs": "a"}, headers={"Authorization": "Bearer nope"}),
    Bad("TEI inputs missing", "/embed", 422, "`inputs` is missing", json={"input": "a"}),
    Bad("TEI normalize not a boolean", "/embed", 422, "`normalize`", json={"inputs": "a", "normalize": "yes"}),
    Bad("TEI dimensions negative", "/embed", 422, "`dimensions`", json={"inputs": "a", "dimensions": -1}),
    Bad("TEI prompt_name", "/embed", 422, "not one of this model", json={"inputs": "a", "prompt_name": "query"}),
    Bad("TEI too long", "/embed", 413, "`inputs[1]` is longer", json={"inputs": ["a", LONG], "truncate": False}),
    Bad("TEI ids too long", "/embed", 413, "`inputs[0]` is longer", json={"inputs": [[101] * 300], "truncate": False}),
    Bad("tokenize inputs missing", "/tokenize", 422, "`inputs` is missing", json={}),
    Bad(
        "tokenize too long", "/tokenize", 413, "`inputs[1]` is longer", json={"inputs": ["a", LONG], "truncate": False}
    ),
    Bad(
        "model a lone surrogate",
        V1,
        400,
        "`model` holds a lone surrogate",
        content=b'{"input": "a", "model": "\\ud800"}',
    ),
    Bad(
        "prompt_name a lone surrogate",
        "/embed",
        422,
        "`prompt_name` holds",
        content=b'{"inputs": "a", "prompt_name": "\\udfff"}',
    ),
    Bad("dimensions true", V1, 400, "384 (this model's dimension), not true", json={"input": "a", "dimensions": True}),
    Bad("dimensions [null]", "/embed", 422, "not [null]", json={"inputs": "a", "dimensions": [None]}),
    Bad("encoding_format in JSON", V1, 400, 'not "int8"', json={"input": "a", "encoding_format": "int8"}),
    Bad(
        "truncation_direction",
        "/embed",
        422,
        '`truncation_direction` "Left"',
        json={"inputs": "a", "truncation_direction": "Left"},
    ),
    Bad(
        "a number of 5000 digits",
        V1,
        400,
        "thousands of digits",
        content=b'{"input": "a", "dimensions": ' + b"9" * 5000 + b"}",
    ),
    Bad(
        "a gzip body",
        V1,
        415,
        "Content-Encoding gzip is not supported",
        content=b"\x1f\x8b\x08\x00",
        headers={**AUTH, "Content-Encoding": "gzip"},
    ),
    Bad("a body not UTF-8", V1, 400, "not UTF-8 text (byte 0x8b at offset 1)", content=b"\x1f\x8b\x08\x00"),
    Bad("unknown route", "/v2/embeddings", 404, "Not Found", json={"input": "a"}),
    Bad("wrong method", V1, 405, "use POST", method="GET"),
    Bad("busy", V1, 429, "--max-concurrent-requests", json={"input": "a"}, busy=True),
]


def _in_engine(srv: ServeProcess):
    """A condition on ``srv``'s metrics: a request (the big one) has left the queue for the engine and is not done."""
    key = ("gte_jax_stage_duration_seconds_count", (("stage", "queue"),))
    taken = srv.metrics().get(key, 0)
    return lambda m: m.get(key, 0) > taken and m[("gte_jax_requests_in_flight", ())] >= 1


def _post_big(url: str, headers: dict[str, str], out: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        try:
            r = httpx.post(f"{url}/v1/embeddings", json={"input": BIG}, headers=headers, timeout=TIMEOUT)
            out["status"], out["body"] = r.status_code, r.json()
        except Exception as e:
            out["status"], out["body"] = None, repr(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_every_bad_request_gets_its_4xx_and_the_server_keeps_serving(servers, ref):
    mismatches = []
    for bad in BAD:
        srv = servers.busy if bad.busy else servers.main
        headers = (AUTH if srv is servers.main else {}) if bad.headers is None else bad.headers
        big: dict[str, Any] = {}
        if bad.busy:
            in_engine = _in_engine(srv)
            thread = _post_big(srv.url, headers, big)
            srv.wait_for(in_engine, what="the big request to reach the engine")
        r = httpx.request(
            bad.method, f"{srv.url}{bad.path}", json=bad.json, content=bad.content, headers=headers, timeout=TIMEOUT
        )
        body = r.json()
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else error  # OpenAI's shape, else TEI's
        if r.status_code != bad.status or not isinstance(message, str) or bad.fragment not in message:
            mismatches.append(f"{bad.name}: wanted {bad.status} with {bad.fragment!r}, got {r.status_code} {body}")
        if bad.busy:
            thread.join(TIMEOUT)
            if big.get("status") != 200:
                mismatches.append(f"{bad.name}: the big request got {big.get('status')} {str(big.get('body'))[:300]}")
        good = httpx.post(
            f"{srv.url}/v1/embeddings",
            json={"input": [TEXTS[0]]},
            headers=AUTH if srv is servers.main else {},
            timeout=TIMEOUT,
        )
        if good.status_code != 200:
            mismatches.append(f"after {bad.name}: a good request got {good.status_code} {good.text[:300]}")
        else:
            close([good.json()["data"][0]["embedding"]], ref["texts"][:1])
    assert not mismatches, "\n".join(mismatches)


def test_a_client_that_leaves_frees_its_queued_inputs(server, ref):
    big: dict[str, Any] = {}
    in_engine = _in_engine(server)
    thread = _post_big(server.url, AUTH, big)
    server.wait_for(in_engine, what="the big request to reach the engine")
    cancelled = server.metric("gte_jax_cancelled_inputs_total")
    closed = server.metric("gte_jax_requests_total", route="/v1/embeddings", status="499")
    queued = json.dumps({"input": [f"queued text {i}" for i in range(20)]}).encode()
    head = (
        "POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Length: {len(queued)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(head.encode() + queued)
        server.wait_for(lambda m: m[("gte_jax_queue_inputs", ())] == 20, what="20 inputs waiting behind the big ones")
    # The client is gone before the engine got to its inputs: they are dropped, never embedded.
    server.wait_for(
        lambda m: m[("gte_jax_cancelled_inputs_total", ())] == cancelled + 20, what="the 20 queued inputs to be dropped"
    )
    thread.join(TIMEOUT)
    assert big["status"] == 200, big["body"]
    close([d["embedding"] for d in big["body"]["data"]], ref["big"])
    status = ("gte_jax_requests_total", (("route", "/v1/embeddings"), ("status", "499")))
    server.wait_for(lambda m: m.get(status, 0) == closed + 1, what="the abandoned request to be counted as 499")


def test_sigterm_finishes_the_request_in_flight_then_exits_0(minilm_dir, serve_dirs, ref):
    srv = ServeProcess(minilm_dir, "--no-warmup", **serve_dirs)
    try:
        srv.wait_ready()
        big: dict[str, Any] = {}
        in_engine = _in_engine(srv)
        thread = _post_big(srv.url, {}, big)
        srv.wait_for(in_engine, what="the big request to reach the engine")
        srv.terminate()
        time.sleep(1.0)
        with pytest.raises(httpx.ConnectError):  # no longer accepting
            httpx.get(f"{srv.url}/health", timeout=5.0)
        thread.join(TIMEOUT)
        assert big["status"] == 200, big["body"]
        close([d["embedding"] for d in big["body"]["data"]], ref["big"])
        assert srv.proc.wait(60) == 0, srv.log()[-3000:]
    finally:
        srv.stop()


# ---- the engine's plan, fairness ------------------------------------------------------------------------------

STEPS = ("gte_jax_engine_steps_total", ())
PADDED = ("gte_jax_padded_tokens_total", ())
SENTENCE = "a fairly ordinary sentence about tensors, matrices and the people who multiply them together"


def _post(url: str, path: str, body: dict[str, Any], out: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        try:
            r = httpx.post(f"{url}{path}", json=body, timeout=TIMEOUT)
            out["status"], out["body"] = r.status_code, r.json()
        except Exception as e:
            out["status"], out["body"] = None, repr(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_the_server_runs_the_steps_the_engine_plans(servers, minilm):
    # 20 queued inputs of 38, 20 and 10 tokens: the batcher once counted one step, the engine then ran its own.
    ids = [[101] + [2000] * 36 + [102]] * 4 + [[101] + [2001] * 18 + [102]] * 8 + [[101] + [2002] * 8 + [102]] * 8
    plan = minilm.plan([np.asarray(t, dtype=np.int32) for t in ids])
    before = servers.fair.metrics()
    r = httpx.post(f"{servers.fair.url}/v1/embeddings", json={"input": ids}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    after = servers.fair.metrics()
    assert after[STEPS] - before[STEPS] == len(plan)
    assert after[PADDED] - before[PADDED] == sum(b.rows * b.length for b in plan)
    close([d["embedding"] for d in r.json()["data"]], minilm.encode_tokens([np.asarray(t) for t in ids]))


def test_a_one_text_request_waits_a_few_steps_not_for_a_big_request(servers, minilm):
    srv = servers.fair
    big_texts = [f"{i}: {SENTENCE}" for i in range(2048)]
    big_steps = len(minilm.plan(minilm.tokenize(big_texts)))
    assert big_steps > 4 * (defaults.ROUND_STEPS + 2)  # else the test could not tell fair from first-come
    start = srv.metrics()[STEPS]
    big: dict[str, Any] = {}
    thread = _post(srv.url, "/v1/embeddings", {"input": big_texts}, big)
    srv.wait_for(lambda m: m[STEPS] > start, what="the big request's first step")
    sent = srv.metrics()[STEPS]
    r = httpx.post(f"{srv.url}/embed", json={"inputs": TEXTS[0]}, timeout=TIMEOUT)
    answered = srv.metrics()[STEPS]
    assert r.status_code == 200, r.text
    close(r.json(), minilm.encode(TEXTS[:1]))
    # The round in progress, then its own step first (slack of one for the metrics read racing the submit).
    assert answered - sent <= defaults.ROUND_STEPS + 2, (sent, answered)
    assert answered - start < big_steps  # the big request was still running
    thread.join(TIMEOUT)
    assert big["status"] == 200, str(big["body"])[:300]
    close([d["embedding"] for d in big["body"]["data"]], minilm.encode(big_texts))


# ---- /tokenize ------------------------------------------------------------------------------------------------


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def test_tokenize_reads_only_what_the_model_keeps(server, minilm):
    # 1.8 MB: 400,000 tokens (tokenised whole, ~240 MB), one 500,000-character word, a text after 500,000 spaces.
    texts = ["a " * 400_000, "x" * 500_000, " " * 500_000 + "the end"]
    before = _peak_rss_mb(server.proc.pid)
    r = httpx.post(f"{server.url}/tokenize", json={"inputs": texts}, headers=AUTH, timeout=TIMEOUT)
    assert r.status_code == 200, r.text[:300]
    assert _peak_rss_mb(server.proc.pid) - before < 150
    rows = r.json()
    assert [[t["id"] for t in row] for row in rows] == [ids.tolist() for ids in minilm.tokenize(texts)]
    spans = [[(t["start"], t["stop"]) for t in row if not t["special"]] for row in rows]
    assert spans[0][-1] == (2 * 253, 2 * 253 + 1)  # the 254th "a"
    assert spans[1] == [(0, 500_000)]  # one [UNK] over the whole word
    assert spans[2] == [(500_000, 500_003), (500_004, 500_007)]


def test_tokenize_offsets_are_in_the_clients_text_and_the_prompt_is_special(servers):
    r = httpx.post(
        f"{servers.fair.url}/tokenize", json={"inputs": ["hello"], "prompt_name": "passage"}, timeout=TIMEOUT
    )
    assert r.status_code == 200, r.text
    tokens = r.json()[0]
    assert [t["text"] for t in tokens] == ["[CLS]", "passage", ":", "hello", "[SEP]"]
    assert [t["special"] for t in tokens] == [True, True, True, False, True]
    assert [(t["start"], t["stop"]) for t in tokens] == [(None, None)] * 3 + [(0, 5), (None, None)]


# ---- names, keys, ports -------------------------------------------------------------------------------------


def test_a_model_directory_is_served_by_its_own_name_not_its_path(servers, minilm_dir):
    busy = servers.busy  # started without --served-model-name
    name = os.path.basename(minilm_dir.rstrip("/"))
    info = httpx.get(f"{busy.url}/info", timeout=TIMEOUT)
    models = httpx.get(f"{busy.url}/v1/models", timeout=TIMEOUT)
    r = httpx.post(f"{busy.url}/v1/embeddings", json={"input": "a"}, timeout=TIMEOUT)
    assert info.json()["served_model_name"] == name and [m["id"] for m in models.json()["data"]] == [name]
    assert r.json()["model"] == name
    for answer in (info, models, r):
        assert minilm_dir not in answer.text


def test_a_second_server_on_a_taken_port_exits_2_naming_it(minilm_dir, tmp_path):
    port = free_port()
    first = _bind("127.0.0.1", port)  # what a first server holds while its model loads
    try:
        done = subprocess.run(
            [*serve_command(), "serve", "--model", minilm_dir, "--port", str(port), "--no-warmup"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=tmp_path,
        )
    finally:
        first.close()
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"port {port}" in done.stderr and "Traceback" not in done.stderr


# ---- slow clients and shutdown ----------------------------------------------------------------------------------


def _stalled(port: int, headers: dict[str, str]) -> socket.socket:
    """A connection that announces a 100-byte body and sends 9 bytes of it."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(
        f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{head}"
        "Content-Length: 100\r\n\r\n".encode()
        + b'{"input":'
    )
    return sock


def test_a_body_that_stops_coming_gets_408(server):
    with _stalled(server.port, AUTH) as sock:
        answer = sock.recv(65536).decode()  # --body-timeout 5
    assert answer.startswith("HTTP/1.1 408"), answer
    assert "--body-timeout" in answer


def test_sigterm_is_not_held_off_by_a_stalled_client(minilm_dir, serve_dirs):
    srv = ServeProcess(
        minilm_dir, "--no-warmup", "--body-timeout", "600", "--graceful-shutdown-timeout", "2", **serve_dirs
    )
    try:
        srv.wait_ready()
        with _stalled(srv.port, {}):
            time.sleep(1.0)  # the server reads the headers and waits for the body
            srv.terminate()
            assert srv.proc.wait(TIMEOUT) == 0, srv.log()[-3000:]
    finally:
        srv.stop()


# ---- a broken model, the warm-up log --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory, minilm_dir) -> str:
    """A real random-init checkpoint with one weight matrix set to NaN."""
    import torch

    model = torch_bert(TINY, seed=3)
    with torch.no_grad():
        model.encoder.layer[-1].output.dense.weight.fill_(float("nan"))
    return write_checkpoint(model, str(tmp_path_factory.mktemp("nan-model")), minilm_dir)


def test_a_nan_model_answers_500_never_nan_and_health_says_why(nan_model, serve_dirs):
    srv = ServeProcess(nan_model, "--max-length", "16", **serve_dirs)  # warms up: 9 shapes
    try:
        srv.wait_ready()
        log = srv.log()
        assert "compiling 9 batch shapes" in log and "--no-warmup" in log and "JAX_COMPILATION_CACHE_DIR" in log
        assert "compiled 9/9 batch shapes" in log
        assert httpx.get(f"{srv.url}/health", timeout=TIMEOUT).status_code == 200
        for path, body in (("/v1/embeddings", {"input": ["a", "b"]}), ("/embed", {"inputs": "a"})):
            r = httpx.post(f"{srv.url}{path}", json=body, timeout=TIMEOUT)
            assert r.status_code == 500, r.text
            assert "NaN or infinite" in r.text
            json.loads(r.text)  # valid JSON
        health = httpx.get(f"{srv.url}/health", timeout=TIMEOUT)
        assert health.status_code == 503 and "NaN or infinite" in health.text
    finally:
        srv.stop()
