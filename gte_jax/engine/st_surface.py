"""The sentence-transformers surface of :class:`~gte_jax.GTEEncoder` beyond ``encode``: query and document
encoding with their prompts, similarity with the checkpoint's function, and saving a sentence-transformers
folder with every setting the encoder runs with."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload

import numpy as np

from gte_jax.checkpoints.sentence_config import SentenceConfig
from gte_jax.engine.prompts import DOCUMENT_PROMPT_NAMES, QUERY_PROMPT_NAMES, first_prompt
from gte_jax.models import similarity as sim

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from gte_jax.engine.inputs import EncodeOptions
    from gte_jax.engine.tokenization import Tokenizer


class _Encoder(Protocol):
    """What the surface needs of the encoder it is mixed into."""

    model: Any
    tokenizer: Tokenizer
    source_dir: str | None
    pooling: str
    include_prompt: bool
    prompts: dict[str, str]
    default_prompt_name: str | None
    similarity_fn_name: str
    truncate_dim: int | None
    _sentence: SentenceConfig

    @property
    def max_length(self) -> int: ...

    @property
    def encode(self) -> Callable[..., Any]: ...

    @property
    def sentence_config(self) -> Callable[[], SentenceConfig]: ...


class SentenceTransformerSurface:
    """Mixed into :class:`~gte_jax.GTEEncoder`: ``encode_query``, ``encode_document``, ``similarity``,
    ``similarity_pairwise``, ``sentence_config`` and ``save_pretrained`` under sentence-transformers' names."""

    @overload
    def encode_query(
        self: _Encoder,
        texts: str | Sequence[str],
        *,
        output_value: Literal["sentence_embedding"] = ...,
        **options: Unpack[EncodeOptions],
    ) -> np.ndarray: ...
    @overload
    def encode_query(
        self: _Encoder, texts: str | Sequence[str], *, output_value: str, **options: Unpack[EncodeOptions]
    ) -> np.ndarray | list[np.ndarray]: ...

    def encode_query(
        self: _Encoder,
        texts: str | Sequence[str],
        *,
        output_value: str = "sentence_embedding",
        **options: Unpack[EncodeOptions],
    ) -> np.ndarray | list[np.ndarray]:
        """:meth:`encode` for search queries: with the ``"query"`` prompt when the encoder has one.

        Without ``prompt`` or ``prompt_name`` it uses the ``"query"`` prompt, else none (not the
        default prompt), as ``SentenceTransformer.encode_query`` does. Same options as :meth:`encode`.
        """
        if options.get("prompt") is None and options.get("prompt_name") is None:
            options["prompt"] = first_prompt(self.prompts, QUERY_PROMPT_NAMES)
        return self.encode(texts, output_value=output_value, **options)

    @overload
    def encode_document(
        self: _Encoder,
        texts: str | Sequence[str],
        *,
        output_value: Literal["sentence_embedding"] = ...,
        **options: Unpack[EncodeOptions],
    ) -> np.ndarray: ...
    @overload
    def encode_document(
        self: _Encoder, texts: str | Sequence[str], *, output_value: str, **options: Unpack[EncodeOptions]
    ) -> np.ndarray | list[np.ndarray]: ...

    def encode_document(
        self: _Encoder,
        texts: str | Sequence[str],
        *,
        output_value: str = "sentence_embedding",
        **options: Unpack[EncodeOptions],
    ) -> np.ndarray | list[np.ndarray]:
        """:meth:`encode` for documents: with the first of the ``"document"``, ``"passage"`` and
        ``"corpus"`` prompts that the encoder has, else none (not the default prompt).

        Same options as :meth:`encode`.
        """
        if options.get("prompt") is None and options.get("prompt_name") is None:
            options["prompt"] = first_prompt(self.prompts, DOCUMENT_PROMPT_NAMES)
        return self.encode(texts, output_value=output_value, **options)

    def similarity(self: _Encoder, a: Any, b: Any) -> np.ndarray:
        """float32 ``[n, m]`` scores of every row of ``a`` against every row of ``b``, with
        :attr:`similarity_fn_name` (distances negated: larger is more similar)."""
        return sim.similarity(a, b, self.similarity_fn_name)

    def similarity_pairwise(self: _Encoder, a: Any, b: Any) -> np.ndarray:
        """float32 ``[n]`` scores of ``a[i]`` against ``b[i]``, with :attr:`similarity_fn_name`."""
        return sim.similarity_pairwise(a, b, self.similarity_fn_name)

    def sentence_config(self: _Encoder) -> SentenceConfig:
        """The sentence-transformers settings this encoder embeds with: the checkpoint's (its Pooling folder,
        whether it normalises) with this encoder's pooling, length, prompts, similarity and ``truncate_dim``."""
        return dataclasses.replace(
            self._sentence,
            pooling=self.pooling,
            include_prompt=self.include_prompt,
            max_seq_length=self.max_length,
            prompts=dict(self.prompts),
            default_prompt_name=self.default_prompt_name,
            similarity_fn_name=self.similarity_fn_name,
            truncate_dim=self.truncate_dim,
        )

    def save_pretrained(self: _Encoder, path: str) -> str:
        """Writes the model as a sentence-transformers folder with the family's Hugging Face weights, which
        ``SentenceTransformer(path)``, ``transformers`` and :meth:`from_pretrained` load, with every sentence
        setting of :meth:`sentence_config`; tokenizer files, licence and unused tensors come from the directory
        the encoder was loaded from. See :func:`gte_jax.checkpoints.export.save_pretrained`. Returns ``path``."""
        from gte_jax.checkpoints import export

        return export.save_pretrained(
            self.model, path, source_dir=self.source_dir, tokenizer=self.tokenizer, sentence=self.sentence_config()
        )
