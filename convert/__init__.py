"""The PyTorch side of gte-jax: the reference embeddings and `gte-jax convert`.

Installed as ``gte_jax_convert``. torch and transformers are imported only
inside the functions that need them.
"""
