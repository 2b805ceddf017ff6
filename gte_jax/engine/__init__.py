"""The engine: texts to token ids, the batch planner, runners and sharding over devices and hosts, and the
encoder and reranker that put a loaded model to work."""
