"""``gte-jax serve``: an OpenAI- and TEI-compatible HTTP embedding server with dynamic batching.

- :mod:`gte_jax.serve.schemas`: request parsing and response bodies (plain Python, no web framework);
- :mod:`gte_jax.serve.batcher`: the queue and the worker thread that runs the engine's plan in fair rounds;
- :mod:`gte_jax.serve.metrics`: the Prometheus metrics;
- :mod:`gte_jax.serve.app`: the Starlette routes, authentication and body limits;
- :mod:`gte_jax.serve.cli`: the ``gte-jax serve`` command (imports only argparse until it runs);
- :mod:`gte_jax.serve.defaults`: the defaults of its options.

Install from the gte-jax checkout with ``pip install ".[serve]"``.
"""
