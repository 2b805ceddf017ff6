"""Corpus embedding job: files of many texts in, Parquet shards of embeddings out."""
