"""Cross-encoders (rerankers) in JAX: sentence-transformers' ``CrossEncoder`` surface over the encoder's engine.

A pair ``(query, document)`` is tokenised as one sequence (token types for BERT) and truncated as the fast
tokenizer's ``longest_first`` does; the pairs run through the same length buckets, token budget,
runners, sharding and dtypes as :class:`~gte_jax.GTEEncoder`; the family's classification head gives
one logit per label, and an activation (the checkpoint's by default) turns logits into scores.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from gte_jax.checkpoints.hub import read_json, resolve_model_dir
from gte_jax.engine import batching, runners, sharding
from gte_jax.engine.inputs import check_positive, progress_bar
from gte_jax.engine.loading import load
from gte_jax.engine.registry import Registry
from gte_jax.engine.tokenization import MAX_PAIR_VOCAB, Tokenizer, lone_surrogate, unpack_segments
from gte_jax.errors import ConfigError
from gte_jax.models.heads import CrossEncoderModel

ACTIVATIONS = ("sigmoid", "identity", "softmax", "tanh")
# sentence-transformers saves the activation as a torch class path; its last part names it.
_TORCH_ACTIVATIONS = {"Sigmoid": "sigmoid", "Identity": "identity", "Softmax": "softmax", "Tanh": "tanh"}

DEFAULT_RERANKER = "Alibaba-NLP/gte-multilingual-reranker-base"


def _logits(graphdef: nnx.GraphDef, state: nnx.State, packed: jax.Array, mask: jax.Array, token_types: bool) -> Any:
    model = nnx.merge(graphdef, state)
    ids, types = unpack_segments(packed)
    return model(ids, mask, types if token_types else None)  # [B, labels] float32


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """``logits`` ``[n, labels]`` through an activation of :data:`ACTIVATIONS` (softmax over the labels)."""
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    if activation == "tanh":
        return np.tanh(logits)
    if activation == "softmax":
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    return logits


def checkpoint_activation(hf: dict[str, Any], num_labels: int, source: str) -> str:
    """The activation a ``config.json`` names (sentence-transformers >= 4 or older), else sigmoid for one label
    and identity for several, as ``CrossEncoder`` chooses.

    Raises:
        ConfigError: it names an activation gte_jax does not have.
    """
    st = hf.get("sentence_transformers")
    path = (st.get("activation_fn") if isinstance(st, dict) else None) or hf.get("sbert_ce_default_activation_function")
    if not path:
        return "sigmoid" if num_labels == 1 else "identity"
    name = _TORCH_ACTIVATIONS.get(str(path).rsplit(".", 1)[-1])
    if name is None:
        raise ConfigError(f"{source}: activation {path!r} is not one gte_jax has ({', '.join(_TORCH_ACTIVATIONS)}).")
    return name


def _num_labels(hf: dict[str, Any], source: str) -> int:
    labels = hf.get("id2label")
    n = len(labels) if isinstance(labels, dict) and labels else hf.get("num_labels", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{source}: num_labels {n!r} is not a positive integer.")
    return n


class GTEReranker:
    """A cross-encoder: scores ``(query, document)`` pairs. Build one with :meth:`from_pretrained`.

    Attributes: ``model`` (a :class:`~gte_jax.models.heads.CrossEncoderModel`), ``tokenizer``, ``config``,
    ``num_labels``, ``activation`` (the default activation's name), ``max_length``, ``mesh``, ``dtype``,
    ``batch_size``, ``max_batch_tokens``, ``name``.
    """

    def __init__(
        self,
        model: CrossEncoderModel,
        tokenizer: Tokenizer,
        *,
        num_labels: int,
        activation: str,
        token_types: bool,
        mesh: Mesh,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        name: str = "",
        dtype: str = "float32",
        labels: Sequence[str] | None = None,
    ):
        self.model = model
        self.labels = list(labels) if labels is not None else [f"LABEL_{i}" for i in range(num_labels)]
        self.tokenizer = tokenizer
        self.config = model.config
        self.num_labels = num_labels
        self.activation = _check_activation(activation)
        self.mesh = mesh
        default_rows, default_tokens = batching.default_batching(mesh.devices.flat[0].platform)
        self.batch_size: int = check_positive("batch_size", batch_size) or default_rows
        self.max_batch_tokens: int = check_positive("max_batch_tokens", max_batch_tokens) or default_tokens
        self.name = name
        self.dtype = dtype
        self.runner: runners.Runner = runners.for_mesh(
            mesh, batching.length_buckets(self.max_length), self.max_batch_tokens, tokenizer.pad_token_id
        )
        graphdef, self._state = nnx.split(model)
        self._logits = jax.jit(
            functools.partial(_logits, graphdef, token_types=token_types),
            out_shardings=sharding.batch_sharding(mesh),
        )

    _registry: Registry | None = None

    @classmethod
    def _shared_registry(cls) -> Registry:
        if cls._registry is None:
            cls._registry = Registry(cls.from_pretrained)
        return cls._registry

    @classmethod
    def shared(cls, name_or_path: str = DEFAULT_RERANKER, **kwargs: Any) -> GTEReranker:
        """Like :meth:`from_pretrained`, but one reranker per process for the same arguments.

        Integrations use this (as :meth:`gte_jax.GTEEncoder.shared`), so that many reranker objects for one
        model share its weights and compiled programs. The reranker stays loaded until :meth:`release`.
        """
        return cls._shared_registry().get(name_or_path, **kwargs)

    @classmethod
    def release(cls, name_or_path: str | None = None) -> int:
        """Forgets the shared rerankers of ``name_or_path`` (all settings), or every one; returns how many."""
        return cls._shared_registry().release(name_or_path)

    @property
    def max_length(self) -> int:
        """Pairs are truncated to this many tokens together, special tokens included."""
        return self.tokenizer.max_length

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = DEFAULT_RERANKER,
        *,
        dtype: str = "float32",
        max_length: int | None = None,
        mesh: Mesh | None = None,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        attention_impl: str | None = None,
        revision: str | None = None,
        cache_dir: str | None = None,
    ) -> GTEReranker:
        """Loads a sequence-classification checkpoint (BERT, GTE or ModernBERT cross-encoder).

        Args:
            name_or_path: a Hub id or a local directory (``*ForSequenceClassification`` weights).
            dtype, mesh, batch_size, max_batch_tokens, attention_impl, revision, cache_dir: as for
                :meth:`gte_jax.GTEEncoder.from_pretrained`.
            max_length: the most tokens of a pair; by default the checkpoint's ``max_seq_length``, else the
                smaller of its position limit and the tokenizer's ``model_max_length``.

        Raises:
            ModelNotFoundError, ConfigError, CheckpointError: as for the encoder.
        """
        check_positive("batch_size", batch_size)
        check_positive("max_batch_tokens", max_batch_tokens)
        mesh = mesh if mesh is not None else sharding.default_mesh()
        model_dir = resolve_model_dir(name_or_path, revision=revision, cache_dir=cache_dir)
        source = f"{model_dir}/config.json"
        hf = read_json(model_dir, "config.json") or {}
        num_labels = _num_labels(hf, source)
        if max_length is None:
            max_length = _default_max_length(model_dir, hf)
        loaded = load(
            model_dir,
            mesh=mesh,
            dtype=dtype,
            max_length=max_length,
            attention_impl=attention_impl,
            num_labels=num_labels,
        )
        if loaded.tokenizer.vocab_size > MAX_PAIR_VOCAB:
            raise ConfigError(f"{model_dir}: a tokenizer of {loaded.tokenizer.vocab_size} ids is too large for pairs.")
        return cls(
            cast(CrossEncoderModel, loaded.model),
            loaded.tokenizer,
            num_labels=num_labels,
            activation=checkpoint_activation(hf, num_labels, source),
            token_types=loaded.family.token_types and getattr(loaded.model.config, "type_vocab_size", 0) > 1,
            mesh=mesh,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            name=str(name_or_path),
            dtype=dtype,
            labels=_labels(hf, num_labels),
        )

    def predict(
        self,
        pairs: Sequence[Sequence[str]] | Sequence[str],
        *,
        batch_size: int | None = None,
        activation: str | None = None,
        apply_softmax: bool = False,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Scores each ``(first, second)`` pair, as ``CrossEncoder.predict`` does.

        Args:
            pairs: a list of pairs, or one pair.
            batch_size: most pairs per device step (the reranker's by default).
            activation: one of :data:`ACTIVATIONS`; the checkpoint's by default.
            apply_softmax: with several labels, a softmax over them after the activation.
            show_progress: a progress bar.

        Returns:
            float32: one score per pair (one label), or ``[pairs, labels]``; a single pair gives a scalar
            (or ``[labels]``).

        Raises:
            TypeError: a pair is not two strings (the message names its index).
            ValueError: a lone surrogate, or an unknown activation.
        """
        single = len(pairs) == 2 and all(isinstance(p, str) for p in pairs)
        checked = _check_pairs([pairs] if single else pairs)
        act = _check_activation(self.activation if activation is None else activation)
        rows = check_positive("batch_size", batch_size) or self.batch_size
        logits = np.zeros((len(checked), self.num_labels), dtype=np.float32)
        if checked or isinstance(self.runner, runners.LockstepRunner):  # a collective runs even with none
            token_ids = self.tokenizer.pairs(checked)
            with progress_bar(len(checked), show_progress, unit="pair", desc="reranking") as bar:
                for indices, results in self.encode_batches(token_ids, self.plan(token_ids, rows)):
                    logits[indices] = results
                    if bar is not None:
                        bar.update(len(indices))
        scores = activate(logits, act)
        if apply_softmax and self.num_labels > 1:
            scores = activate(scores, "softmax")
        scores = scores[:, 0] if self.num_labels == 1 else scores
        return (scores[0] if single else scores).astype(np.float32)

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_k: int | None = None,
        return_documents: bool = False,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> list[dict[str, Any]]:
        """The documents by score for ``query``, best first, as ``CrossEncoder.rank`` gives them.

        Returns:
            ``[{"corpus_id": index, "score": float[, "text": document]}]``, at most ``top_k`` of them.
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, not {type(query).__name__}.")
        if isinstance(documents, str):
            raise TypeError("documents must be a list of strings, not one string; wrap it in a list.")
        scores = self.predict([(query, d) for d in documents], batch_size=batch_size, show_progress=show_progress)
        if self.num_labels != 1:
            raise ValueError(f"rank needs one score per pair; this model gives {self.num_labels} labels.")
        order = np.argsort(-scores, kind="stable")[: top_k if top_k is not None else len(documents)]
        results: list[dict[str, Any]] = []
        for i in order:
            item: dict[str, Any] = {"corpus_id": int(i), "score": float(scores[i])}
            if return_documents:
                item["text"] = documents[i]
            results.append(item)
        return results

    @property
    def dim(self) -> int:
        """Logits per pair (``num_labels``): the row width of :meth:`encode_batches`' results."""
        return self.num_labels

    def plan(self, token_ids: list[np.ndarray], batch_size: int | None = None) -> list[batching.Batch]:
        """The padded batches of packed pair ids (:meth:`Tokenizer.pairs`) the engine runs, as for the encoder."""
        return self.runner.plan(token_ids, check_positive("batch_size", batch_size) or self.batch_size)

    def encode_batches(
        self, token_ids: list[np.ndarray], batches: list[batching.Batch], *, normalize: bool = True
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Runs :meth:`plan`'s batches in the given order, yielding ``(indices, logits)`` per device step:
        the encoder's engine interface, so the server's batcher schedules pairs as it does texts.
        ``normalize`` is ignored (logits are raw; :func:`activate` turns them into scores)."""
        yield from self.runner.run(functools.partial(self._logits, self._state), token_ids, batches)

    def warmup(self, *, batch_size: int | None = None, progress: Callable[[int, int], None] | None = None) -> int:
        """Compiles every program :meth:`predict` can run; returns how many. ``progress`` is called with
        ``(compiled, total)`` before the first shape and after each one."""
        rows = check_positive("batch_size", batch_size) or self.batch_size
        shapes = self.runner.shapes(rows)
        step = functools.partial(self._logits, self._state)
        for done, shape in enumerate(shapes):
            if progress is not None:
                progress(done, len(shapes))
            self.runner.warm(step, [shape])
        if progress is not None:
            progress(len(shapes), len(shapes))
        return len(shapes)


def is_cross_encoder(name_or_path: str) -> bool:
    """Whether a checkpoint is a sequence classifier (its ``config.json`` names a ``*ForSequenceClassification``
    architecture), which :class:`GTEReranker` runs, rather than an embedding model."""
    hf = read_json(resolve_model_dir(name_or_path), "config.json") or {}
    architectures = hf.get("architectures") if isinstance(hf, dict) else None
    return isinstance(architectures, list) and any(str(a).endswith("ForSequenceClassification") for a in architectures)


def _labels(hf: dict[str, Any], num_labels: int) -> list[str]:
    """``config.json``'s ``id2label`` names in id order, else ``LABEL_i``."""
    names = hf.get("id2label")
    names = names if isinstance(names, dict) else {}
    return [str(names.get(str(i), names.get(i, f"LABEL_{i}"))) for i in range(num_labels)]


def _default_max_length(model_dir: str, hf: dict[str, Any]) -> int | None:
    st = read_json(model_dir, "sentence_bert_config.json")
    if isinstance(st, dict) and isinstance(st.get("max_seq_length"), int):
        return int(st["max_seq_length"])
    limit = hf.get("max_position_embeddings")
    tok = read_json(model_dir, "tokenizer_config.json")
    tok_max = tok.get("model_max_length") if isinstance(tok, dict) else None
    if isinstance(limit, int) and isinstance(tok_max, int) and tok_max < limit:
        return tok_max
    return None  # the model's position limit


def _check_pairs(pairs: Any) -> list[tuple[str, str]]:
    if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__len__"):
        raise TypeError("pairs must be a list of (query, document) pairs of strings.")
    out = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2:
            raise TypeError(f"pair {i} is not two strings (a list or tuple of two): {pair!r:.80}")
        a, b = pair
        if not isinstance(a, str) or not isinstance(b, str):
            raise TypeError(f"pair {i} holds {type(a).__name__} and {type(b).__name__}; both must be strings.")
        for text in (a, b):
            at = lone_surrogate(text)
            if at is not None:
                raise ValueError(f"pair {i} holds a lone surrogate at character {at}; drop it.")
        out.append((a, b))
    return out


def _check_activation(name: Any) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not known; use one of {ACTIVATIONS}.")
    return str(name)


__all__ = ["ACTIVATIONS", "GTEReranker", "activate"]
