"""GTEEncoder: texts in, L2-normalised float32 embeddings out.

The encoder holds the model, the tokenizer and one jitted forward. Planning and
execution belong to a runner (:mod:`gte_jax.runners`), loading to
:mod:`gte_jax.loading`, sharing between callers to :mod:`gte_jax.registry`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from gte_jax import batching, runners, sharding
from gte_jax.config import GTEConfig
from gte_jax.hub import DEFAULT_MODEL
from gte_jax.loading import load
from gte_jax.modeling import BertModel
from gte_jax.pooling import l2_normalize, pool
from gte_jax.registry import Registry
from gte_jax.tokenization import Tokenizer

# encode() tokenises this much ahead of the device at a time (tokenizers keeps every truncated-away
# token of a batch until it returns), never the whole input at once.
TOKENIZE_AHEAD_CHARS = 4 << 20
TOKENIZE_AHEAD_TEXTS = 8192


def _embed(
    graphdef: nnx.GraphDef[BertModel],
    state: nnx.State,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    *,
    pooling: str,
    normalize: bool,
) -> jax.Array:
    model = nnx.merge(graphdef, state)
    hidden = model(input_ids, attention_mask)  # [B, T, D]
    vectors = pool(hidden, attention_mask, pooling)  # [B, D] float32
    return l2_normalize(vectors) if normalize else vectors


def _check_texts(texts: object) -> tuple[list[str], bool]:
    """The texts as a list, and whether a single string was given.

    Raises:
        TypeError: ``texts`` is not a string or a sequence of strings (the message names the bad item).
        ValueError: a text holds a lone surrogate (the message names its index).
    """
    if isinstance(texts, str):
        texts = [texts]
        single = True
    elif isinstance(texts, (bytes, bytearray)):
        raise TypeError("texts is bytes; decode it first (texts.decode('utf-8')).")
    elif isinstance(texts, Mapping):
        raise TypeError("texts is a mapping; pass a list of strings (for example list(d.values())).")
    elif not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a string or a list of strings, not {type(texts).__name__}.")
    else:
        texts, single = list(texts), False
    for i, t in enumerate(texts):
        if isinstance(t, (bytes, bytearray)):
            raise TypeError(f"texts[{i}] is bytes, not str; decode it first (t.decode('utf-8')).")
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, not str; pass only strings (convert or drop it).")
        if not t.isascii():
            try:
                t.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError(
                    f"texts[{i}] holds a lone surrogate ({t[e.start]!r} at character {e.start}), which is not "
                    "text; decode the source with errors='replace' or drop the character."
                ) from None
    return texts, single


def _check_positive(name: str, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None (the backend's default), not {value!r}.")
    return value


def _tokenize_chunks(texts: list[str], window: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` ranges of ``texts`` to tokenise at a time, so memory stays flat however many come."""
    start = chars = 0
    for i, t in enumerate(texts):
        chars += min(len(t), window)
        if chars >= TOKENIZE_AHEAD_CHARS or i + 1 - start >= TOKENIZE_AHEAD_TEXTS:
            yield start, i + 1
            start, chars = i + 1, 0
    if start < len(texts):
        yield start, len(texts)


class GTEEncoder:
    """A GTE (BERT) embedding model: tokeniser, Flax NNX module, pooling, all jitted.

    Build one with :meth:`from_pretrained`. Attributes: ``model`` (the
    :class:`~gte_jax.modeling.BertModel`), ``tokenizer``, ``config``, ``dim``,
    ``mesh``, ``pooling``, ``max_length``, ``dtype``, ``batch_size``, ``max_batch_tokens``.
    """

    def __init__(
        self,
        model: BertModel,
        tokenizer: Tokenizer,
        *,
        pooling: str = "mean",
        mesh: Mesh | None = None,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        name: str = "",
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.config: GTEConfig = model.config
        self.dim = self.config.hidden_size
        self.pooling = pooling
        self.mesh = mesh if mesh is not None else sharding.default_mesh()
        default_rows, default_tokens = batching.default_batching(self.mesh.devices.flat[0].platform)
        self.batch_size: int = _check_positive("batch_size", batch_size) or default_rows
        self.max_batch_tokens: int = _check_positive("max_batch_tokens", max_batch_tokens) or default_tokens
        self.name = name
        self.dtype = model.embeddings.word_embeddings.embedding.get_value().dtype
        self.runner: runners.Runner = runners.for_mesh(
            self.mesh, batching.length_buckets(self.max_length), self.max_batch_tokens, tokenizer.pad_token_id
        )
        self._graphdef, self._state = nnx.split(model)
        self._forward = jax.jit(
            functools.partial(_embed, self._graphdef),
            static_argnames=("pooling", "normalize"),
            out_shardings=sharding.batch_sharding(self.mesh),
        )

    @property
    def max_length(self) -> int:
        """Texts are truncated to this many tokens, [CLS] and [SEP] included."""
        return self.tokenizer.max_length

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = DEFAULT_MODEL,
        *,
        dtype: str = "float32",
        max_length: int | None = None,
        mesh: Mesh | None = None,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        attention_impl: str | None = None,
        revision: str | None = None,
        cache_dir: str | None = None,
    ) -> GTEEncoder:
        """Loads a BERT embedding model from a local directory or the Hugging Face Hub.

        Args:
            name_or_path: a Hub id (``thenlper/gte-small``) or a directory in Hugging
                Face layout or written by ``gte-jax convert``.
            dtype: ``"float32"`` (matches PyTorch) or ``"bfloat16"`` (matmuls in bf16).
            max_length: truncation length in tokens; defaults to the checkpoint's
                ``sentence_bert_config.json`` ``max_seq_length``, else its position limit (512).
            mesh: devices to run on; a 1-D ``data`` mesh over all devices by default. A mesh
                with axes ``("data", "model")`` also splits attention heads and the FFN over
                ``model`` (tensor parallelism, for gte-large on small devices). A mesh over
                several processes makes :meth:`encode` a collective (see :mod:`gte_jax.runners`).
            batch_size: most texts per device step, across all devices of the mesh (in every
                mode); by default the backend's: 32 on CPU, 256 on accelerators.
            max_batch_tokens: most padded tokens per step, across all devices of the mesh, so
                long texts get fewer rows; by default 1,024 on CPU, 65,536 on accelerators.
            attention_impl: attention kernel name, see :mod:`gte_jax.attention`; the
                backend's fastest by default.
            revision, cache_dir: passed to huggingface_hub for Hub ids.

        Raises:
            ModelNotFoundError: no such directory and the Hub cannot provide it.
            ConfigError: a malformed ``config.json`` (the message names the field).
            CheckpointError: the weights do not fit the config, or the tokenizer's ids the embedding table.
            ValueError: a bad ``dtype``, ``max_length``, ``batch_size`` or ``max_batch_tokens``.
        """
        _check_positive("batch_size", batch_size)  # before the (slow) load
        _check_positive("max_batch_tokens", max_batch_tokens)
        mesh = mesh if mesh is not None else sharding.default_mesh()
        loaded = load(
            name_or_path,
            mesh=mesh,
            dtype=dtype,
            max_length=max_length,
            attention_impl=attention_impl,
            revision=revision,
            cache_dir=cache_dir,
        )
        return cls(
            loaded.model,
            loaded.tokenizer,
            pooling=loaded.pooling,
            mesh=mesh,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            name=str(name_or_path),
        )

    _registry: Registry | None = None

    @classmethod
    def _shared_registry(cls) -> Registry:
        if cls._registry is None:
            cls._registry = Registry(cls.from_pretrained)
        return cls._registry

    @classmethod
    def shared(cls, name_or_path: str = DEFAULT_MODEL, **kwargs: Any) -> GTEEncoder:
        """Like :meth:`from_pretrained`, but one encoder per process for the same arguments.

        Integrations use this, so that many embedding objects for one model share its
        weights and compiled programs. The encoder stays loaded until :meth:`release`.
        """
        return cls._shared_registry().get(name_or_path, **kwargs)

    @classmethod
    def release(cls, name_or_path: str | None = None) -> int:
        """Forgets the shared encoders of ``name_or_path`` (all settings), or every shared encoder.

        Their weights and compiled programs are freed once nothing else holds them (an
        embeddings object keeps its encoder alive). Returns how many were dropped.
        """
        return cls._shared_registry().release(name_or_path)

    def tokenize(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids per text, truncated to :attr:`max_length`."""
        return self.tokenizer(texts)

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        batch_size: int | None = None,
        normalize: bool = True,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embeds texts.

        Args:
            texts: a string, or a list of strings.
            batch_size: most texts per device step, across all devices (default: the encoder's).
            normalize: L2-normalise each embedding (GTE's cosine space).
            show_progress: a tqdm bar over texts.

        Returns:
            float32 ``[len(texts), dim]``, in input order; ``[dim]`` for a single string.
            Texts longer than :attr:`max_length` tokens are truncated.

        Raises:
            TypeError: ``texts`` is bytes or a mapping, or an item is not a string (the message names its index).
            ValueError: a text holds a lone surrogate (named by index), or ``batch_size`` is not positive.

        Texts are tokenised a few megabytes at a time, just ahead of the device, so memory stays
        flat however many texts come in one call.

        Safe to call from several threads at once (the encoder's state is read-only).
        Under ``jax.distributed`` with a mesh over several processes, every process
        must call it (collectively, its own texts, maybe none).
        """
        texts, single = _check_texts(texts)
        batch_size = _check_positive("batch_size", batch_size) or self.batch_size
        if isinstance(self.runner, runners.LockstepRunner):  # collective: plans from all of its texts at once
            out = self.encode_tokens(
                self.tokenize(texts), batch_size=batch_size, normalize=normalize, show_progress=show_progress
            )
        else:
            out = np.zeros((len(texts), self.dim), dtype=np.float32)
            step = self._step(normalize)
            with _progress(len(texts), show_progress) as bar:
                for start, stop in _tokenize_chunks(texts, self.tokenizer.window):
                    self.runner.run(step, self.tokenize(texts[start:stop]), out[start:stop], batch_size, bar)
        return out[0] if single else out

    def encode_tokens(
        self,
        token_ids: list[np.ndarray],
        *,
        batch_size: int | None = None,
        normalize: bool = True,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embeds texts already tokenised by :meth:`tokenize` (for callers that also count tokens).

        Returns:
            float32 ``[len(token_ids), dim]``, in input order.
        """
        out = np.zeros((len(token_ids), self.dim), dtype=np.float32)
        batch_size = _check_positive("batch_size", batch_size) or self.batch_size
        if token_ids or isinstance(self.runner, runners.LockstepRunner):  # a collective runs even with none
            with _progress(len(token_ids), show_progress) as bar:
                self.runner.run(self._step(normalize), token_ids, out, batch_size, bar)
        return out

    def plan(self, token_ids: list[np.ndarray], batch_size: int | None = None) -> list[batching.Batch]:
        """The padded batches :meth:`encode_tokens` runs for these token ids (this process's rows)."""
        return self.runner.plan(token_ids, _check_positive("batch_size", batch_size) or self.batch_size)

    def warmup(self, texts: Iterable[str] | None = None, *, batch_size: int | None = None) -> int:
        """Compiles up front the programs :meth:`encode` runs, so that none compiles mid-job.

        Args:
            texts: a sample of the texts to come: only their length buckets are compiled.
                All buckets when None (about 1-2 s a program on a 2-core CPU for a small
                model; 45 programs for a 512-token model with the CPU defaults).
            batch_size: as the calls to come will pass it.

        Covers ``encode(..., normalize=True)``, the default. Under ``jax.distributed`` it is a
        collective like :meth:`encode`. With ``jax.config.update("jax_compilation_cache_dir", DIR)``
        the programs also persist across processes. Returns the number of shapes compiled.
        """
        batch_size = _check_positive("batch_size", batch_size) or self.batch_size
        lengths = None
        if texts is not None:
            sample, _ = _check_texts(list(texts))
            lengths = [len(t) for t in self.tokenize(sample)]
        shapes = self.runner.shapes(batch_size, lengths)
        self.runner.warm(self._step(True), shapes)
        return len(shapes)

    def _step(self, normalize: bool) -> runners.Step:
        return functools.partial(self._forward, self._state, pooling=self.pooling, normalize=normalize)


@contextlib.contextmanager
def _progress(total: int, show: bool) -> Iterator[Any]:
    """A tqdm bar over ``total`` texts, or None."""
    if not show:
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="text", desc="embedding") as bar:
        yield bar
