"""Corpus embedding job: files of many texts in, Parquet shards of embeddings out.

``sources`` reads ``.txt``, ``.jsonl`` and ``.parquet`` corpora in bounded pieces;
``shards`` writes shards that appear only when complete, and the manifests;
``job`` drives the encoder over the shards (resumable, one share per host);
``cli`` is ``gte-jax embed``. From Python::

    from gte_jax.corpus.job import EmbedJob, run
    run(EmbedJob(input="corpus.jsonl", output="embeddings/", model="thenlper/gte-small"))

Kept import-light on purpose: ``gte-jax --help`` imports ``cli`` (pyarrow and JAX load on use).
"""
