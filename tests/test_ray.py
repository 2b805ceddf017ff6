"""gte_jax.ray.Embedder: on a batch in hand (each batch format, bad rows, warm-up), then through Ray Data on a
local cluster (two actors, every row exactly once; an actor killed mid-run; a bad row's error)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

ray = pytest.importorskip("ray", reason='needs Ray Data: pip install "gte-jax[ray]"')
pd = pytest.importorskip("pandas")

from gte_jax.ray import Embedder, InvalidRowError  # noqa: E402

from compiles import CompileCounter  # noqa: E402

DIM = 384

# Ray 2.60 deprecates map_batches' **ray_remote_args (max_restarts, max_task_retries); its defaults restart anyway.
pytestmark = [
    pytest.mark.slow,  # a local Ray cluster: tens of seconds to start
    pytest.mark.filterwarnings("ignore:`ray_remote_args` is deprecated:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def embedder(minilm_dir) -> Embedder:
    """In this process, on the encoder `gte-jax embed` also shares (GTEEncoder.shared on the local mesh)."""
    return Embedder(minilm_dir, warmup=False)


@pytest.fixture(scope="module")
def texts(sts_test) -> list[str]:
    s1, s2, _ = sts_test
    return s1 + s2  # 2,758 sentences, 5-46 tokens


@pytest.fixture(scope="module")
def actor_cache(tmp_path_factory, minilm_dir, texts):
    """A JAX compilation cache for the actors, filled by a process started now: it compiles while this one works.

    Yields the directory and a function that waits for the filling to finish.
    """
    cache = tmp_path_factory.mktemp("jax-cache")
    sample = cache.parent / "warmup-texts.json"
    sample.write_text(json.dumps(texts))
    command = [sys.executable, "-c", FILL_CACHE, minilm_dir, str(sample)]
    fill = subprocess.Popen(command, env={**os.environ, **actor_env(cache)}, stderr=subprocess.PIPE)

    def wait() -> None:
        _, err = fill.communicate(timeout=600)
        assert fill.returncode == 0, err.decode(errors="replace")[-3000:]

    yield cache, wait
    if fill.poll() is None:
        fill.kill()
        fill.wait()


# The actors' encoder (see run_embedder), warmed on the test texts: what their constructors compile.
FILL_CACHE = """
import json, sys
from gte_jax import GTEEncoder
from gte_jax.engine import sharding
model, sample = sys.argv[1:]
GTEEncoder.from_pretrained(model, batch_size=8, mesh=sharding.local_mesh()).warmup(json.load(open(sample)))
"""


def actor_env(cache) -> dict[str, str]:
    return {
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }


@pytest.fixture(scope="module")
def reference(request, embedder, texts) -> np.ndarray:
    """GTEEncoder.encode of every text, in one call (while the actors' cache fills, in another process)."""
    if any("cluster" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("actor_cache")
    return embedder.encoder.encode(texts)


def vectors_of(column) -> np.ndarray:
    """A fixed_size_list<float32>[DIM] column (Arrow array, chunked array or pandas Series) as [rows, DIM]."""
    if isinstance(column, pd.Series):
        column = pa.array(column)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    assert column.type == pa.list_(pa.float32(), DIM)
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, DIM)


# -- one batch, in this process ------------------------------------------------------------------


def test_numpy_batch_gets_fixed_size_lists_and_keeps_every_column(embedder, texts, reference):
    batch = {
        "id": np.arange(100, 140),
        "text": np.array(texts[:40], dtype=object),
        "score": np.linspace(0, 1, 40),
        "features": np.ones((40, 3), np.float32),  # a tensor column, as Ray Data hands it over
    }
    out = embedder(batch)
    assert list(out) == ["id", "text", "score", "features", "embedding"]
    for name in ("id", "text", "score", "features"):
        np.testing.assert_array_equal(out[name], batch[name])
    np.testing.assert_allclose(vectors_of(out["embedding"]), reference[:40], atol=1e-5)


def test_pandas_batch(minilm_dir, texts, reference):
    df = pd.DataFrame({"doc": [f"d{i}" for i in range(30)], "body": texts[40:70]}, index=range(500, 530))
    out = Embedder(minilm_dir, text_column="body", output_column="vec", warmup=False)(df)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == ["doc", "body", "vec"]
    assert list(out.index) == list(df.index) and out["doc"].tolist() == df["doc"].tolist()
    np.testing.assert_allclose(vectors_of(out["vec"]), reference[40:70], atol=1e-5)


def test_arrow_batch(embedder, texts, reference):
    table = pa.table({"text": texts[70:90], "n": pa.array(range(20), pa.int32())})
    out = embedder(table)
    assert isinstance(out, pa.Table) and out.column_names == ["text", "n", "embedding"]
    assert out.select(["text", "n"]).equals(table)
    np.testing.assert_allclose(vectors_of(out.column("embedding")), reference[70:90], atol=1e-5)


def test_empty_batch(embedder):
    out = embedder({"id": np.array([], np.int64), "text": np.array([], dtype=object)})
    assert len(out["embedding"]) == 0 and out["embedding"].type == pa.list_(pa.float32(), DIM)


# -- bad rows ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, reason",
    [
        (None, "is null"),
        (float("nan"), "is null"),
        (7, "is int, not a string"),
        (b"bytes", "is bytes, not a string (decode it first)"),
        ("bad \ud800 surrogate", "holds a lone surrogate"),
    ],
)
def test_bad_row_fails_naming_its_id_and_column(embedder, value, reason):
    batch = {"id": np.array([10, 11, 12, 13]), "text": np.array(["a", "b", value, value], dtype=object)}
    with pytest.raises(InvalidRowError, match="skip_invalid=True") as e:
        embedder(batch)
    assert str(e.value).startswith(f"row id=12: column 'text' {reason}")
    assert "(1 more such row in this batch)" in str(e.value)


def test_bad_row_without_an_id_column_is_named_by_position(minilm_dir, embedder):
    with pytest.raises(InvalidRowError, match=r"^row at index 1 of this batch: column 'text' is null \(no 'id'"):
        embedder({"text": np.array(["a", None], dtype=object)})
    df = pd.DataFrame({"key": ["k0", "k1"], "text": ["a", None]})  # pandas 3 stores the missing string as NaN
    with pytest.raises(InvalidRowError, match=r"^row id='k1': column 'text' is null;"):
        Embedder(minilm_dir, id_column="key", warmup=False)(df)
    with pytest.raises(InvalidRowError, match=r"^row id=4: column 'text' is int, not a string"):
        embedder(pa.table({"id": [4], "text": [5]}))  # a whole column of the wrong type


def test_skip_invalid_drops_and_counts(minilm_dir, texts, reference, caplog):
    skipper = Embedder(minilm_dir, skip_invalid=True, warmup=False)
    values = list(texts[:10])
    values[2], values[5], values[6] = None, 42, float("nan")
    batch = {"id": np.arange(10), "text": np.array(values, dtype=object), "tag": np.array(list("abcdefghij"))}
    with caplog.at_level(logging.WARNING, logger="gte_jax.ray"):
        out = skipper(batch)
    keep = [0, 1, 3, 4, 7, 8, 9]
    np.testing.assert_array_equal(out["id"], keep)
    np.testing.assert_array_equal(out["tag"], np.array(list("abcdefghij"))[keep])
    np.testing.assert_allclose(vectors_of(out["embedding"]), reference[keep], atol=1e-5)
    assert skipper.invalid_rows == 3 and skipper.rows_embedded == 7
    assert skipper.invalid_examples == [
        "row id=2: column 'text' is null",
        "row id=5: column 'text' is int, not a string",
        "row id=6: column 'text' is null",
    ]
    assert "dropped 3 invalid row(s) of 10 in a batch, 3 so far" in caplog.text

    df = pd.DataFrame({"id": ["x", "y", "z"], "text": [None, texts[0], 3.5]}, index=[7, 8, 9])
    out = skipper(df)
    assert out["id"].tolist() == ["y"] and list(out.index) == [8]
    np.testing.assert_allclose(vectors_of(out["embedding"]), reference[:1], atol=1e-5)
    out = skipper(pa.table({"text": [None, None]}))  # nothing left: an empty column of the right type
    assert out.num_rows == 0 and out.schema.field("embedding").type == pa.list_(pa.float32(), DIM)
    assert skipper.invalid_rows == 7


def test_misuse_is_refused_with_what_to_do(minilm_dir, embedder):
    with pytest.raises(KeyError, match=r"no column 'text' \(it has id, body\); pass Embedder's text_column"):
        embedder({"id": np.arange(2), "body": np.array(["a", "b"], dtype=object)})
    with pytest.raises(ValueError, match="already has a column 'embedding'; pass another output_column"):
        embedder({"text": np.array(["a"], dtype=object), "embedding": np.zeros(1)})
    with pytest.raises(TypeError, match=r"batch_format 'numpy', 'pandas' or 'pyarrow'\), not list\."):
        embedder(["a", "b"])
    with pytest.raises(TypeError, match="unknown argument.*dtyp; it takes text_column.*dtype"):
        Embedder(minilm_dir, dtyp="bfloat16")
    with pytest.raises(TypeError, match="warmup must be True, False or a list of sample texts, not str"):
        Embedder(minilm_dir, warmup="some text")
    with pytest.raises(ValueError, match="text_column and output_column are both 'x'"):
        Embedder(minilm_dir, text_column="x", output_column="x")


def test_warmup_leaves_no_compile_on_the_data_path(minilm_dir, texts):
    settings = {"max_length": 24, "batch_size": 2}  # 2 length buckets x 2 row counts: 4 programs in all
    sample = Embedder(minilm_dir, warmup=["one short text"], **settings)  # only the 16-token bucket's 2
    with CompileCounter() as counter:
        sample({"text": np.array(["two short texts", "and three", "four"], dtype=object)})
    assert counter.count == 0
    full = Embedder(minilm_dir, **settings)  # the default: every program (the same encoder: the other 2)
    with CompileCounter() as counter:
        full({"text": np.array(texts[:50] + ["a long text " * 40], dtype=object)})
    assert counter.count == 0


# -- Ray Data on a local cluster ----------------------------------------------------------------


class RecordingEmbedder(Embedder):
    """Logs each call's process; with ``die_at``, exits its process at that call (once per run: a marker file).

    ``os._exit`` skips every cleanup, as a preempted node or an OOM kill does.
    """

    def __init__(self, *args, log_dir: str, die_at: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_dir, self.die_at, self.calls = log_dir, die_at, 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls == self.die_at:
            try:
                fd = os.open(os.path.join(self.log_dir, "died"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass  # someone died already: this run's one death is spent
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os._exit(1)
        out = super().__call__(batch)
        with open(os.path.join(self.log_dir, "calls"), "a") as f:
            f.write(f"{os.getpid()} {len(out['id'])}\n")
        return out


@pytest.fixture(scope="module")
def cluster(actor_cache):
    """One local Ray cluster for the module: 2 CPUs, no dashboard; the actors load their programs from a cache."""
    cache, wait = actor_cache
    wait()
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this module
    ray.init(
        num_cpus=2,
        num_gpus=1,  # a logical GPU, for the fractional-GPU probe; JAX here sees only the CPU
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        object_store_memory=256 << 20,
        runtime_env={"env_vars": actor_env(cache)},
    )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.wait_for_min_actors_s = 300  # batches go out once the whole pool is up, so every actor gets some
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(texts) -> pa.Table:
    """The STS-B sentences with columns beside the text: ids, a float, a list."""
    n = len(texts)
    return pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "text": texts,
            "score": pa.array(np.arange(n) / 7.0),
            "tags": [[f"t{i % 3}"] * (i % 3) for i in range(n)],
        }
    )


def run_embedder(corpus: pa.Table, *, blocks: int, actors: int, batch_format: str, **constructor_kwargs) -> pa.Table:
    """``corpus`` (in ``blocks`` blocks) through ``map_batches`` with a pool of ``actors``; every output block.

    The actors take 8 texts a device step (the vectors do not depend on the batch), as the cache was filled.
    """
    step = -(-corpus.num_rows // blocks)
    ds = ray.data.from_arrow([corpus.slice(k, step) for k in range(0, corpus.num_rows, step)])
    ds = ds.map_batches(
        RecordingEmbedder,
        fn_constructor_kwargs={"batch_size": 8, **constructor_kwargs},
        batch_format=batch_format,
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=128,
        max_restarts=2,  # Ray Data's default is -1 (restart forever); these bound it
        max_task_retries=2,
    )
    return pa.concat_tables(ray.get(ds.to_arrow_refs()))


def check_every_row_once(out: pa.Table, corpus: pa.Table, reference: np.ndarray) -> None:
    out = out.sort_by("id")
    assert out.column("id").to_pylist() == list(range(corpus.num_rows))  # each row exactly once
    assert out.select(corpus.column_names).equals(corpus)  # every other column intact
    assert out.schema.field("embedding").type == pa.list_(pa.float32(), DIM)
    np.testing.assert_allclose(vectors_of(out.column("embedding")), reference, atol=1e-5)


def calls(log_dir) -> list[tuple[int, int]]:
    """(pid, rows) per finished call."""
    return [tuple(map(int, line.split())) for line in (log_dir / "calls").read_text().splitlines()]


@pytest.mark.slow
def test_two_actors_return_every_row_once(cluster, minilm_dir, corpus, texts, reference, tmp_path):
    out = run_embedder(
        corpus, blocks=8, actors=2, batch_format="pyarrow", model=minilm_dir, warmup=texts, log_dir=str(tmp_path)
    )
    check_every_row_once(out, corpus, reference)
    done = calls(tmp_path)
    assert sum(rows for _, rows in done) == corpus.num_rows
    assert len({pid for pid, _ in done}) == 2  # both actors worked


@pytest.mark.slow
def test_actor_killed_mid_run_is_restarted_and_no_row_is_lost_or_doubled(
    cluster, minilm_dir, corpus, texts, reference, tmp_path
):
    corpus = corpus.slice(0, 1200).drop_columns(["tags"])  # numpy turns list columns into Python objects
    reference = reference[:1200]
    out = run_embedder(
        corpus,
        blocks=8,
        actors=2,
        batch_format="numpy",
        model=minilm_dir,
        warmup=texts,
        log_dir=str(tmp_path),
        die_at=3,
    )
    dead = int((tmp_path / "died").read_text())
    check_every_row_once(out, corpus, reference)
    done = calls(tmp_path)
    pids = {pid for pid, _ in done}
    assert dead in pids and len(pids) == 3  # it died mid-run, after two batches; its restart (a new process) worked
    # Ray retried the whole task it held (batches it had finished included), yet each row came out once.
    assert sum(rows for _, rows in done) >= corpus.num_rows


@pytest.mark.slow
def test_bad_row_reaches_the_driver_named(cluster, minilm_dir, corpus, texts, tmp_path):
    bad = corpus.slice(0, 300).set_column(1, "text", pa.array([*texts[:99], None, *texts[100:300]]))
    with pytest.raises(Exception, match="row id=99: column 'text' is null") as e:
        run_embedder(
            bad, blocks=2, actors=1, batch_format="pandas", model=minilm_dir, warmup=texts, log_dir=str(tmp_path)
        )
    assert "skip_invalid=True" in str(e.value)


def test_fraction_of_a_gpu_turns_off_preallocation(cluster):
    if any(name.startswith("XLA_PYTHON_CLIENT_") for name in os.environ):
        pytest.skip("this environment sets JAX's GPU memory variables itself")

    @ray.remote(num_cpus=0)
    def probe() -> str | None:
        from gte_jax.ray import _share_gpu_memory

        _share_gpu_memory()
        return os.environ.pop("XLA_PYTHON_CLIENT_PREALLOCATE", None)  # leaves the (reusable) worker as it was

    assert ray.get(probe.options(num_gpus=0.5).remote()) == "false"  # a second actor must fit beside it
    assert ray.get(probe.options(num_gpus=1).remote()) is None  # a whole GPU: JAX's default stands
