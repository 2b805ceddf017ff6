"""GTEEncoder: texts in, L2-normalised float32 embeddings out."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import threading
from collections.abc import Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from gte_jax import batching, sharding
from gte_jax.attention import default_impl
from gte_jax.config import GTEConfig
from gte_jax.hub import DEFAULT_MODEL, resolve_model_dir
from gte_jax.modeling import BertModel
from gte_jax.params import find_weights, load_model
from gte_jax.pooling import l2_normalize, pool
from gte_jax.sentence_config import max_seq_length, pooling_mode
from gte_jax.tokenization import Tokenizer

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# encode() tokenises this much ahead of the device at a time (tokenizers keeps every truncated-away
# token of a batch until it returns), never the whole input at once.
TOKENIZE_AHEAD_CHARS = 4 << 20
TOKENIZE_AHEAD_TEXTS = 8192


def _embed(graphdef, state, input_ids, attention_mask, *, pooling: str, normalize: bool):
    model = nnx.merge(graphdef, state)
    hidden = model(input_ids, attention_mask)  # [B, T, D]
    vectors = pool(hidden, attention_mask, pooling)  # [B, D] float32
    return l2_normalize(vectors) if normalize else vectors


def _check_texts(texts) -> tuple[list[str], bool]:
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
    ``mesh``, ``pooling``, ``max_length``, ``dtype``.
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
        self.batch_size = _check_positive("batch_size", batch_size) or default_rows
        self.max_batch_tokens = _check_positive("max_batch_tokens", max_batch_tokens) or default_tokens
        self.name = name
        self.dtype = model.embeddings.word_embeddings.embedding.get_value().dtype
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
                ``model`` (tensor parallelism, for gte-large on small devices).
            batch_size: most texts per device step (per step, across all devices);
                by default 32 on CPU, 256 on accelerators.
            max_batch_tokens: most padded tokens per device step, so long texts get
                fewer rows; by default 1,024 on CPU, 65,536 on accelerators.
            attention_impl: attention kernel name, see :mod:`gte_jax.attention`; the
                backend's fastest by default.
            revision, cache_dir: passed to huggingface_hub for Hub ids.

        Raises:
            ModelNotFoundError: no such directory and the Hub cannot provide it.
            CheckpointError: the weights do not fit the config.
            ValueError: a bad ``dtype`` or ``max_length``.
        """
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r} is not supported; use one of {sorted(DTYPES)}.")
        model_dir = resolve_model_dir(name_or_path, revision=revision, cache_dir=cache_dir)
        config = GTEConfig.from_hf_config(f"{model_dir}/config.json")
        limit = config.max_position_embeddings
        if max_length is None:
            max_length = min(max_seq_length(model_dir) or limit, limit)
        if not 2 <= max_length <= limit:
            raise ValueError(f"max_length {max_length} is out of range; {name_or_path} accepts 2 to {limit} tokens.")
        mesh = mesh if mesh is not None else sharding.default_mesh()
        model = load_model(
            find_weights(model_dir),
            config,
            dtype=DTYPES[dtype],
            attention_impl=attention_impl or default_impl(),
            sharding=functools.partial(sharding.param_sharding, mesh),
        )
        return cls(
            model,
            Tokenizer.from_dir(model_dir, max_length),
            pooling=pooling_mode(model_dir),
            mesh=mesh,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            name=str(name_or_path),
        )

    _shared: dict = {}
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls, name_or_path: str = DEFAULT_MODEL, **kwargs) -> GTEEncoder:
        """Like :meth:`from_pretrained`, but one encoder per process for the same arguments.

        Integrations use this, so that many embedding objects for one model
        share its weights and compiled programs.
        """
        bound = inspect.signature(cls.from_pretrained).bind(name_or_path, **kwargs)
        bound.apply_defaults()  # shared(d) and shared(d, dtype="float32") are the same encoder
        args = dict(bound.arguments)
        name = os.path.expanduser(str(args.pop("name_or_path")))
        if os.path.isdir(name):
            name = os.path.realpath(name)  # "d", "d/" and "./d" too
        key = (name, tuple(sorted(args.items())))
        with cls._shared_lock:
            if key not in cls._shared:
                cls._shared[key] = cls.from_pretrained(name_or_path, **kwargs)
            return cls._shared[key]

    def tokenize(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids per text, truncated to :attr:`max_length`."""
        return self.tokenizer(texts)

    def encode(
        self,
        texts: str | list[str],
        *,
        batch_size: int | None = None,
        normalize: bool = True,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embeds texts.

        Args:
            texts: a string, or a list of strings.
            batch_size: most texts per device step (default: the encoder's).
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
        if sharding.is_multiprocess(self.mesh):  # collective: every process plans from all of its texts
            out = self.encode_tokens(
                self.tokenize(texts), batch_size=batch_size, normalize=normalize, show_progress=show_progress
            )
        else:
            out = np.zeros((len(texts), self.dim), dtype=np.float32)
            with _progress(len(texts), show_progress) as bar:
                for start, stop in _tokenize_chunks(texts, self.tokenizer.window):
                    self._run(self.tokenize(texts[start:stop]), out[start:stop], batch_size, normalize, bar)
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
        with _progress(len(token_ids), show_progress) as bar:
            if sharding.is_multiprocess(self.mesh):
                # Collective: every process calls encode, each with its own texts (maybe none).
                self._run_multiprocess(token_ids, out, batch_size, normalize, bar)
            elif token_ids:
                self._run(token_ids, out, batch_size, normalize, bar)
        return out

    def plan(self, token_ids: list[np.ndarray], batch_size: int | None = None) -> list[batching.Batch]:
        """The padded batches :meth:`encode` runs for these token ids."""
        return batching.plan_batches(
            np.array([len(t) for t in token_ids]),
            buckets=batching.length_buckets(self.max_length),
            batch_size=batch_size or self.batch_size,
            max_batch_tokens=self.max_batch_tokens,
            multiple_of=sharding.data_parallelism(self.mesh),
        )

    def warmup(self, batch_size: int | None = None) -> int:
        """Compiles the program of every (length bucket, row bucket) shape up front.

        Covers ``encode(..., normalize=True)``, the default. Returns the number of shapes.
        With ``jax.config.update("jax_compilation_cache_dir", DIR)`` the compiled programs
        also persist across processes.
        """
        shapes = batching.all_shapes(
            batching.length_buckets(self.max_length),
            batch_size=batch_size or self.batch_size,
            max_batch_tokens=self.max_batch_tokens,
            multiple_of=sharding.data_parallelism(self.mesh),
        )
        in_sharding = sharding.batch_sharding(self.mesh)
        for rows, length in shapes:
            zeros = jax.device_put(np.zeros((rows, length), np.int32), in_sharding)
            self._forward(self._state, zeros, zeros, pooling=self.pooling, normalize=True).block_until_ready()
        return len(shapes)

    def _run(self, token_ids, out, batch_size, normalize, bar):
        in_sharding = sharding.batch_sharding(self.mesh)

        def steps():
            for batch in self.plan(token_ids, batch_size):
                ids, mask = batching.pad_batch(token_ids, batch, self.tokenizer.pad_token_id)
                ids, mask = jax.device_put((ids, mask), in_sharding)
                yield batch.indices, self._forward(self._state, ids, mask, pooling=self.pooling, normalize=normalize)

        self._collect(steps(), out, bar, np.asarray)

    def _run_multiprocess(self, token_ids, out, batch_size, normalize, bar):
        """Every process runs the same sequence of global batches; each fills its rows with its own texts."""
        from jax.experimental import multihost_utils

        in_sharding = sharding.batch_sharding(self.mesh)
        local_devices = sum(d.process_index == jax.process_index() for d in self.mesh.devices.flat)
        buckets = batching.length_buckets(self.max_length)
        counts = batching.bucket_counts(token_ids, buckets)
        all_counts = np.asarray(multihost_utils.process_allgather(counts))  # [processes, buckets]
        plan = batching.plan_lockstep(
            token_ids,
            buckets,
            most_per_bucket=all_counts.max(axis=0),
            batch_size=batch_size,
            max_batch_tokens=self.max_batch_tokens,
            multiple_of=local_devices,
        )
        processes = all_counts.shape[0]

        def steps():
            for batch in plan:
                local = batching.pad_batch(token_ids, batch, self.tokenizer.pad_token_id)
                shape = (batch.rows * processes, batch.length)
                ids, mask = (jax.make_array_from_process_local_data(in_sharding, x, shape) for x in local)
                yield batch.indices, self._forward(self._state, ids, mask, pooling=self.pooling, normalize=normalize)

        def to_local(vectors):
            return np.asarray(multihost_utils.global_array_to_host_local_array(vectors, self.mesh, in_sharding.spec))

        self._collect(steps(), out, bar, to_local)

    @staticmethod
    def _collect(steps, out, bar, to_host):
        """Drains (indices, device result) pairs into ``out`` while the next batches are dispatched."""
        pending = []

        def drain(indices, vectors):
            out[indices] = to_host(vectors)[: len(indices)]
            if bar is not None:
                bar.update(len(indices))

        # Dispatch is asynchronous: padding batch k+1 on the host overlaps the device's work on batch k;
        # only results two steps old are fetched, which bounds the device memory they hold.
        for step in steps:
            pending.append(step)
            if len(pending) > 2:
                drain(*pending.pop(0))
        for step in pending:
            drain(*step)


@contextlib.contextmanager
def _progress(total: int, show: bool):
    """A tqdm bar over ``total`` texts, or None."""
    if not show:
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="text", desc="embedding") as bar:
        yield bar
