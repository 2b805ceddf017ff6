"""The server's defaults, in one place that ``gte-jax serve --help`` can import without starlette or JAX."""

# The most device steps the engine runs before the batcher turns to newly queued requests.
ROUND_STEPS = 4
# Seconds a client has to send its whole request body (a stalled upload must not hold a request open).
BODY_TIMEOUT = 30.0
# Seconds SIGTERM waits for the requests in flight before it cancels them.
GRACEFUL_SHUTDOWN_TIMEOUT = 60.0
