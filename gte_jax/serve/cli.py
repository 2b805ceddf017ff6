"""``gte-jax serve``: an OpenAI- and TEI-compatible embedding server with dynamic batching.

Exit codes: 0 after a clean shutdown (SIGTERM or Ctrl-C: it stops accepting, finishes the
requests in flight, then exits); 2 for a mistake in the options, the model or the port.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from gte_jax.argtypes import positive_int
from gte_jax.dtypes import DTYPES
from gte_jax.dtypes import HELP as DTYPES_HELP

# Only light standard modules at import time: `gte-jax --help` builds every subcommand's parser.

EPILOG = """\
routes:
  POST /v1/embeddings, /embeddings   OpenAI: {"input": str | [str] | [int] | [[int]], "model", "encoding_format",
                                     "dimensions"}
  POST /embed                        TEI: {"inputs": str | [str], "normalize", "truncate", "dimensions"} -> [[float]]
  POST /tokenize                     TEI: {"inputs": str | [str], "add_special_tokens"}
  GET  /health, /metrics             open even with --api-key (probes, Prometheus)
  GET  /info, /v1/models             the model, devices and limits

examples:
  gte-jax serve --model thenlper/gte-small --port 8080
  gte-jax serve --model thenlper/gte-base --dtype bfloat16 --host 0.0.0.0 --api-key "$KEY"
  curl localhost:8080/v1/embeddings -H 'Content-Type: application/json' -d '{"input": ["what is a tensor?"]}'
"""

API_KEY_ENV = "GTE_JAX_API_KEY"
DEFAULT_MERGE_TOKENS = 16384  # TEI's default --max-batch-tokens


def _port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1 to 65535, got {value}")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve embeddings over HTTP: OpenAI /v1/embeddings and TEI /embed, with dynamic batching",
        description="Serves a GTE (BERT) embedding model over HTTP in the request and response shapes of the "
        "OpenAI embeddings API and Hugging Face text-embeddings-inference. Requests from all clients are "
        "queued and merged into the engine's length buckets under a token budget; each vector equals "
        "GTEEncoder.encode of the same text. Needs the serve extra: pip install 'gte-jax[serve]'.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=None, help="hub id or local model directory (default: thenlper/gte-small)")
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
    p.add_argument("--served-model-name", default=None, help="the model name in responses (default: --model)")
    b = p.add_argument_group("batching and limits")
    b.add_argument(
        "--max-batch-tokens",
        type=positive_int,
        default=None,
        help=f"most padded tokens one engine call runs (default: {DEFAULT_MERGE_TOKENS}, or one device step if "
        "larger); device steps never exceed it",
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
    """A socket bound (not yet listening) to ``host:port``: a taken port fails before the model loads."""
    addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = addresses[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _fail(message: str) -> int:
    print(f"gte-jax serve: error: {message}", file=sys.stderr)
    return 2


def main(args: argparse.Namespace) -> int:
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as e:
        return _fail(f"{e.name} is not installed; the server needs the serve extra: pip install 'gte-jax[serve]'")
    import logging
    import signal
    import time

    try:
        sock = _bind(args.host, args.port)
    except OSError as e:
        return _fail(f"cannot listen on {args.host}:{args.port} ({e.strerror or e}); pick another --port or --host")

    from gte_jax import DEFAULT_MODEL, GTEEncoder, batching, sharding
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
    step_tokens = batching.default_batching(mesh.devices.flat[0].platform)[1]
    if args.max_batch_tokens is not None:
        step_tokens = min(step_tokens, args.max_batch_tokens)
    began = time.perf_counter()
    try:
        enc = GTEEncoder.from_pretrained(
            model,
            dtype=args.dtype,
            max_length=args.max_length,
            mesh=mesh,
            batch_size=args.batch_size,
            max_batch_tokens=step_tokens,
        )
    except (UserError, ValueError) as e:
        sock.close()
        return _fail(str(e))
    log.info(
        "loaded %s in %.1f s: dimension %d, at most %d tokens, %s, on %d %s device(s)",
        model,
        time.perf_counter() - began,
        enc.dim,
        enc.max_length,
        args.dtype,
        len(mesh.devices.flat),
        mesh.devices.flat[0].platform,
    )
    if args.warmup:
        began = time.perf_counter()
        programs = enc.warmup()
        log.info("compiled %d batch shapes in %.1f s", programs, time.perf_counter() - began)
    settings = Settings(
        model_id=model,
        served_model_name=args.served_model_name or model,
        dtype=args.dtype,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        max_batch_tokens=args.max_batch_tokens or max(DEFAULT_MERGE_TOKENS, enc.max_batch_tokens),
        max_client_batch_size=args.max_client_batch_size,
        max_concurrent_requests=args.max_concurrent_requests,
        payload_limit=args.payload_limit,
        warmed_up=args.warmup,
    )
    config = uvicorn.Config(
        create_app(enc, settings),
        log_level=args.log_level,
        timeout_graceful_shutdown=None,  # SIGTERM: finish every request in flight, however long
    )
    # uvicorn re-raises the signal that stopped it once it has shut down; with these handlers in place
    # that re-raise is a no-op, so a graceful stop exits 0 instead of dying of the signal.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    url = f"http://[{args.host}]:{args.port}" if ":" in args.host else f"http://{args.host}:{args.port}"
    log.info("serving %s on %s (OpenAI /v1/embeddings, TEI /embed)", settings.served_model_name, url)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
