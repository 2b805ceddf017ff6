"""gte_jax.mteb: MTEBEncoder (mteb v2's EncoderProtocol) and MTEBReranker (its CrossEncoderProtocol), and
mteb.evaluate's scores against sentence-transformers.

The STS task is STS Benchmark's test split from tests/data (an ``AbsTaskSTS`` whose ``load_data`` builds the
``DatasetDict`` itself, so nothing comes from the Hub), run with ``cache=None``: mteb writes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np
import pytest

# mteb makes its results cache folder (~/.cache/mteb) when imported: point it at a temporary one first.
OWN_CACHE = "MTEB_CACHE" not in os.environ
MTEB_CACHE = os.environ["MTEB_CACHE"] if not OWN_CACHE else tempfile.mkdtemp(prefix="gte-jax-test-mteb-")
os.environ["MTEB_CACHE"] = MTEB_CACHE
mteb = pytest.importorskip("mteb")

from datasets import Dataset, DatasetDict  # noqa: E402
from mteb.abstasks.retrieval import AbsTaskRetrieval  # noqa: E402
from mteb.abstasks.sts import AbsTaskSTS  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402
from mteb.models import CrossEncoderProtocol, EncoderProtocol  # noqa: E402
from mteb.types import PromptType  # noqa: E402

from gte_jax import GTEEncoder, GTEReranker  # noqa: E402
from gte_jax.mteb import MTEBEncoder, MTEBReranker  # noqa: E402

MINILM_STSB = 0.8203  # all-MiniLM-L6-v2's STSBenchmark cosine Spearman on the MTEB leaderboard


@pytest.fixture(scope="module", autouse=True)
def _remove_the_temporary_cache():
    yield
    if OWN_CACHE:
        shutil.rmtree(MTEB_CACHE, ignore_errors=True)


class LocalSTSBenchmark(AbsTaskSTS):
    """mteb's STSBenchmark task, its data read from tests/data/stsbenchmark/sts-test.csv."""

    min_score = 0
    max_score = 5
    metadata = TaskMetadata(
        name="LocalSTSBenchmark",
        dataset={"path": "local/stsbenchmark", "revision": "tests-data"},
        description="STS Benchmark test split from the repository's test data.",
        reference="https://github.com/PhilipMay/stsb-multi-mt/",
        type="STS",
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="cosine_spearman",
        date=("2017-01-01", "2017-12-31"),
        domains=["Blog", "News", "Written"],
        task_subtypes=[],
        license="cc-by-sa-4.0",
        annotations_creators="human-annotated",
        dialect=[],
        sample_creation="found",
        bibtex_citation="",
    )

    def __init__(self, pairs: tuple[list[str], list[str], list[float]], **kwargs):
        super().__init__(**kwargs)
        self.pairs = pairs

    def load_data(self, num_proc: int | None = None, **kwargs) -> None:
        s1, s2, scores = self.pairs
        self.dataset = DatasetDict({"test": Dataset.from_dict({"sentence1": s1, "sentence2": s2, "score": scores})})
        self.data_loaded = True


@pytest.fixture
def no_mteb_cache(tmp_path, monkeypatch):
    """datasets points at the test's folder too, should anything try to cache."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    before = set(os.listdir(MTEB_CACHE))
    yield
    assert set(os.listdir(MTEB_CACHE)) == before  # cache=None: no results written


def main_score(model, task) -> float:
    result = mteb.evaluate(model, tasks=[task], cache=None, show_progress_bar=False, encode_kwargs={"batch_size": 32})
    return float(result.task_results[0].get_score())


@pytest.mark.slow
def test_sts_benchmark_score_matches_sentence_transformers(minilm, minilm_dir, sts_test, no_mteb_cache):
    import torch
    from sentence_transformers import SentenceTransformer

    ours = main_score(MTEBEncoder(minilm), LocalSTSBenchmark(sts_test))  # the session encoder: compiled already
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # beside JAX's threads on a shared 2-core machine
    try:
        theirs = main_score(SentenceTransformer(minilm_dir, device="cpu"), LocalSTSBenchmark(sts_test))
    finally:
        torch.set_num_threads(threads)
    assert abs(ours - theirs) <= 1e-4, (ours, theirs)
    assert round(ours, 4) == MINILM_STSB


def test_the_protocol_and_the_metadata(minilm):
    model = MTEBEncoder(minilm)
    assert isinstance(model, EncoderProtocol)
    meta = model.mteb_model_meta
    assert meta.framework == ["JAX"] and meta.embed_dim == 384 and meta.max_tokens == 256
    assert meta.similarity_fn_name.value == "cosine" and meta.loader is MTEBEncoder
    assert meta.n_parameters == 22_565_376  # all-MiniLM-L6-v2 without the unused BERT pooler


def test_a_known_model_keeps_its_registry_entry():
    meta = mteb.get_model_meta("thenlper/gte-small")
    assert meta.name == "thenlper/gte-small"  # what MTEBEncoder("thenlper/gte-small") starts from, offline


def _loader(texts: list[str], batch: int = 4):
    from torch.utils.data import DataLoader

    return DataLoader(Dataset.from_dict({"text": texts}), batch_size=batch)


def test_prompt_types_map_onto_encode_query_and_encode_document(minilm_dir, tmp_path):
    path = str(tmp_path / "model")
    os.makedirs(path)
    for name in os.listdir(minilm_dir):
        os.symlink(os.path.join(minilm_dir, name), os.path.join(path, name))
    os.remove(os.path.join(path, "config_sentence_transformers.json"))
    with open(os.path.join(path, "config_sentence_transformers.json"), "w") as f:
        json.dump({"prompts": {"query": "query: ", "document": "passage: ", "LocalSTSBenchmark": "sts: "}}, f)
    model = MTEBEncoder(path, max_length=32)
    enc = model.encoder
    texts = ["A man is playing a guitar.", "A cat sleeps.", "Rain is expected.", "JAX compiles.", "Bread."]
    meta = LocalSTSBenchmark.metadata
    retrieval = mteb.get_task("SciFact").metadata  # a retrieval task with no prompt of its own here
    kw = {"hf_split": "test", "hf_subset": "default", "batch_size": 2, "show_progress_bar": False}
    query = model.encode(_loader(texts), task_metadata=retrieval, prompt_type=PromptType.query, **kw)
    document = model.encode(_loader(texts), task_metadata=retrieval, prompt_type=PromptType.document, **kw)
    np.testing.assert_allclose(query, enc.encode_query(texts), atol=1e-6)
    np.testing.assert_allclose(document, enc.encode_document(texts), atol=1e-6)
    # a prompt named after the task wins, as in mteb's sentence-transformers wrapper
    sts = model.encode(_loader(texts), task_metadata=meta, **kw)
    np.testing.assert_allclose(sts, enc.encode(texts, prompt="sts: "), atol=1e-6)
    binary = model.encode(_loader(texts), task_metadata=retrieval, **{**kw, "precision": "binary"})
    assert binary.dtype == np.int8 and binary.shape == (5, 48)


def test_loading_options_and_device(minilm, minilm_dir):
    with pytest.raises(ValueError, match="mesh="):
        MTEBEncoder(minilm_dir, device="cuda")
    with pytest.raises(ValueError, match="not to a loaded GTEEncoder"):
        MTEBEncoder(minilm, max_length=64)
    truncated = MTEBEncoder(minilm_dir, embed_dim=128, max_length=32)  # mteb's name for truncate_dim
    assert isinstance(truncated.encoder, GTEEncoder) and truncated.encoder.dim == 128
    assert truncated.mteb_model_meta.embed_dim == 128


def test_low_precision_results_file_apart_from_float32(minilm, minilm_dir):
    float32 = MTEBEncoder(minilm).mteb_model_meta
    int8 = MTEBEncoder(minilm_dir, dtype="int8").mteb_model_meta
    assert int8.revision == f"{float32.revision or 'main'}-gte-jax-int8" and int8.name == float32.name
    assert MTEBEncoder(minilm_dir, revision="abc", dtype="bfloat16").mteb_model_meta.revision == "abc-gte-jax-bfloat16"


class LocalReranking(AbsTaskRetrieval):
    """A reranking task from STS-B test pairs: each near-paraphrase sentence1 is a query whose candidates
    (``top_ranked``) are its own sentence2 (the relevant one) and the sentence2s of unrelated pairs."""

    metadata = TaskMetadata(
        name="LocalReranking",
        dataset={"path": "local/stsbenchmark-reranking", "revision": "tests-data"},
        description="STS Benchmark paraphrases as a reranking task, from the repository's test data.",
        reference="https://github.com/PhilipMay/stsb-multi-mt/",
        type="Reranking",
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="map_at_1000",
        date=("2017-01-01", "2017-12-31"),
        domains=["Blog", "News", "Written"],
        task_subtypes=[],
        license="cc-by-sa-4.0",
        annotations_creators="human-annotated",
        dialect=[],
        sample_creation="found",
        bibtex_citation="",
    )

    def __init__(self, pairs: tuple[list[str], list[str], list[float]], queries: int = 24, candidates: int = 8):
        super().__init__()
        self.pairs, self.n_queries, self.n_candidates = pairs, queries, candidates

    def load_data(self, num_proc: int | None = None, **kwargs) -> None:
        s1, s2, scores = self.pairs
        relevant = [i for i, score in enumerate(scores) if score >= 4.0][: self.n_queries]
        unrelated = [i for i, score in enumerate(scores) if score <= 1.0][: 4 * self.n_candidates]
        top_ranked = {}
        for q, i in enumerate(relevant):
            others = [unrelated[(q + j) % len(unrelated)] for j in range(self.n_candidates - 1)]
            top_ranked[f"q{i}"] = [f"d{k}" for k in sorted([i, *others])]  # the relevant one not always first
        corpus_ids = sorted({d for docs in top_ranked.values() for d in docs}, key=lambda d: int(d[1:]))
        self.dataset = {
            "default": {
                "test": {
                    "corpus": Dataset.from_dict({"id": corpus_ids, "text": [s2[int(d[1:])] for d in corpus_ids]}),
                    "queries": Dataset.from_dict(
                        {"id": [f"q{i}" for i in relevant], "text": [s1[i] for i in relevant]}
                    ),
                    "relevant_docs": {f"q{i}": {f"d{i}": 1} for i in relevant},
                    "top_ranked": top_ranked,
                }
            }
        }
        self.data_loaded = True


def test_the_cross_encoder_protocol_and_the_metadata(cross_encoder_dir):
    model = MTEBReranker(cross_encoder_dir, max_length=64)
    assert isinstance(model, CrossEncoderProtocol) and isinstance(model.reranker, GTEReranker)
    meta = model.mteb_model_meta
    assert meta.is_cross_encoder and meta.framework == ["JAX"] and meta.loader is MTEBReranker
    assert meta.max_tokens == 64 and meta.n_parameters > 0
    bfloat16 = MTEBReranker(cross_encoder_dir, dtype="bfloat16").mteb_model_meta
    assert bfloat16.revision == f"{meta.revision or 'main'}-gte-jax-bfloat16"  # files apart from float32's
    queries, documents = ["what plays?", "a cat", "rain"], ["A man plays a guitar.", "Kittens nap.", "Sun all day."]
    kw = {"task_metadata": LocalReranking.metadata, "hf_split": "test", "hf_subset": "default", "batch_size": 2}
    got = model.predict(_loader(queries, 2), _loader(documents, 2), **kw)
    np.testing.assert_allclose(got, model.reranker.predict(list(zip(queries, documents, strict=True))), atol=1e-6)
    prefixed = MTEBReranker(model.reranker, query_prefix="query: ", passage_prefix="passage: ")
    expected = model.reranker.predict(
        [("query: " + q, "passage: " + d) for q, d in zip(queries, documents, strict=True)]
    )
    np.testing.assert_allclose(prefixed.predict(_loader(queries), _loader(documents), **kw), expected, atol=1e-6)
    with pytest.raises(ValueError, match="mesh="):
        MTEBReranker(cross_encoder_dir, device="cuda")
    with pytest.raises(ValueError, match="not to a loaded GTEReranker"):
        MTEBReranker(model.reranker, max_length=32)


@pytest.mark.slow
def test_reranking_score_matches_sentence_transformers_cross_encoder(cross_encoder_dir, sts_test, no_mteb_cache):
    import torch
    from mteb.models import CrossEncoderWrapper
    from sentence_transformers import CrossEncoder

    ours = main_score(MTEBReranker(cross_encoder_dir), LocalReranking(sts_test))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # beside JAX's threads on a shared 2-core machine
    try:
        reference = CrossEncoderWrapper(CrossEncoder(cross_encoder_dir, device="cpu"))
        theirs = main_score(reference, LocalReranking(sts_test))
    finally:
        torch.set_num_threads(threads)
    print(f"LocalReranking map_at_1000: gte_jax {ours:.6f}, sentence-transformers CrossEncoder {theirs:.6f}")
    assert abs(ours - theirs) <= 1e-4, (ours, theirs)
    # a random-init model: not better than chance (1 relevant in 8: MAP about 0.34), just the same as PyTorch's
    assert 0.0 < ours < 1.0


@pytest.mark.parametrize(
    ("name", "dim", "language"),
    [
        ("Alibaba-NLP/gte-base-en-v1.5", 768, "eng-Latn"),
        ("Alibaba-NLP/gte-large-en-v1.5", 1024, "eng-Latn"),  # not in mteb's registry: gte_jax's own entry
        ("Alibaba-NLP/gte-multilingual-base", 768, "zho-Hans"),
        ("Alibaba-NLP/gte-modernbert-base", 768, "eng-Latn"),
    ],
)
def test_gte_family_names_get_their_metadata(name, dim, language):
    from gte_jax.mteb import _base_meta

    meta, revision = _base_meta(name, None, "float32")
    assert (meta.name, meta.embed_dim, meta.max_tokens) == (name, dim, 8192)
    assert language in meta.languages and meta.n_parameters > 100_000_000
    assert _base_meta(name, None, "int8")[1].endswith("-gte-jax-int8")
