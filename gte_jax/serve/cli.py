"""``gte-jax serve``: an OpenAI- and TEI-compatible embedding server with dynamic batching.

Exit codes: 0 after a clean shutdown (SIGTERM or Ctrl-C: it stops accepting, finishes the
requests in flight within ``--graceful-shutdown-timeout``, then exits); 2 for a mistake in the
options, the API key, the model or the port.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING

from gte_jax.argtypes import positive_int
from gte_jax.engine.dtypes import DTYPES
from gte_jax.engine.dtypes import HELP as DTYPES_HELP
from gte_jax.serve import defaults

if TYPE_CHECKING:
    from gte_jax import GTEEncoder, GTEReranker

# Only light standard modules at import time: `gte-jax --help` builds every subcommand's parser.

EPILOG = """\
routes:
  POST /v1/embeddings, /embeddings   OpenAI: {"input": str | [str] | [int] | [[int]], "model", "encoding_format",
                                     "dimensions"}
  POST /embed                        TEI: {"inputs": str | [str], "normalize", "truncate", "dimensions"} -> [[float]]
  POST /tokenize                     TEI: {"inputs": str | [str], "add_special_tokens", "prompt_name", "truncate"}
  GET  /health, /metrics             open even with --api-key (probes, Prometheus)
  GET  /info, /v1/models             the model, devices and limits

examples:
  gte-jax serve --model thenlper/gte-small --port 8080
  gte-jax serve --model thenlper/gte-base --dtype bfloat16 --host 0.0.0.0 --api-key "$KEY"
  curl localhost:8080/v1/embeddings -H 'Content-Type: application/json' -d '{"input": ["what is a tensor?"]}'
"""

API_KEY_ENV = "GTE_JAX_API_KEY"
INSTALL_SERVE = 'pip install ".[serve]" (from the gte-jax checkout)'


def _port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1 to 65535, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve embeddings over HTTP: OpenAI /v1/embeddings and TEI /embed, with dynamic batching",
        description="Serves a GTE (BERT) embedding model over HTTP in the request and response shapes of the "
        "OpenAI embeddings API and Hugging Face text-embeddings-inference. Requests from all clients are "
        "planned into the engine's device steps together and served in fair turns; each vector equals "
        f"GTEEncoder.encode of the same text. Needs the serve extra: {INSTALL_SERVE}.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        default=None,
        help="hub id or local model directory (default: thenlper/gte-small); a cross-encoder (a "
        "*ForSequenceClassification checkpoint) is served as a reranker (/rerank, /predict, /v1/rerank)",
    )
    p.add_argument(
        "--reranker",
        default=None,
        help="a cross-encoder to serve beside --model's embeddings from the same process: TEI's /rerank and "
        "/predict, and the Cohere/Jina /v1/rerank",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=_port, default=8080, help="TCP port (default: 8080)")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help=DTYPES_HELP)
    p.add_argument("--max-length", type=positive_int, default=None, help="truncate inputs to this many tokens")
    p.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer KEY' on every route but /health and /metrics "
        f"(default: ${API_KEY_ENV}, else no key)",
    )
    p.add_argument(
        "--served-model-name",
        default=None,
        help="the model name in /info, /v1/models and responses (default: the hub id, or a directory's own name)",
    )
    b = p.add_argument_group("batching and limits")
    b.add_argument(
        "--max-batch-tokens",
        type=positive_int,
        default=None,
        help="most padded tokens of one device step (default: the backend's, 1024 on CPU and 65536 on GPU/TPU)",
    )
    b.add_argument(
        "--round-steps",
        type=positive_int,
        default=defaults.ROUND_STEPS,
        help="most device steps the engine runs before it turns to newly queued requests; each queued request "
        "gets a step in turn, so one waits at most this many steps plus one per request queued before it "
        f"(default: {defaults.ROUND_STEPS})",
    )
    b.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="most texts per device step (default: the backend's, 64 on CPU and 256 on GPU/TPU)",
    )
    b.add_argument(
        "--max-client-batch-size",
        type=positive_int,
        default=2048,
        help="most inputs in one request, else 413 (default: 2048, OpenAI's limit)",
    )
    b.add_argument(
        "--max-concurrent-requests",
        type=positive_int,
        default=512,
        help="most requests in flight at once, else 429 (default: 512)",
    )
    b.add_argument(
        "--payload-limit",
        type=positive_int,
        default=2_000_000,
        help="largest request body in bytes, else 413 (default: 2000000)",
    )
    b.add_argument(
        "--body-timeout",
        type=_seconds,
        default=defaults.BODY_TIMEOUT,
        help=f"seconds a client has to send its whole request body, else 408 (default: {defaults.BODY_TIMEOUT:g})",
    )
    b.add_argument(
        "--graceful-shutdown-timeout",
        type=_seconds,
        default=defaults.GRACEFUL_SHUTDOWN_TIMEOUT,
        help="seconds SIGTERM waits for the requests in flight before it cancels them and exits "
        f"(default: {defaults.GRACEFUL_SHUTDOWN_TIMEOUT:g})",
    )
    b.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="start listening at once and compile each batch shape on first use (default: compile them all first)",
    )
    p.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"), help="server log"
    )
    p.set_defaults(func=main)


def _bind(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``: a taken port fails before the model loads.

    It listens at once: with SO_REUSEADDR two sockets may both be bound while neither listens, so a second
    server started during the first one's load would pass a bind-only check and fail later, unseen.
    Connections made during the load wait in the backlog.
    """
    addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = addresses[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may reuse a port in TIME_WAIT
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def api_key(given: str | None, env: dict[str, str]) -> str | None:
    """The key every request must send: ``--api-key``, else ``$GTE_JAX_API_KEY``, else None (no key).

    Raises:
        ValueError: the key is empty or could never match a request's header (whitespace at its ends,
            characters outside printable ASCII).
    """
    source, key = ("--api-key", given) if given is not None else (f"${API_KEY_ENV}", env.get(API_KEY_ENV))
    if key is None:
        return None
    if not key:
        raise ValueError(
            f"{source} is empty, which would leave the server open to anyone; give a key, or leave out "
            f"--api-key and unset ${API_KEY_ENV} to serve without one"
        )
    if key != key.strip():
        raise ValueError(f"{source} starts or ends with whitespace, which no Authorization header keeps; remove it")
    bad = next((c for c in key if not " " < c <= "~"), None)
    if bad is not None:
        raise ValueError(
            f"{source} holds {bad!r}, not a printable ASCII character, which an Authorization header cannot "
            "carry as is; use letters, digits and punctuation only"
        )
    return key


def served_name(model: str) -> str:
    """The model's public name: a hub id as it is, a directory by its own name (never its path)."""
    path = os.path.expanduser(model)
    if os.path.isdir(path):
        return os.path.basename(os.path.normpath(os.path.abspath(path)))
    return model


def _fail(message: str) -> int:
    print(f"gte-jax serve: error: {message}", file=sys.stderr)
    return 2


def main(args: argparse.Namespace) -> int:
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as e:
        return _fail(f"{e.name} is not installed; the server needs the serve extra: {INSTALL_SERVE}")
    import signal
    import time

    try:
        key = api_key(args.api_key, dict(os.environ))
    except ValueError as e:
        return _fail(str(e))
    try:
        sock = _bind(args.host, args.port)
    except OSError as e:
        return _fail(
            f"cannot listen on {args.host}:{args.port} ({e.strerror or e}); another server may hold port "
            f"{args.port}: pick another --port or --host"
        )

    from gte_jax import DEFAULT_MODEL, GTEEncoder, GTEReranker
    from gte_jax.engine import sharding
    from gte_jax.engine.reranker import is_cross_encoder
    from gte_jax.errors import UserError
    from gte_jax.serve.app import Settings, create_app

    log = logging.getLogger("gte_jax.serve")  # its own handler: JAX's INFO lines stay out of the log
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(args.log_level.upper())
    log.propagate = False
    model = args.model or DEFAULT_MODEL
    mesh = sharding.local_mesh()
    loads = dict(
        dtype=args.dtype,
        max_length=args.max_length,
        mesh=mesh,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
    )
    enc: GTEEncoder | None = None
    reranker: GTEReranker | None = None
    began = time.perf_counter()
    try:
        if args.reranker is None and is_cross_encoder(model):
            reranker_name, reranker = model, GTEReranker.from_pretrained(model, **loads)
        else:
            enc = GTEEncoder.from_pretrained(model, **loads)
            reranker_name = args.reranker or ""
            if args.reranker is not None:
                reranker = GTEReranker.from_pretrained(args.reranker, **loads)
    except (UserError, ValueError) as e:
        sock.close()
        return _fail(str(e))
    for what, name, m in (("embeddings", model, enc), ("reranker", reranker_name, reranker)):
        if m is not None:
            log.info(
                "loaded %s %s: %s %d, at most %d tokens, %s, on %d %s device(s) (%.1f s since start)",
                what,
                name,
                "dimension" if what == "embeddings" else "labels",
                m.dim,
                m.max_length,
                args.dtype,
                len(mesh.devices.flat),
                mesh.devices.flat[0].platform,
                time.perf_counter() - began,
            )
    if args.warmup:
        for m in (enc, reranker):
            if m is not None:
                _warm_up(m, log)
    settings = Settings(
        model_id=served_name(model),
        served_model_name=args.served_model_name or served_name(model),
        dtype=args.dtype,
        api_key=key,
        round_steps=args.round_steps,
        max_client_batch_size=args.max_client_batch_size,
        max_concurrent_requests=args.max_concurrent_requests,
        payload_limit=args.payload_limit,
        body_timeout=args.body_timeout,
        warmed_up=args.warmup,
        reranker_id=served_name(reranker_name) if reranker is not None else "",
        served_reranker_name=served_name(reranker_name) if reranker is not None else "",
    )
    config = uvicorn.Config(
        create_app(enc, settings, reranker),
        log_level=args.log_level,
        # SIGTERM: finish the requests in flight, but within a bound (a stalled client cannot hold it off).
        timeout_graceful_shutdown=args.graceful_shutdown_timeout,
    )
    # uvicorn re-raises the signal that stopped it once it has shut down; with these handlers in place
    # that re-raise is a no-op, so a graceful stop exits 0 instead of dying of the signal.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    url = f"http://[{args.host}]:{args.port}" if ":" in args.host else f"http://{args.host}:{args.port}"
    routes = ["OpenAI /v1/embeddings, TEI /embed"] if enc is not None else []
    routes += ["TEI /rerank and /predict, Cohere/Jina /v1/rerank"] if reranker is not None else []
    log.info("serving %s on %s (%s)", settings.served_model_name, url, "; ".join(routes))
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _warm_up(enc: GTEEncoder | GTEReranker, log: logging.Logger) -> None:
    """Compiles every batch shape before listening, logging progress (about a minute on a 2-core CPU)."""
    import time

    began = time.perf_counter()
    said = [began]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if done == 0:
            log.info(
                "compiling %d batch shapes before listening (about 1-2 s each on CPU); --no-warmup listens at once "
                "and compiles each on first use, JAX_COMPILATION_CACHE_DIR=DIR keeps them for the next start",
                total,
            )
        elif done == total or now - said[0] >= 5.0:
            said[0] = now
            log.info("compiled %d/%d batch shapes (%.0f s)", done, total, now - began)

    enc.warmup(progress=progress)
