"""GTEEncoder: texts in, L2-normalised float32 embeddings out.

The encoder holds the model, the tokenizer and two jitted forwards (pooled vectors,
and the hidden states for ``output_value="token_embeddings"``). Planning and
execution belong to a runner (:mod:`gte_jax.engine.runners`), loading to
:mod:`gte_jax.engine.loading`, sharing between callers to :mod:`gte_jax.engine.registry`; the
sentence-transformers options to :mod:`gte_jax.engine.prompts`, :mod:`gte_jax.engine.quantization`
and :mod:`gte_jax.models.similarity`.

``encode`` follows ``SentenceTransformer.encode`` (6.x): prompt prepended (its tokens count
against ``max_length``) → tokenise → model → pool → ``truncate_dim`` → normalise → quantise.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from gte_jax.checkpoints.hub import DEFAULT_MODEL
from gte_jax.checkpoints.sentence_config import SentenceConfig
from gte_jax.engine import batching, runners, sharding
from gte_jax.engine.inputs import (
    EncodeOptions,
    check_positive,
    check_ranges,
    check_texts,
    check_truncate_dim,
    progress_bar,
    tokenize_chunks,
)
from gte_jax.engine.loading import load
from gte_jax.engine.prompts import (
    check_prompts,
    prompt_tokens_if_too_long,
    resolve_prompt,
    too_long_prompt,
)
from gte_jax.engine.quantization import check_precision, quantize_embeddings
from gte_jax.engine.registry import Registry
from gte_jax.engine.st_surface import SentenceTransformerSurface
from gte_jax.engine.tokenization import Tokenizer, lone_surrogate, mark_unpooled, pooled, unpack_segments
from gte_jax.models import param_dtype
from gte_jax.models import similarity as sim
from gte_jax.models.bert.config import GTEConfig
from gte_jax.models.bert.modeling import BertModel
from gte_jax.models.int8 import is_quantized
from gte_jax.models.pooling import l2_normalize, pool, pooling_modes

if TYPE_CHECKING:
    from typing_extensions import Unpack

OUTPUT_VALUES = ("sentence_embedding", "token_embeddings")


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
    ids, _ = unpack_segments(input_ids)
    hidden = model(ids, attention_mask)  # [B, T, D]
    pool_mask = attention_mask * pooled(input_ids)  # a prompt's tokens are attended to, not pooled, if so marked
    vectors = pool(hidden, pool_mask, pooling)  # [B, modes * D] float32
    return l2_normalize(vectors) if normalize else vectors


def _hidden_states(
    graphdef: nnx.GraphDef[BertModel], state: nnx.State, input_ids: jax.Array, attention_mask: jax.Array
) -> jax.Array:
    """The last hidden states in float32, ``[B, T, D]``: ``output_value="token_embeddings"``."""
    return nnx.merge(graphdef, state)(unpack_segments(input_ids)[0], attention_mask).astype(jnp.float32)


class GTEEncoder(SentenceTransformerSurface):
    """A GTE (BERT) embedding model: tokeniser, Flax NNX module, pooling, all jitted.

    Build one with :meth:`from_pretrained`. Attributes: ``model`` (the
    :class:`~gte_jax.models.bert.modeling.BertModel`), ``tokenizer``, ``config``, ``dim`` (the size of
    :meth:`encode`'s vectors), ``mesh``, ``pooling``, ``max_length``, ``dtype``, ``batch_size``,
    ``max_batch_tokens``, and the sentence-transformers settings ``prompts``,
    ``default_prompt_name``, ``similarity_fn_name``, ``truncate_dim``.
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
        prompts: Mapping[str, str] | None = None,
        default_prompt_name: str | None = None,
        similarity_fn_name: str | None = None,
        truncate_dim: int | None = None,
        include_prompt: bool = True,
        source_dir: str | None = None,
        sentence: SentenceConfig | None = None,
    ):
        self.model = model
        self.source_dir = source_dir  # the resolved directory (a Hub id's revision in the cache): saving reads it
        self._sentence = sentence or SentenceConfig(pooling=pooling, normalize_module=True)
        self.tokenizer = tokenizer
        self.config: GTEConfig = model.config
        self.pooling = pooling
        self.pooled_dim = self.config.hidden_size * len(pooling_modes(pooling))
        self.prompts = check_prompts(prompts, default_prompt_name)
        self.default_prompt_name = default_prompt_name
        self.similarity_fn_name = sim.check_similarity_fn_name(similarity_fn_name or "cosine")
        self.include_prompt = include_prompt
        self._checked_prompts: set[str] = set()  # prompts already checked for length (a warning once each)
        self.truncate_dim: int | None = None
        self.truncate_dim = self._truncate_dim(truncate_dim)
        self.dim = self.truncate_dim or self.pooled_dim
        self.mesh = mesh if mesh is not None else sharding.default_mesh()
        default_rows, default_tokens = batching.default_batching(self.mesh.devices.flat[0].platform)
        self.batch_size: int = check_positive("batch_size", batch_size) or default_rows
        self.max_batch_tokens: int = check_positive("max_batch_tokens", max_batch_tokens) or default_tokens
        self.name = name
        self.dtype: str = "int8" if is_quantized(model) else str(param_dtype(model))
        self.runner: runners.Runner = runners.for_mesh(
            self.mesh, batching.length_buckets(self.max_length), self.max_batch_tokens, tokenizer.pad_token_id
        )
        self._graphdef, self._state = nnx.split(model)
        self._forward = jax.jit(
            functools.partial(_embed, self._graphdef),
            static_argnames=("pooling", "normalize"),
            out_shardings=sharding.batch_sharding(self.mesh),
        )
        # A second program for token embeddings, over the same length buckets, so the pooled path stays as it is.
        self._hidden = jax.jit(
            functools.partial(_hidden_states, self._graphdef), out_shardings=sharding.batch_sharding(self.mesh)
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
        prompts: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        default_prompt_name: str | None = None,
        similarity_fn_name: str | None = None,
        truncate_dim: int | None = None,
    ) -> GTEEncoder:
        """Loads a BERT embedding model from a local directory or the Hugging Face Hub.

        Args:
            name_or_path: a Hub id (``thenlper/gte-small``) or a directory in Hugging
                Face layout or written by ``gte-jax convert``.
            dtype: ``"float32"`` (matches PyTorch), ``"bfloat16"`` (bf16 weights and matmul
                operands, float32 accumulation; min cosine to float32 about 0.99999) or ``"int8"``
                (dense layers dynamically quantised, :mod:`gte_jax.models.int8`; about 0.99). On CPU both
                are faster than float32 where the CPU has the instructions (AVX512-BF16 or AMX for
                bfloat16, AVX512-VNNI, AVX-VNNI or AMX for int8), and a warning says when it lacks them.
            max_length: truncation length in tokens; defaults to the checkpoint's
                ``sentence_bert_config.json`` ``max_seq_length``, else its position limit (512).
            mesh: devices to run on; a 1-D ``data`` mesh over all devices by default. A mesh
                with axes ``("data", "model")`` also splits attention heads and the FFN over
                ``model`` (tensor parallelism, for gte-large on small devices). A mesh over
                several processes makes :meth:`encode` a collective (see :mod:`gte_jax.engine.runners`).
            batch_size: most texts per device step, across all devices of the mesh (in every
                mode); by default the backend's: 64 on CPU, 256 on accelerators.
            max_batch_tokens: most padded tokens per step, across all devices of the mesh, so
                long texts get fewer rows; by default 1,024 on CPU, 65,536 on accelerators.
            attention_impl: attention kernel name, see :mod:`gte_jax.kernels.attention`; the
                backend's fastest by default.
            revision, cache_dir: passed to huggingface_hub for Hub ids.
            prompts: prompt name → text (``{"query": "query: "}``), merged over the checkpoint's
                ``config_sentence_transformers.json`` prompts (these win on a shared name).
            default_prompt_name: the prompt :meth:`encode` uses when given none; by default the
                checkpoint's, if it names one.
            similarity_fn_name: ``"cosine"``, ``"dot"``, ``"euclidean"`` or ``"manhattan"``, for
                :meth:`similarity`; by default the checkpoint's, else cosine.
            truncate_dim: keep only the first this many dimensions of every sentence embedding
                (Matryoshka), unless a call passes its own; by default the checkpoint's, else all.

        Raises:
            ModelNotFoundError: no such directory and the Hub cannot provide it.
            ConfigError: a malformed ``config.json`` (the message names the field), or
                sentence-transformers files that name a module or pooling gte_jax does not run.
            CheckpointError: the weights do not fit the config, or the tokenizer's ids the embedding table.
            ValueError: a bad ``dtype``, ``max_length``, ``batch_size``, ``max_batch_tokens``,
                ``similarity_fn_name``, ``truncate_dim`` or ``default_prompt_name``.
        """
        check_positive("batch_size", batch_size)  # before the (slow) load
        check_positive("max_batch_tokens", max_batch_tokens)
        check_truncate_dim(truncate_dim)
        if similarity_fn_name is not None:
            sim.check_similarity_fn_name(similarity_fn_name)
        user_prompts = check_prompts(prompts, None)
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
        st = loaded.sentence
        return cls(
            loaded.model,
            loaded.tokenizer,
            pooling=st.pooling,
            mesh=mesh,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            name=str(name_or_path),
            prompts={**st.prompts, **user_prompts},
            default_prompt_name=default_prompt_name or st.default_prompt_name,
            similarity_fn_name=similarity_fn_name or st.similarity_fn_name,
            truncate_dim=truncate_dim or st.truncate_dim,
            include_prompt=st.include_prompt,
            source_dir=loaded.model_dir,
            sentence=st,
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
        if isinstance(kwargs.get("prompts"), Mapping):  # the registry's key must be hashable
            kwargs["prompts"] = tuple(sorted(kwargs["prompts"].items()))
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

    @overload
    def encode(
        self,
        texts: str | Sequence[str],
        *,
        output_value: Literal["sentence_embedding"] = ...,
        **options: Unpack[EncodeOptions],
    ) -> np.ndarray: ...
    @overload
    def encode(
        self, texts: str | Sequence[str], *, output_value: Literal["token_embeddings"], **options: Unpack[EncodeOptions]
    ) -> list[np.ndarray] | np.ndarray: ...
    @overload
    def encode(
        self, texts: str | Sequence[str], *, output_value: str, **options: Unpack[EncodeOptions]
    ) -> np.ndarray | list[np.ndarray]: ...

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        precision: str = "float32",
        output_value: str = "sentence_embedding",
        normalize: bool = True,
        batch_size: int | None = None,
        show_progress: bool = False,
        ranges: np.ndarray | None = None,
        calibration_embeddings: np.ndarray | None = None,
    ) -> np.ndarray | list[np.ndarray]:
        """Embeds texts, with the options of ``SentenceTransformer.encode``.

        Args:
            texts: a string, or a list of strings.
            prompt_name: the name of one of :attr:`prompts` to put before every text.
            prompt: a string to put before every text (``""``: none); wins over ``prompt_name``.
                Without either, the ``default_prompt_name`` prompt, if the encoder has one.
            truncate_dim: keep the first this many dimensions (Matryoshka), before normalising;
                by default the encoder's :attr:`truncate_dim` (all dimensions when None).
            precision: ``"float32"``, or ``"int8"``, ``"uint8"``, ``"binary"``, ``"ubinary"``
                (see :mod:`gte_jax.engine.quantization`), applied last.
            output_value: ``"sentence_embedding"``, or ``"token_embeddings"``: each text's last
                hidden states, one float32 ``[tokens, hidden]`` array per text (its real tokens,
                [CLS] and [SEP] included), not pooled, truncated or normalised.
            normalize: L2-normalise each embedding (GTE's cosine space), after ``truncate_dim``.
            batch_size: most texts per device step, across all devices (default: the encoder's).
            show_progress: a tqdm bar over texts.
            ranges: ``[2, dim]`` per-dimension minima and maxima for ``int8`` / ``uint8``.
            calibration_embeddings: ``[m, dim]`` float embeddings to take ``int8`` / ``uint8`` ranges
                from. Without these two the ranges come from this call's own vectors (as
                sentence-transformers does): fix them to compare vectors of different calls.

        Returns:
            ``[len(texts), dim]`` (``[dim]`` for a single string), in input order: float32, or int8 /
            uint8 at those precisions, or ``[len(texts), ceil(dim / 8)]`` packed bits (int8 for
            ``binary``, uint8 for ``ubinary``). For token embeddings, a list of arrays (one array
            for a single string). Texts longer than :attr:`max_length` tokens (prompt included)
            are truncated.

        Raises:
            TypeError: ``texts`` is bytes or a mapping, or an item is not a string (the message names its index).
            ValueError: a text holds a lone surrogate (named by index), or an option is invalid: ``batch_size``
                not positive, an unknown ``prompt_name``, ``precision`` or ``output_value``, a ``truncate_dim``
                outside 1 to the model's dimension, ``ranges`` of the wrong shape, or int8 ranges to be
                computed from a single text.

        Texts are tokenised a few megabytes at a time, just ahead of the device, so memory stays
        flat however many texts come in one call.

        Safe to call from several threads at once (the encoder's state is read-only).
        Under ``jax.distributed`` with a mesh over several processes, every process
        must call it (collectively, its own texts, maybe none).
        """
        texts, single = check_texts(texts)
        batch_size = check_positive("batch_size", batch_size) or self.batch_size
        precision = check_precision(precision)
        check_ranges(precision, ranges, calibration_embeddings)
        truncate_dim = self._truncate_dim(truncate_dim)
        if output_value not in OUTPUT_VALUES:
            raise ValueError(f"output_value {output_value!r} is not supported; use one of {OUTPUT_VALUES}.")
        text = resolve_prompt(self.prompts, self.default_prompt_name, prompt, prompt_name)
        tokens = functools.partial(self._prompted_ids, prompt=text, unpooled=self._prompt_tokens(text))
        out: np.ndarray | list[np.ndarray]
        if output_value == "token_embeddings":
            out = self._token_embeddings(texts, tokens, batch_size, show_progress)
        else:
            out = self._sentence_embeddings(texts, tokens, batch_size, normalize, truncate_dim, show_progress)
        if precision != "float32":
            out = quantize_embeddings(out, precision, ranges=ranges, calibration_embeddings=calibration_embeddings)
        return out[0] if single else out

    def encode_tokens(
        self,
        token_ids: list[np.ndarray],
        *,
        batch_size: int | None = None,
        normalize: bool = True,
        show_progress: bool = False,
        truncate_dim: int | None = None,
    ) -> np.ndarray:
        """Embeds texts already tokenised by :meth:`tokenize` (for callers that also count tokens).

        ``truncate_dim`` as in :meth:`encode` (the encoder's by default).

        Returns:
            float32 ``[len(token_ids), dim]``, in input order.
        """
        batch_size = check_positive("batch_size", batch_size) or self.batch_size
        return self._pooled(token_ids, batch_size, normalize, self._truncate_dim(truncate_dim), show_progress)

    def plan(self, token_ids: list[np.ndarray], batch_size: int | None = None) -> list[batching.Batch]:
        """The padded batches :meth:`encode_tokens` runs for these token ids (this process's rows)."""
        return self.runner.plan(token_ids, check_positive("batch_size", batch_size) or self.batch_size)

    def encode_batches(
        self, token_ids: list[np.ndarray], batches: list[batching.Batch], *, normalize: bool = True
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Runs some of :meth:`plan`'s batches of ``token_ids``, one device step each, in the given order.

        For a caller that schedules steps itself (the server): yields ``(indices, vectors)`` as each
        step finishes, ``vectors[j]`` being :meth:`encode_tokens`'s row for ``token_ids[indices[j]]``.
        """
        truncate_dim = self._truncate_dim(None)
        step = self._step(normalize and truncate_dim is None)
        for indices, vectors in self.runner.run(step, token_ids, batches):
            yield indices, sim.truncate_rows(vectors, truncate_dim, normalize)

    def warmup(
        self,
        texts: Iterable[str] | None = None,
        *,
        batch_size: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Compiles up front the programs :meth:`encode` runs, so that none compiles mid-job.

        Args:
            texts: a sample of the texts to come: only their length buckets are compiled.
                All buckets when None (about 1-2 s a program on a 2-core CPU for a small
                model; 48 programs for a 512-token model with the CPU defaults).
            batch_size: as the calls to come will pass it.
            progress: called with ``(compiled, total)`` before the first shape and after each one.

        Covers ``encode(..., normalize=True)``, the default (``output_value="token_embeddings"`` and
        ``truncate_dim`` run programs of their own). Under ``jax.distributed`` it is a
        collective like :meth:`encode`. With ``jax.config.update("jax_compilation_cache_dir", DIR)``
        the programs also persist across processes. Returns the number of shapes compiled.
        """
        batch_size = check_positive("batch_size", batch_size) or self.batch_size
        lengths = None
        if texts is not None:
            sample, _ = check_texts(list(texts))
            lengths = [len(t) for t in self.tokenize(sample)]
        shapes = self.runner.shapes(batch_size, lengths)
        if progress is None:
            self.runner.warm(self._step(True), shapes)
            return len(shapes)
        progress(0, len(shapes))
        for done, shape in enumerate(shapes, 1):
            self.runner.warm(self._step(True), [shape])
            progress(done, len(shapes))
        return len(shapes)

    def _step(self, normalize: bool) -> runners.Step:
        return functools.partial(self._forward, self._state, pooling=self.pooling, normalize=normalize)

    def _truncate_dim(self, value: int | None) -> int | None:
        """``value`` (the encoder's default when None) checked, or None when it keeps every dimension."""
        value = check_truncate_dim(self.truncate_dim if value is None else value)
        if value is not None and value > self.pooled_dim:
            dims = self.pooled_dim
            raise ValueError(f"truncate_dim {value} is more than this model's {dims} dimensions; use 1 to {dims}.")
        return None if value == self.pooled_dim else value

    def prepare(
        self, texts: list[str], *, prompt: str | None = None, prompt_name: str | None = None
    ) -> list[np.ndarray]:
        """The token ids :meth:`encode` runs for ``texts``: the one path from texts to ids, which the server, the
        corpus job and Ray take too.

        The prompt (``prompt``, else ``prompt_name``'s, else the default prompt's) is put before each text;
        under ``include_prompt: false`` its tokens are marked so that pooling leaves them out, as
        sentence-transformers does (they are still attended to).

        Raises:
            ValueError: an unknown ``prompt_name``, or a prompt holding a lone surrogate.
        """
        text = resolve_prompt(self.prompts, self.default_prompt_name, prompt, prompt_name)
        return self._prompted_ids(texts, text, self._prompt_tokens(text))

    def _prompt_tokens(self, prompt: str) -> int:
        """How many leading tokens pooling skips for ``prompt`` (checked once): sentence-transformers'
        ``prompt_length``, the prompt's tokens with the leading special token, under ``include_prompt: false``;
        else 0."""
        if not prompt:
            return 0
        at = lone_surrogate(prompt)
        if at is not None:
            raise ValueError(f"prompt holds a lone surrogate at character {at}; drop it.")
        if prompt not in self._checked_prompts:
            self._checked_prompts.add(prompt)
            count = prompt_tokens_if_too_long(self.tokenizer, prompt)
            if count is not None:
                message = too_long_prompt(prompt, count, self.max_length)
                warnings.warn(f"{message}; use a shorter prompt or a larger max_length.", RuntimeWarning, stacklevel=3)
        return 0 if self.include_prompt else len(self.tokenize([prompt])[0]) - 1

    def _prompted_ids(self, texts: list[str], prompt: str, unpooled: int) -> list[np.ndarray]:
        ids = self.tokenize([prompt + t for t in texts] if prompt else texts)
        return [mark_unpooled(t, unpooled) for t in ids] if unpooled else ids

    def _sentence_embeddings(
        self,
        texts: list[str],
        tokens: Callable[[list[str]], list[np.ndarray]],
        batch_size: int,
        normalize: bool,
        truncate_dim: int | None,
        show_progress: bool,
    ) -> np.ndarray:
        out = np.zeros((len(texts), self.pooled_dim), dtype=np.float32)
        step = self._step(normalize and truncate_dim is None)  # with truncation, normalising waits for the cut
        with progress_bar(len(texts), show_progress) as bar:
            for start, stop in self._chunks(texts):
                for indices, vectors in self._run(step, tokens(texts[start:stop]), batch_size, bar):
                    out[start + indices] = vectors
        return sim.truncate_rows(out, truncate_dim, normalize)

    def _chunks(self, texts: list[str]) -> list[tuple[int, int]]:
        """Where :meth:`encode` cuts ``texts`` to tokenise a few MB at a time. Under ``jax.distributed`` every
        process runs as many (collective) chunks as the busiest one, empty ones at the end."""
        chunks = list(tokenize_chunks(texts, self.tokenizer.window))
        if isinstance(self.runner, runners.LockstepRunner):
            most = self.runner.most_of(len(chunks))
            chunks += [(len(texts), len(texts))] * (most - len(chunks))
        return chunks

    def _pooled(
        self,
        token_ids: list[np.ndarray],
        batch_size: int,
        normalize: bool,
        truncate_dim: int | None,
        show_progress: bool,
    ) -> np.ndarray:
        """Sentence embeddings of token ids, ``truncate_dim`` already resolved (None: every dimension)."""
        out = np.zeros((len(token_ids), self.pooled_dim), dtype=np.float32)
        if token_ids or isinstance(self.runner, runners.LockstepRunner):  # a collective runs even with none
            with progress_bar(len(token_ids), show_progress) as bar:
                step = self._step(normalize and truncate_dim is None)
                for indices, vectors in self._run(step, token_ids, batch_size, bar):
                    out[indices] = vectors
        return sim.truncate_rows(out, truncate_dim, normalize)

    def _token_embeddings(
        self,
        texts: list[str],
        tokens: Callable[[list[str]], list[np.ndarray]],
        batch_size: int,
        show_progress: bool,
    ) -> list[np.ndarray]:
        rows = [np.zeros((0, self.config.hidden_size), np.float32)] * len(texts)
        step = functools.partial(self._hidden, self._state)
        with progress_bar(len(texts), show_progress) as bar:
            for start, stop in self._chunks(texts):
                token_ids = tokens(texts[start:stop])
                for indices, hidden in self._run(step, token_ids, batch_size, bar):
                    for j, i in enumerate(indices):
                        rows[start + i] = np.array(hidden[j, : len(token_ids[i])])  # a copy: frees the batch
        return rows

    def _run(
        self, step: runners.Step, token_ids: list[np.ndarray], batch_size: int, bar: Any
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The runner's ``(indices, results)`` for all of ``token_ids``, as :meth:`plan` batches them."""
        for indices, results in self.runner.run(step, token_ids, self.runner.plan(token_ids, batch_size)):
            yield indices, results
            if bar is not None:
                bar.update(len(indices))
