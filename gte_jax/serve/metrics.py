"""The server's Prometheus metrics, in a registry of its own (several apps in one process never collide)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_TOKENS = (16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)

# Request stages, in order: body read and parsed, tokenised, waiting in the queue, in the engine, response built.
STAGES = ("parse", "tokenize", "queue", "inference", "respond")


class Metrics:
    """Counters, gauges and histograms of one server; ``render()`` gives the ``/metrics`` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gte_jax_requests", "HTTP requests answered, by route and status code", ["route", "status"], registry=r
        )
        self.request_duration = Histogram(
            "gte_jax_request_duration_seconds",
            "Time to answer a request, by route",
            ["route"],
            buckets=_SECONDS,
            registry=r,
        )
        self.stage = Histogram(
            "gte_jax_stage_duration_seconds",
            "Time an embedding request spends in each stage",
            ["stage"],
            buckets=_SECONDS,
            registry=r,
        )
        self.inputs = Counter("gte_jax_inputs", "Inputs (texts or token-id lists) embedded", registry=r)
        self.tokens = Counter("gte_jax_tokens", "Tokens embedded, [CLS] and [SEP] included", registry=r)
        self.cancelled_inputs = Counter(
            "gte_jax_cancelled_inputs", "Queued inputs dropped because their client disconnected", registry=r
        )
        self.steps = Counter("gte_jax_engine_steps", "Device steps the engine ran", registry=r)
        self.padded_tokens = Counter(
            "gte_jax_padded_tokens", "Token slots the engine ran (rows x length of each step)", registry=r
        )
        self.batch_inputs = Histogram("gte_jax_batch_inputs", "Inputs per device step", buckets=_COUNTS, registry=r)
        self.batch_tokens = Histogram(
            "gte_jax_batch_tokens", "Tokens per device step, padding excluded", buckets=_TOKENS, registry=r
        )
        self.batch_requests = Histogram(
            "gte_jax_batch_requests", "Requests served by one device step", buckets=_COUNTS, registry=r
        )
        self.batch_duration = Histogram(
            "gte_jax_batch_duration_seconds", "Time of one device step", buckets=_SECONDS, registry=r
        )
        self.queue_requests = Gauge("gte_jax_queue_requests", "Requests waiting for the engine", registry=r)
        self.queue_inputs = Gauge("gte_jax_queue_inputs", "Inputs waiting for the engine", registry=r)
        self.in_flight = Gauge(
            "gte_jax_requests_in_flight",
            "Embedding requests admitted and not yet answered (the --max-concurrent-requests count)",
            registry=r,
        )

    def watch_queue(self, requests: Callable[[], float], inputs: Callable[[], float]) -> None:
        """Reads the queue sizes at scrape time."""
        self.queue_requests.set_function(requests)
        self.queue_inputs.set_function(inputs)

    def observe_step(self, inputs: int, tokens: int, padded: int, requests: int, seconds: float) -> None:
        """One device step: its inputs, their tokens, the padded ``rows * length``, its requests and its time."""
        self.steps.inc()
        self.padded_tokens.inc(padded)
        self.batch_inputs.observe(inputs)
        self.batch_tokens.observe(tokens)
        self.batch_requests.observe(requests)
        self.batch_duration.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
