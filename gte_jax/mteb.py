"""A gte_jax model as an MTEB (v2) encoder: ``mteb.evaluate`` runs it like a SentenceTransformer.

.. code-block:: python

    import mteb
    from gte_jax.mteb import MTEBEncoder

    mteb.evaluate(MTEBEncoder("thenlper/gte-small"), tasks=mteb.get_tasks(tasks=["STSBenchmark"]))

:class:`MTEBEncoder` implements mteb's ``EncoderProtocol``: ``encode`` over mteb's data loaders,
``similarity`` and ``similarity_pairwise`` with the model's ``similarity_fn_name``, and
``mteb_model_meta`` (framework ``["JAX"]``). Queries and documents of retrieval tasks go
through ``encode_query`` and ``encode_document``; prompts follow mteb's order for
sentence-transformers models (task name + type, task name, task type + type, task type, type).

:class:`MTEBReranker` implements mteb's ``CrossEncoderProtocol`` over a :class:`~gte_jax.GTEReranker`: mteb runs
it on retrieval and reranking tasks that give each query its candidate documents (``top_ranked``), scoring the
(query, document) pairs with ``predict`` as it does a sentence-transformers ``CrossEncoder``.

Needs the ``mteb`` extra: ``pip install ".[mteb]"`` in the gte-jax checkout.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from gte_jax.errors import missing_extra

try:
    import mteb
    from mteb.models import ModelMeta
    from mteb.models.abs_encoder import get_prompt_name
    from mteb.models.model_meta import ScoringFunction
    from mteb.types import PromptType
except ImportError as e:  # an optional extra
    raise missing_extra(e.name, "mteb", "gte_jax.mteb (mteb 2.x)") from e

from gte_jax.checkpoints.hub import DEFAULT_MODEL
from gte_jax.engine.encoder import GTEEncoder
from gte_jax.engine.reranker import DEFAULT_RERANKER, GTEReranker

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata

__all__ = ["MTEBEncoder", "MTEBReranker"]


class MTEBEncoder:
    """An encoder for ``mteb.evaluate``, over a :class:`~gte_jax.GTEEncoder`.

    Args:
        model: a Hub id or model directory (loaded with :meth:`GTEEncoder.from_pretrained`), or an
            encoder already loaded.
        revision: the Hub revision to load (also recorded in the metadata).
        device: accepted for mteb's loader, which may pass it; only None, as JAX places the model on
            its devices itself (pass ``mesh=`` to choose them).
        embed_dim: mteb's name for ``truncate_dim`` (Matryoshka dimensions).
        **from_pretrained_kwargs: the other options of :meth:`GTEEncoder.from_pretrained` (``dtype``,
            ``max_length``, ``prompts``, ``similarity_fn_name``, ``mesh`` and so on).

    Raises:
        ValueError: loading options given with an encoder already loaded, or a ``device``.
    """

    def __init__(
        self,
        model: str | GTEEncoder = DEFAULT_MODEL,
        revision: str | None = None,
        *,
        device: str | None = None,
        embed_dim: int | None = None,
        **from_pretrained_kwargs: Any,
    ):
        if device is not None:
            raise ValueError(
                f"device={device!r}: gte_jax runs on JAX's devices; choose them with mesh= (a jax.sharding.Mesh)."
            )
        if isinstance(model, GTEEncoder):
            if revision is not None or embed_dim is not None or from_pretrained_kwargs:
                raise ValueError("loading options apply to a model name or directory, not to a loaded GTEEncoder.")
            self.encoder = model
        else:
            if embed_dim is not None:
                from_pretrained_kwargs["truncate_dim"] = embed_dim
            self.encoder = GTEEncoder.from_pretrained(model, revision=revision, **from_pretrained_kwargs)
        self.mteb_model_meta: ModelMeta = _model_meta(self.encoder, revision)

    def encode(
        self,
        inputs: Iterable[dict[str, Any]],
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embeds the texts of mteb's data loader (batches of ``{"text": [...]}``), in order.

        ``prompt_type`` query / document picks :meth:`GTEEncoder.encode_query` / ``encode_document``;
        ``batch_size``, ``show_progress_bar`` and ``precision`` of mteb's ``encode_kwargs`` apply.

        Raises:
            ValueError: a batch without texts (gte_jax reads text only).
        """
        texts = _texts(inputs, task_metadata)
        name = get_prompt_name(self.encoder.prompts or None, task_metadata, prompt_type)
        prompt = self.encoder.prompts[name] if name else None
        options: dict[str, Any] = {
            "prompt": prompt,
            "batch_size": kwargs.get("batch_size"),
            "show_progress": bool(kwargs.get("show_progress_bar", False)),
            "precision": kwargs.get("precision") or "float32",
        }
        if prompt_type == PromptType.query:
            return self.encoder.encode_query(texts, **options)
        if prompt_type == PromptType.document:
            return self.encoder.encode_document(texts, **options)
        return self.encoder.encode(texts, **options)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        """``[n, m]`` scores with the model's ``similarity_fn_name`` (see :meth:`GTEEncoder.similarity`)."""
        return self.encoder.similarity(embeddings1, embeddings2)

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        """``[n]`` scores of corresponding rows (see :meth:`GTEEncoder.similarity_pairwise`)."""
        return self.encoder.similarity_pairwise(embeddings1, embeddings2)


class MTEBReranker:
    """A cross-encoder for ``mteb.evaluate``, over a :class:`~gte_jax.GTEReranker`.

    Args:
        model: a Hub id or directory of a one-label cross-encoder (loaded with
            :meth:`GTEReranker.from_pretrained`), or a reranker already loaded.
        revision: the Hub revision to load (also recorded in the metadata).
        device: accepted for mteb's loader; only None, as for :class:`MTEBEncoder`.
        query_prefix, passage_prefix: put before every query / document, as mteb's ``CrossEncoderWrapper`` does.
        **from_pretrained_kwargs: the other options of :meth:`GTEReranker.from_pretrained` (``dtype``,
            ``max_length``, ``mesh`` and so on).

    Raises:
        ValueError: loading options given with a reranker already loaded, a ``device``, or a model with several
            labels (mteb needs one relevance score per pair).
    """

    def __init__(
        self,
        model: str | GTEReranker = DEFAULT_RERANKER,
        revision: str | None = None,
        *,
        device: str | None = None,
        query_prefix: str = "",
        passage_prefix: str = "",
        **from_pretrained_kwargs: Any,
    ):
        if device is not None:
            raise ValueError(
                f"device={device!r}: gte_jax runs on JAX's devices; choose them with mesh= (a jax.sharding.Mesh)."
            )
        if isinstance(model, GTEReranker):
            if revision is not None or from_pretrained_kwargs:
                raise ValueError("loading options apply to a model name or directory, not to a loaded GTEReranker.")
            self.reranker = model
        else:
            self.reranker = GTEReranker.from_pretrained(model, revision=revision, **from_pretrained_kwargs)
        if self.reranker.num_labels != 1:
            raise ValueError(
                f"{self.reranker.name}: mteb needs one score per pair; this model gives {self.reranker.num_labels}."
            )
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.mteb_model_meta: ModelMeta = _reranker_meta(self.reranker, revision)

    def predict(
        self,
        inputs1: Iterable[dict[str, Any]],
        inputs2: Iterable[dict[str, Any]],
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Scores the i-th query of ``inputs1`` with the i-th document of ``inputs2`` (mteb's data loaders).

        ``batch_size`` and ``show_progress_bar`` of mteb's ``encode_kwargs`` apply.

        Raises:
            ValueError: a batch without texts, or the two loaders of different lengths.
        """
        queries = [self.query_prefix + t for t in _texts(inputs1, task_metadata)]
        documents = [self.passage_prefix + t for t in _texts(inputs2, task_metadata)]
        if len(queries) != len(documents):
            raise ValueError(f"{task_metadata.name}: {len(queries)} queries but {len(documents)} documents to pair.")
        return self.reranker.predict(
            list(zip(queries, documents, strict=True)),
            batch_size=kwargs.get("batch_size"),
            show_progress=bool(kwargs.get("show_progress_bar", False)),
        )


def _texts(inputs: Iterable[dict[str, Any]], task_metadata: TaskMetadata) -> list[str]:
    texts: list[str] = []
    for batch in inputs:
        if "text" not in batch:
            raise ValueError(f"{task_metadata.name}: gte_jax reads text only; this task gives {sorted(batch)}.")
        texts.extend(batch["text"])
    return texts


# GTE models mteb's registry lacks (mteb 2.x has gte-base-en-v1.5, gte-multilingual-base and gte-modernbert-base),
# from their model cards, so that their results file with languages, size and context like their siblings'.
_UNREGISTERED = {
    "Alibaba-NLP/gte-large-en-v1.5": {
        "languages": ["eng-Latn"],
        "embed_dim": 1024,
        "max_tokens": 8192,
        "n_parameters": 434_000_000,
        "license": "apache-2.0",
        "open_weights": True,
        "reference": "https://huggingface.co/Alibaba-NLP/gte-large-en-v1.5",
        "similarity_fn_name": ScoringFunction.COSINE,
    },
}


def _base_meta(name: str, revision: str | None, dtype: str) -> tuple[ModelMeta, str | None]:
    """mteb's registry entry for ``name`` when it has one (so results file under the same model), else an empty
    one; and the revision, with ``-gte-jax-<dtype>`` appended for bfloat16 or int8 so that those results file
    apart from float32's."""
    try:
        base = mteb.get_model_meta(name)
    except (KeyError, ValueError):  # not in mteb's registry: a local directory or another model
        hub_id = name if name and not os.path.isdir(name) else None
        base = ModelMeta.create_empty(overwrites={"name": hub_id, **_UNREGISTERED.get(name, {})})
    revision = revision or base.revision
    if dtype != "float32":  # other numbers than the checkpoint's: results must not file with float32's
        revision = f"{revision or 'main'}-gte-jax-{dtype}"
    return base, revision


def _model_meta(enc: GTEEncoder, revision: str | None) -> ModelMeta:
    """:func:`_base_meta` with this encoder's loader, framework, dimension and similarity."""
    base, revision = _base_meta(enc.name, revision, enc.dtype)
    return base.model_copy(
        update={
            "loader": MTEBEncoder,
            "revision": revision,
            "framework": ["JAX"],
            "embed_dim": enc.dim,
            "max_tokens": enc.max_length,
            "similarity_fn_name": ScoringFunction(enc.similarity_fn_name),
            "n_parameters": base.n_parameters or _n_parameters(enc.model),
            "modalities": ["text"],
        }
    )


def _reranker_meta(reranker: GTEReranker, revision: str | None) -> ModelMeta:
    """:func:`_base_meta` with this reranker's loader and framework, as a cross-encoder."""
    base, revision = _base_meta(reranker.name, revision, reranker.dtype)
    return base.model_copy(
        update={
            "loader": MTEBReranker,
            "revision": revision,
            "framework": ["JAX"],
            "model_type": ["cross-encoder"],
            "max_tokens": reranker.max_length,
            "n_parameters": base.n_parameters or _n_parameters(reranker.model),
            "modalities": ["text"],
        }
    )


def _n_parameters(model: Any) -> int:
    import jax
    from flax import nnx

    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))
