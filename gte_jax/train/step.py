"""The contrastive train step: one jitted pure function over ``(graphdef, state)``, on any mesh.

A batch is a dict of global arrays, rows split over the mesh's ``data`` axis:

- ``input_ids``, ``attention_mask``: ``[batch, columns, tokens]`` int32 (anchor, positive, negatives...);
- ``labels``: ``[batch]`` float32 (CoSENT's scores; zeros for InfoNCE; a cross-encoder's targets), or for the
  listwise ``lambda`` loss ``[batch, columns]``, one relevance per document, -inf for a padding document.

A cross-encoder (``StepOptions(cross_encoder=True)`` on a :class:`~gte_jax.models.heads.CrossEncoderModel`)
takes each column as a pair packed with its token types (:func:`gte_jax.engine.tokenization.pack_segments`)
and gives the loss its ``[batch, columns, labels]`` logits instead of embeddings.

The loss is a function of the pooled ``[batch, columns, dim]`` embeddings of the whole global batch,
so under ``jax.jit`` every query is scored against every candidate of every device and host (XLA
gathers them); the gradients are those of the global batch's loss.

Two ways to fit a large contrastive batch: ``remat`` recomputes each layer's activations in the
backward pass (``nnx.remat``), and ``mini_batch_size`` turns on GradCache (Gao et al. 2021): embed
the batch in chunks without keeping activations, take the loss's gradient with respect to the
embeddings, then backpropagate chunk by chunk. Both give the plain step's loss and gradients
(with dropout on, GradCache draws its dropout per chunk, so the masks differ).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gte_jax.engine import sharding
from gte_jax.engine.tokenization import unpack_segments
from gte_jax.models import family_of
from gte_jax.models.bert.modeling import BertModel
from gte_jax.models.heads import CrossEncoderModel
from gte_jax.models.int8 import is_quantized
from gte_jax.models.layers import default_act_dtype
from gte_jax.models.pooling import l2_normalize, pool
from gte_jax.train import losses

Batch = dict[str, jax.Array]
# (embeddings [batch, columns, dim] float32, labels [batch]) -> scalar loss
LossFn = Callable[[jax.Array, jax.Array], jax.Array]

LOSSES = ("cosent", "infonce", "gte")
CROSS_ENCODER_LOSSES = ("bce", "lambda")


def make_loss(name: str, *, scale: float = 20.0, directions: Sequence[str] | None = None) -> LossFn:
    """The loss over a batch's embedding columns, by name.

    ``cosent`` takes two text columns and the labels; ``infonce`` takes an anchor, a positive and any
    number of hard negatives (``directions`` default ``("query_to_doc",)``); ``gte`` is InfoNCE over all
    four directions (GTE's loss); ``bce`` takes a cross-encoder's one logit per pair and 0-1 labels; ``lambda``
    (LambdaLoss) a cross-encoder's logit per document column and ``[batch, columns]`` labels, -inf for padding.
    """
    if name == "cosent":
        return lambda e, labels: losses.cosent(e[:, 0], e[:, 1], labels, scale=scale)
    if name in ("infonce", "gte"):
        dirs = tuple(directions or (losses.GTE_DIRECTIONS if name == "gte" else ("query_to_doc",)))
        return lambda e, labels: losses.infonce(*(e[:, c] for c in range(e.shape[1])), scale=scale, directions=dirs)
    if name == "bce":
        return lambda logits, labels: losses.binary_cross_entropy(logits[:, 0, 0], labels)
    if name == "lambda":

        def listwise(logits: jax.Array, labels: jax.Array) -> jax.Array:
            valid = jnp.isfinite(labels)
            return losses.lambda_loss(logits[:, :, 0], jnp.where(valid, labels, 0.0), valid)

        return listwise
    raise ValueError(f"loss {name!r} is not known; use one of {LOSSES + CROSS_ENCODER_LOSSES}.")


def adamw(
    learning_rate: float,
    total_steps: int,
    *,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    max_grad_norm: float | None = 1.0,
) -> optax.GradientTransformation:
    """AdamW as Hugging Face's Trainer runs it: linear warm-up from 0 over ``warmup_ratio`` of the steps, then
    linear decay to 0; gradients clipped to ``max_grad_norm``; no weight decay on biases and LayerNorms.

    Raises:
        ValueError: a rate, decay or norm that is negative or not finite.
    """
    for name, value in (
        ("learning_rate", learning_rate),
        ("weight_decay", weight_decay),
        ("max_grad_norm", max_grad_norm),
    ):
        if value is not None and not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} is {value}; it must be a finite number, 0 or more.")
    warmup = int(np.ceil(total_steps * warmup_ratio))
    schedule = optax.join_schedules(
        [
            optax.linear_schedule(0.0, learning_rate, max(warmup, 1)),
            optax.linear_schedule(learning_rate, 0.0, max(total_steps - warmup, 1)),
        ],
        [warmup],
    )

    def decays(params: Any) -> Any:
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "kernel" in jax.tree_util.keystr(path) or "embedding" in jax.tree_util.keystr(path),
            params,
        )

    adam = optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay, mask=decays)
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), adam) if max_grad_norm else adam


def _nnx_path(path: tuple[Any, ...]) -> str:
    """``layer.0.attention.query.kernel`` from a pytree key path into an ``nnx.State``."""
    names = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            names.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            names.append(str(k.idx))
        elif isinstance(k, jax.tree_util.GetAttrKey) and k.name != "value":
            names.append(k.name)
    return ".".join(names)


def attention_impl(model: nnx.Module) -> str:
    """The attention kernel ``model`` was built with: the model's own attribute, or its first layer's.

    Families keep it where their attention runs (BERT on the model, GTE and ModernBERT only on each attention
    module), so the trainer asks the module tree rather than one family's layout.
    """
    for _, module in nnx.iter_modules(model):
        impl = getattr(module, "attention_impl", None)
        if isinstance(impl, str):
            return impl
    raise ValueError(f"{type(model).__name__} has no attention module with an attention_impl to rebuild it with.")


def _deterministic(model: nnx.Module) -> bool:
    """Whether ``model`` is in eval mode, as ``model.eval()`` / ``model.train()`` left its modules (a
    cross-encoder keeps the flag on its encoder and dropout layers, not on itself)."""
    for _, module in nnx.iter_modules(model):
        flag = getattr(module, "deterministic", None)
        if isinstance(flag, bool):
            return flag
    return True


def _check_cross_encoder(model: nnx.Module, options: StepOptions) -> None:
    """Refuses a model and options that disagree on being a cross-encoder (the step would compute nonsense)."""
    cross = isinstance(model, CrossEncoderModel)
    if cross != options.cross_encoder:
        what = "a cross-encoder (CrossEncoderModel)" if cross else "an embedding model"
        raise ValueError(f"the model is {what}, and StepOptions(cross_encoder={options.cross_encoder}) says otherwise.")
    if cross and options.remat:
        raise ValueError("remat is for embedding models; train the cross-encoder without it.")


class TrainState(NamedTuple):
    """Everything a step changes: what a checkpoint holds."""

    step: jax.Array  # int32 scalar: optimiser steps taken
    params: nnx.State
    opt_state: optax.OptState
    key: jax.Array  # uint32 key data: dropout for step s uses fold_in(key, s)


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """How a step runs (all static: each combination compiles its own program).

    Attributes:
        pooling: ``"mean"`` or ``"cls"``, as the checkpoint's sentence-transformers files say.
        dropout: BERT's dropout in the step (rates from the config); off gives deterministic gradients.
        remat: recompute each layer in the backward pass instead of storing its activations.
        mini_batch_size: GradCache chunk size in examples (all columns of an example stay together);
            None embeds the whole batch at once. Must divide the batch and be a multiple of the
            mesh's data parallelism.
        compute_dtype: ``"bfloat16"`` runs the matmuls in bf16 on a bf16 copy of the float32 parameters
            (mixed precision: the optimiser updates float32); None computes in the parameters' dtype.
        cross_encoder: the model is a :class:`~gte_jax.models.heads.CrossEncoderModel`, the ids are packed pairs,
            and the loss gets logits (``pooling`` is unused).
    """

    pooling: str = "mean"
    dropout: bool = True
    remat: bool = False
    mini_batch_size: int | None = None
    compute_dtype: str | None = None
    cross_encoder: bool = False


class Trainer:
    """Compiles the train step for one model, loss, optimiser and mesh.

    Args:
        model: the NNX encoder, or a :class:`~gte_jax.models.heads.CrossEncoderModel` with
            ``StepOptions(cross_encoder=True)`` (its mode is left as it was); its parameters seed :meth:`init`.
        loss: from :func:`make_loss`, or any ``(embeddings [B, C, D], labels [B]) -> scalar``.
        tx: the optax optimiser (:func:`adamw` for the usual recipe).
        mesh: devices; the batch is split over its ``data`` axis, parameters are replicated
            (or split over ``model`` as in inference). All devices of all processes by default.
        options: see :class:`StepOptions`.

    ``trainer.step(state, batch)`` returns the new state and ``{"loss", "grad_norm", "params_finite"}``;
    ``trainer.grads(state, batch)`` the loss and gradients without updating.
    """

    def __init__(
        self,
        model: BertModel | CrossEncoderModel,
        loss: LossFn,
        tx: optax.GradientTransformation,
        *,
        mesh: Mesh | None = None,
        options: StepOptions = StepOptions(),  # noqa: B008  # frozen: a shared default is safe
    ):
        if is_quantized(model):
            raise ValueError(
                "this model's dense layers are int8 (dtype='int8'), which have no gradients: train the model "
                "loaded with dtype='float32' (StepOptions(compute_dtype='bfloat16') for bf16 matmuls)."
            )
        self.mesh = mesh if mesh is not None else sharding.default_mesh()
        self.loss = loss
        self.tx = tx
        self.options = options
        self._params = nnx.state(model)
        family = family_of(model.config)
        self._token_types = family.token_types
        _check_cross_encoder(model, options)
        self._compute_dtypes: Any = None
        graph: nnx.Module = model
        if options.compute_dtype is not None:  # the same module built in the compute dtype: its graph, not its values
            impl = attention_impl(model)
            dtype = jnp.dtype(options.compute_dtype)
            act = default_act_dtype(dtype, self.mesh.devices.flat[0].platform)

            def build() -> nnx.Module:
                encoder = family.build(model.config, dtype=dtype, act_dtype=act, attention_impl=impl, rngs=nnx.Rngs(0))
                if not isinstance(model, CrossEncoderModel):
                    return encoder
                assert family.head is not None  # a CrossEncoderModel was built with it
                labels = cast(Any, model.head).classifier.kernel.shape[-1]  # every family's head has a classifier
                return CrossEncoderModel(
                    encoder, family.head.build(model.config, labels, dtype=dtype, rngs=nnx.Rngs(0))
                )

            graph = nnx.eval_shape(build)
            self._compute_dtypes = jax.tree.map(lambda a: a.dtype, nnx.state(graph))
        was_training = not _deterministic(graph)
        graph.eval()
        self.eval_graphdef = nnx.graphdef(graph)
        graph.train()
        train_graphdef = nnx.graphdef(graph)
        if not was_training:
            graph.eval()
        self.train_graphdef = train_graphdef if options.dropout else self.eval_graphdef
        state = self._params
        self.param_shardings = jax.tree_util.tree_map_with_path(
            lambda path, _: sharding.param_sharding(self.mesh, _nnx_path(path), family.param_specs), state
        )
        self.batch_sharding = NamedSharding(self.mesh, P(sharding.DATA))
        self.replicated = sharding.replicated(self.mesh)
        self.step = jax.jit(self._step, donate_argnums=(0,))
        self.grads = jax.jit(self._loss_and_grads)
        self.embed = jax.jit(self._embed_eval, out_shardings=self.batch_sharding)

    def init(self, seed: int = 0) -> TrainState:
        """The state before the first step: the model's parameters, fresh optimiser moments, a dropout key."""
        # A copy: the step donates its state, and the model's own arrays must outlive training.
        params = jax.device_put(self._params, self.param_shardings, may_alias=False)
        opt_state = jax.tree.map(self._on_mesh, jax.jit(self.tx.init)(params))
        key = jax.device_put(jax.random.key_data(jax.random.key(seed)), self.replicated)
        return TrainState(jax.device_put(jnp.int32(0), self.replicated), params, opt_state, key)

    def _on_mesh(self, x: jax.Array) -> jax.Array:
        """``x`` as it is if it lives on the mesh, else replicated over it (jit leaves constants on one device)."""
        return x if isinstance(x.sharding, NamedSharding) else jax.device_put(x, self.replicated)

    def abstract_state(self, seed: int = 0) -> TrainState:
        """Shapes, dtypes and shardings of :meth:`init`'s state, without memory (a restore target)."""

        def placed(x: Any, where: jax.sharding.Sharding) -> jax.ShapeDtypeStruct:
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=where)

        params = jax.tree.map(placed, self._params, self.param_shardings)
        # The optimiser's moments live where jit puts tx.init's outputs for these parameters (compiled, not run).
        opt_shardings = jax.jit(self.tx.init).lower(params).compile().output_shardings
        opt_shardings = jax.tree.map(lambda s: s if isinstance(s, NamedSharding) else self.replicated, opt_shardings)
        opt_state = jax.tree.map(placed, jax.eval_shape(self.tx.init, params), opt_shardings)
        key = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(seed)))
        step = jax.ShapeDtypeStruct((), jnp.int32)
        return TrainState._make([placed(step, self.replicated), params, opt_state, placed(key, self.replicated)])

    def shard_batch(self, batch: dict[str, np.ndarray]) -> Batch:
        """Global arrays from the whole batch in host memory (every process passes the same batch)."""

        def put(x: np.ndarray) -> jax.Array:
            return jax.make_array_from_callback(x.shape, self.batch_sharding, lambda index: x[index])

        return {name: put(np.asarray(x)) for name, x in batch.items()}

    # The pure functions below are what jit compiles.

    def _pooled(
        self, graphdef: nnx.GraphDef[BertModel], params: nnx.State, ids: jax.Array, mask: jax.Array, key: jax.Array
    ) -> jax.Array:
        """``[rows, dim]`` float32 pooled (not normalised) embeddings of ``[rows, tokens]`` ids (a cross-encoder's
        ``[rows, labels]`` logits of packed pairs)."""
        model = nnx.merge(graphdef, self._cast(params))
        if self.options.cross_encoder:
            return self._logits(model, ids, mask, key)
        hidden = model(ids, mask, rngs=key, remat=self.options.remat)
        return pool(hidden, mask, self.options.pooling)

    def _logits(self, model: Any, packed: jax.Array, mask: jax.Array, key: jax.Array | None) -> jax.Array:
        ids, types = unpack_segments(packed)
        return model(ids, mask, types if self._token_types else None, rngs=key)

    def _cast(self, params: nnx.State) -> nnx.State:
        if self._compute_dtypes is None:
            return params
        return jax.tree.map(lambda p, dtype: p.astype(dtype), params, self._compute_dtypes)

    def _columns(self, params: nnx.State, ids: jax.Array, mask: jax.Array, key: jax.Array) -> jax.Array:
        """``[B, C, dim]`` embeddings of ``[B, C, T]`` ids, all columns in one forward."""
        B, C, T = ids.shape
        flat = self._pooled(self.train_graphdef, params, ids.reshape(B * C, T), mask.reshape(B * C, T), key)
        return flat.reshape(B, C, -1)

    def _loss_and_grads(self, state: TrainState, batch: Batch) -> tuple[jax.Array, nnx.State]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        if self.options.mini_batch_size is None:
            return jax.value_and_grad(lambda p: self.loss(self._columns(p, ids, mask, key), labels))(state.params)
        return self._cached_loss_and_grads(state.params, ids, mask, labels, key)

    def _cached_loss_and_grads(
        self, params: nnx.State, ids: jax.Array, mask: jax.Array, labels: jax.Array, key: jax.Array
    ) -> tuple[jax.Array, nnx.State]:
        """GradCache: the plain step's loss and gradients with one chunk's activations alive at a time."""
        B = ids.shape[0]
        m = self.options.mini_batch_size
        assert m is not None
        if B % m:
            raise ValueError(f"mini_batch_size {m} does not divide the batch of {B}; pick a divisor.")
        n = B // m
        chunked = NamedSharding(self.mesh, P(None, sharding.DATA))

        # Chunk k holds rows k, k + n, k + 2n, ...: a reshape that keeps every chunk split over all devices.
        def chunks(x: jax.Array) -> jax.Array:  # [B, ...] -> [n, m, ...]
            return jax.lax.with_sharding_constraint(jnp.swapaxes(x.reshape(m, n, *x.shape[1:]), 0, 1), chunked)

        def unchunk(x: jax.Array) -> jax.Array:  # [n, m, ...] -> [B, ...]
            return jnp.swapaxes(x, 0, 1).reshape(B, *x.shape[2:])

        xs = (chunks(ids), chunks(mask), jax.random.split(key, n))
        frozen = jax.lax.stop_gradient(params)
        embeddings = jax.lax.map(lambda x: self._columns(frozen, *x), xs)  # [n, m, C, D], no activations kept
        loss, d_embeddings = jax.value_and_grad(self.loss)(unchunk(embeddings), labels)

        def backprop(total: nnx.State, x: tuple[jax.Array, ...]) -> tuple[nnx.State, None]:
            *inputs, cotangent = x
            _, vjp = jax.vjp(lambda p: self._columns(p, *inputs), params)
            return jax.tree.map(jnp.add, total, vjp(cotangent)[0]), None

        grads, _ = jax.lax.scan(backprop, jax.tree.map(jnp.zeros_like, params), (*xs, chunks(d_embeddings)))
        return loss, grads

    def _step(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        loss, grads = self._loss_and_grads(state, batch)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        params = jax.lax.with_sharding_constraint(params, self.param_shardings)
        # One flag for the whole state: a diverged run must stop before it saves or exports NaN weights.
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "params_finite": finite}
        return TrainState(state.step + 1, params, opt_state, state.key), metrics

    def _embed_eval(self, params: nnx.State, ids: jax.Array, mask: jax.Array) -> jax.Array:
        """Eval-mode pooled embeddings of ``[rows, tokens]`` ids (no dropout), L2-normalised; a cross-encoder's
        logits."""
        model = nnx.merge(self.eval_graphdef, self._cast(params))
        if self.options.cross_encoder:
            return self._logits(model, ids, mask, None)
        return l2_normalize(pool(model(ids, mask), mask, self.options.pooling))
