"""Corpus embedding job: files of many texts in, Parquet shards of embeddings out.

``sources`` reads ``.txt``, ``.jsonl`` and ``.parquet`` corpora in bounded pieces;
``shards`` writes shards that appear only when complete; ``manifest`` reads, checks and
writes the manifests; ``options`` loads the model and resolves the encode options against
it; ``calibration`` fixes int8/uint8 ranges; ``job`` drives the encoder over the shards
(resumable, one share per host, with a ``progress`` bar); ``cli`` is ``gte-jax embed``. From Python::

    from gte_jax.corpus.job import EmbedJob, run
    run(EmbedJob(input="corpus.jsonl", output="embeddings/", model="thenlper/gte-small"))

Kept import-light on purpose: ``gte-jax --help`` imports ``cli`` (pyarrow and JAX load on use).
"""
