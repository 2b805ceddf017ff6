"""Fine-tuning: contrastive losses, the sharded train step, data, checkpoints and ``gte-jax train``.

Needs the ``train`` extra (``pip install ".[train]"`` in the gte-jax checkout: optax and orbax-checkpoint). Modules:
:mod:`~gte_jax.train.losses` (CoSENT, InfoNCE/GTE, pure functions on embeddings),
:mod:`~gte_jax.train.step` (:class:`~gte_jax.train.step.Trainer`, the jitted step),
:mod:`~gte_jax.train.data` (files and batches), :mod:`~gte_jax.train.checkpoint` (Orbax),
:mod:`~gte_jax.train.cli` (the command). Nothing is imported here, so the command's ``--help``
starts without JAX.
"""
