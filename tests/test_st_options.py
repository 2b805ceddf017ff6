"""encode's sentence-transformers options, each against sentence-transformers 6.x itself on the real
all-MiniLM-L6-v2 weights: prompts, prompt names, encode_query / encode_document, truncate_dim, the
similarity functions, token embeddings and quantised outputs.

Both sides load the same folder: a copy of MiniLM (weights linked, not copied) with a
``config_sentence_transformers.json`` holding prompts and a similarity function, and GTE's module
layout (Transformer and Pooling, no Normalize module), so that ``normalize=False`` compares with
sentence-transformers' ``normalize_embeddings=False`` too.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings

import numpy as np
import pytest

from gte_jax import GTEEncoder
from gte_jax.engine.quantization import PRECISIONS, quantization_ranges, quantize_embeddings

from compiles import CompileCounter

PROMPTS = {"query": "query: ", "document": "passage: ", "classification": "Classify the topic of this sentence: "}
# Past max_length (256) once the prompt is in: truncation must count the prompt's tokens.
LONG = "Tensors are arrays of numbers with any number of axes, and JAX compiles programs over them. " * 20
SIMILARITIES = ("cosine", "dot", "euclidean", "manhattan")


def write_model_dir(src: str, dst: str, *, st_config: dict | None = None, pooling: dict | None = None) -> str:
    """A copy of ``src`` (files linked) without its Normalize module, with these sentence-transformers configs."""
    os.makedirs(os.path.join(dst, "1_Pooling"))
    for name in os.listdir(src):
        if os.path.isfile(os.path.join(src, name)) and name not in (
            "modules.json",
            "config_sentence_transformers.json",
        ):
            os.symlink(os.path.join(src, name), os.path.join(dst, name))
    with open(os.path.join(src, "1_Pooling", "config.json")) as f:
        pooling_config = {**json.load(f), **(pooling or {})}
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    for name, content in [
        ("1_Pooling/config.json", pooling_config),
        ("modules.json", modules),
        ("config_sentence_transformers.json", st_config or {}),
    ]:
        with open(os.path.join(dst, name), "w") as f:
            json.dump(content, f)
    return dst


@contextlib.contextmanager
def one_torch_thread():
    """torch on one thread next to JAX's pool: its OpenMP barriers stall on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def st_model(path: str, **kwargs):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu", **kwargs)


def st(model, method: str, texts, **kwargs):
    """``model.<method>(texts, **kwargs)`` as float32 numpy (a list of arrays for token embeddings)."""
    with one_torch_thread():
        out = getattr(model, method)(texts, **kwargs)
    return [t.numpy() for t in out] if isinstance(out, list) else np.asarray(out)


@pytest.fixture(scope="module")
def texts(minilm, sts_test) -> list[str]:
    """Short STS-B sentences: one 16-token bucket even with a prompt, so little to compile."""
    s1, s2, _ = sts_test
    unique = list(dict.fromkeys(s1 + s2))
    short = [t for t, ids in zip(unique, minilm.tokenize(unique), strict=True) if len(ids) <= 10]
    return short[:12]


@pytest.fixture(scope="module")
def model_dir(minilm_dir, tmp_path_factory) -> str:
    st_config = {"prompts": PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"}
    return write_model_dir(minilm_dir, str(tmp_path_factory.mktemp("st") / "model"), st_config=st_config)


@pytest.fixture(scope="module")
def enc(model_dir) -> GTEEncoder:
    return GTEEncoder.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def ref(model_dir):
    return st_model(model_dir)


def test_settings_come_from_the_sentence_transformers_files(enc, ref):
    assert enc.prompts == PROMPTS and enc.default_prompt_name is None
    assert enc.similarity_fn_name == ref.similarity_fn_name == "cosine"
    assert enc.pooling == "mean" and enc.dim == ref.get_embedding_dimension() == 384
    assert enc.truncate_dim is None and enc.max_length == ref.max_seq_length == 256


@pytest.mark.parametrize("normalize", [True, False])
def test_prompt_and_prompt_name_match(enc, ref, texts, normalize):
    texts = texts + [LONG] if normalize else texts  # one long text: its prompt counts against max_length
    kw = {"normalize_embeddings": normalize}
    for ours, theirs in [
        (
            enc.encode(texts, prompt="Represent: ", normalize=normalize),
            st(ref, "encode", texts, prompt="Represent: ", **kw),
        ),
        (
            enc.encode(texts, prompt_name="classification", normalize=normalize),
            st(ref, "encode", texts, prompt_name="classification", **kw),
        ),
        (enc.encode(texts, prompt="", normalize=normalize), st(ref, "encode", texts, **kw)),
    ]:
        assert ours.shape == theirs.shape == (len(texts), 384)
        assert np.abs(ours - theirs).max() <= 1e-5
    # the prompt changes the vectors, and its tokens count against max_length: the long text loses its tail
    plain, prompted = enc.encode(texts[:1]), enc.encode(texts[:1], prompt_name="classification")
    assert not np.allclose(plain, prompted, atol=1e-3)
    assert len(enc.tokenize([PROMPTS["classification"] + LONG])[0]) == enc.max_length


def test_prompt_wins_over_prompt_name_with_a_warning(enc, texts):
    with pytest.warns(UserWarning, match="ignoring prompt_name"):
        both = enc.encode(texts[:2], prompt="Represent: ", prompt_name="query")
    np.testing.assert_array_equal(both, enc.encode(texts[:2], prompt="Represent: "))


def test_encode_query_and_encode_document_match(enc, ref, texts):
    for method in ("encode_query", "encode_document"):
        for normalize in (True, False):
            ours = getattr(enc, method)(texts, normalize=normalize)
            theirs = st(ref, method, texts, normalize_embeddings=normalize)
            assert np.abs(ours - theirs).max() <= 1e-5, (method, normalize)
    np.testing.assert_array_equal(enc.encode_query(texts), enc.encode(texts, prompt="query: "))
    np.testing.assert_array_equal(enc.encode_document(texts), enc.encode(texts, prompt_name="document"))
    # an explicit prompt or prompt name wins over the method's own
    np.testing.assert_array_equal(
        enc.encode_query(texts, prompt_name="classification"), enc.encode(texts, prompt_name="classification")
    )


def test_default_prompt_name_applies_to_encode_only(model_dir, texts):
    ours = GTEEncoder.from_pretrained(model_dir, default_prompt_name="classification")
    theirs = st_model(model_dir, default_prompt_name="classification")
    short = texts[:4]
    assert np.abs(ours.encode(short) - st(theirs, "encode", short, normalize_embeddings=True)).max() <= 1e-5
    # encode_query uses the query prompt, never the default one
    query = st(theirs, "encode_query", short, normalize_embeddings=True)
    assert np.abs(ours.encode_query(short) - query).max() <= 1e-5
    np.testing.assert_array_equal(ours.encode(short), ours.encode(short, prompt_name="classification"))


def test_document_prompt_falls_back_to_passage_then_corpus(minilm_dir, tmp_path, monkeypatch):
    # Where a checkpoint has no "document" prompt, encode_document takes "passage", then "corpus"
    # (sentence-transformers documents this order; 6.2 itself always finds an empty "document" first).
    for prompts, expected in [({"passage": "p: ", "corpus": "c: "}, "p: "), ({"corpus": "c: "}, "c: "), ({}, "")]:
        path = write_model_dir(minilm_dir, str(tmp_path / str(len(prompts))), st_config={"prompts": prompts})
        enc = GTEEncoder.from_pretrained(path, max_length=16)
        calls: list[dict] = []
        monkeypatch.setattr(enc, "encode", lambda texts, calls=calls, **kw: calls.append(kw))
        enc.encode_document(["a cat"])
        enc.encode_query(["a cat"])
        assert [c["prompt"] for c in calls] == [expected, ""]


@pytest.mark.parametrize("normalize", [True, False])
def test_truncate_dim_matches(enc, ref, texts, normalize):
    for dim in (64, 200, 384):
        ours = enc.encode(texts, truncate_dim=dim, normalize=normalize)
        theirs = st(ref, "encode", texts, truncate_dim=dim, normalize_embeddings=normalize)
        assert ours.shape == theirs.shape == (len(texts), dim)
        assert np.abs(ours - theirs).max() <= 1e-5, dim
    assert enc.encode(texts[0], truncate_dim=32).shape == (32,)


def test_truncate_dim_of_the_encoder(model_dir, texts):
    ours = GTEEncoder.from_pretrained(model_dir, truncate_dim=100)
    theirs = st_model(model_dir, truncate_dim=100)
    assert ours.dim == theirs.get_embedding_dimension() == 100
    short = texts[:4]
    assert np.abs(ours.encode(short) - st(theirs, "encode", short, normalize_embeddings=True)).max() <= 1e-5
    assert ours.encode(short, truncate_dim=20).shape == (4, 20)  # a call's own wins


@pytest.mark.parametrize("name", SIMILARITIES)
def test_similarity_functions_match(minilm_dir, tmp_path, texts, name):
    st_config = {"prompts": PROMPTS, "similarity_fn_name": name}
    path = write_model_dir(minilm_dir, str(tmp_path / "model"), st_config=st_config)
    ours, theirs = GTEEncoder.from_pretrained(path), st_model(path)
    assert ours.similarity_fn_name == theirs.similarity_fn_name == name
    for normalize in (True, False):  # unit vectors, and raw ones: dot and distances are not cosine there
        vectors = st(theirs, "encode", texts, normalize_embeddings=normalize)
        a, b = vectors[:5], vectors[5:]
        with one_torch_thread():
            matrix, pairs = theirs.similarity(a, b).numpy(), theirs.similarity_pairwise(a, b[:5]).numpy()
        assert ours.similarity(a, b).shape == (5, len(b)) and ours.similarity_pairwise(a, b[:5]).shape == (5,)
        # within 1e-5, and 1e-6 relative: Manhattan distances reach 20 (unit vectors) to 130 (raw), where
        # sentence-transformers' float32 sums of 384 terms differ from exact by about 1e-6 of the value
        np.testing.assert_allclose(ours.similarity(a, b), matrix, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(ours.similarity_pairwise(a, b[:5]), pairs, rtol=1e-6, atol=1e-5)
    assert ours.similarity(a[0], b).shape == (1, len(b))  # one vector is a batch of one


def test_similarity_fn_name_override(model_dir):
    ours = GTEEncoder.from_pretrained(model_dir, similarity_fn_name="manhattan")
    theirs = st_model(model_dir, similarity_fn_name="manhattan")
    assert ours.similarity_fn_name == theirs.similarity_fn_name == "manhattan"


def test_token_embeddings_match(enc, ref, texts):
    ours = enc.encode(texts, output_value="token_embeddings")
    theirs = st(ref, "encode", texts, output_value="token_embeddings")
    assert [o.shape for o in ours] == [t.shape for t in theirs]  # trimmed to the real tokens
    assert all(o.dtype == np.float32 for o in ours)
    assert max(np.abs(o - t).max() for o, t in zip(ours, theirs, strict=True)) <= 1e-4
    single = enc.encode(texts[0], output_value="token_embeddings")
    assert isinstance(single, np.ndarray) and single.shape == ours[0].shape
    np.testing.assert_allclose(single, ours[0], atol=1e-5)
    # prompted: the prompt's tokens are part of the output, as in sentence-transformers
    prompted = enc.encode_query(texts[:2], output_value="token_embeddings")
    theirs = st(ref, "encode_query", texts[:2], output_value="token_embeddings")
    assert max(np.abs(o - t).max() for o, t in zip(prompted, theirs, strict=True)) <= 1e-4


def _assert_quantized_close(ours: np.ndarray, theirs: np.ndarray, floats: np.ndarray, precision: str) -> float:
    """Equal, except where the float sits on a rounding boundary (one step); returns the fraction that differ."""
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    if precision in ("binary", "ubinary"):
        bits = np.unpackbits(ours.view(np.uint8), axis=-1) != np.unpackbits(theirs.view(np.uint8), axis=-1)
        assert np.all(np.abs(floats[bits[:, : floats.shape[1]]]) < 1e-5)  # a sign flip only at about zero
        return float(bits.mean())
    steps = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    assert steps.max() <= 1
    return float((steps > 0).mean())


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_quantized_outputs_match(enc, ref, texts, precision):
    ours = enc.encode(texts, precision=precision)
    theirs = st(ref, "encode", texts, precision=precision, normalize_embeddings=True)
    floats = st(ref, "encode", texts, normalize_embeddings=True)
    differ = _assert_quantized_close(ours, theirs, floats, precision)
    assert differ <= 0.005, f"{differ:.2%} of the values differ"
    expected_shape = (len(texts), 48 if precision.endswith("binary") else 384)
    assert ours.shape == expected_shape
    # one text and its truncation: shapes as sentence-transformers'
    assert enc.encode(texts[0], precision="binary", truncate_dim=20).shape == (3,)


def test_quantizer_is_exact_on_sentence_transformers_floats(ref, texts):
    from sentence_transformers.util.quantization import quantize_embeddings as st_quantize

    floats = st(ref, "encode", texts, normalize_embeddings=True)
    calibration = st(ref, "encode", [t.upper() for t in texts], normalize_embeddings=True)
    ranges = quantization_ranges(calibration)
    for precision in PRECISIONS:
        cases = [
            ({}, {}),
            ({"ranges": ranges}, {"ranges": ranges}),
            ({"calibration_embeddings": calibration}, {"calibration_embeddings": calibration}),
        ]
        for ours_kw, theirs_kw in cases:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theirs = st_quantize(floats, precision, **theirs_kw)
            ours = quantize_embeddings(floats, precision, **ours_kw)
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, precision
            np.testing.assert_array_equal(ours, theirs)
        single = quantize_embeddings(floats[0], precision, ranges=ranges)
        np.testing.assert_array_equal(single, st_quantize(floats[0], precision, ranges=ranges))
        tokens = [floats[:3], floats[3:]]  # token embeddings: one set of ranges over every matrix
        for o, t in zip(quantize_embeddings(tokens, precision), st_quantize(tokens, precision), strict=True):
            np.testing.assert_array_equal(o, t)
    with pytest.raises(ValueError, match="single embedding"):
        quantize_embeddings(floats[:1], "int8")


def test_encode_takes_fixed_ranges(enc, texts):
    calibration = enc.encode([t.upper() for t in texts])
    ranges = quantization_ranges(calibration)
    floats = enc.encode(texts)
    for precision in ("int8", "uint8"):
        ours = enc.encode(texts, precision=precision, ranges=ranges)
        np.testing.assert_array_equal(ours, quantize_embeddings(floats, precision, ranges=ranges))
        single = enc.encode(texts[0], precision=precision, calibration_embeddings=calibration)
        # the same ranges: the same values, but for a float on a step boundary (the batch differs)
        assert np.abs(single.astype(np.int16) - ours[0]).max() <= 1


def test_empty_input_keeps_the_output_shape(enc):
    assert enc.encode([], precision="binary").shape == (0, 48)
    assert enc.encode([], precision="int8").shape == (0, 384)
    assert enc.encode([], truncate_dim=10).shape == (0, 10)
    assert enc.encode([], output_value="token_embeddings") == []


def test_token_embeddings_compile_a_bounded_set_of_programs(enc, texts):
    rows_16 = {rows for rows, length in enc.runner.shapes(enc.batch_size) if length == 16}
    with CompileCounter() as first:
        for n in range(1, len(texts) + 1):  # 1 to 12 texts of the 16-token bucket
            enc.encode(texts[:n], output_value="token_embeddings")
    assert first.count <= len(rows_16)  # the pooled path's shapes, one program each
    with CompileCounter() as again:
        for n in range(1, len(texts) + 1):
            enc.encode(texts[:n], output_value="token_embeddings")
    assert again.count == 0


def test_shared_encoders_take_prompts(model_dir):
    prompts = {"query": "q: "}
    first = GTEEncoder.shared(model_dir, prompts=prompts, max_length=32)
    assert GTEEncoder.shared(model_dir, prompts=dict(prompts), max_length=32) is first
    assert first.prompts["query"] == "q: " and first.prompts["document"] == "passage: "  # the user's win
    GTEEncoder.release(model_dir)


def test_a_prompt_that_fills_max_length_warns_once(enc, texts):
    long = "represent this sentence for retrieval " * 60  # 300 tokens: past max_length 256, no room for the text
    with pytest.warns(RuntimeWarning, match=r"is 300 tokens, which with \[CLS\] and \[SEP\] fill max_length 256") as w:
        vectors = enc.encode(texts[:3], prompt=long)
    assert len(w) == 1 and "every text would get the same vector" in str(w[0].message)
    assert w[0].filename == __file__  # points at the caller
    np.testing.assert_array_equal(vectors[0], vectors[1])  # why it warns: the texts were truncated away
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.encode(texts[:3], prompt=long)  # once per prompt
        enc.encode(texts[:3], prompt="query: ")  # a prompt that leaves room: no warning


def test_numpy_integers_are_integers(enc, texts):
    assert enc.encode(texts[:2], truncate_dim=np.int64(8)).shape == (2, 8)
    for bad in (True, 8.0, "8"):
        with pytest.raises(ValueError, match="truncate_dim must be a positive integer"):
            enc.encode(texts[:2], truncate_dim=bad)


@pytest.mark.parametrize("prompts", ["query: ", ["query: "], 5])
def test_prompts_must_map_names_to_texts(model_dir, prompts):
    with pytest.raises(TypeError, match=r"prompts must be a dict of prompt name to prompt text, such as \{'query'"):
        GTEEncoder.from_pretrained(model_dir, prompts=prompts)


@pytest.mark.parametrize(
    "name, setting, message",
    [
        ("config_sentence_transformers.json", {"truncate_dim": 0}, "truncate_dim must be 1 to 384"),
        ("config_sentence_transformers.json", {"truncate_dim": 385}, "truncate_dim must be 1 to 384"),
        ("config_sentence_transformers.json", {"truncate_dim": "64"}, "truncate_dim must be 1 to 384"),
        ("sentence_bert_config.json", {"max_seq_length": "abc"}, "max_seq_length must be a positive integer"),
    ],
)
def test_checkpoint_settings_out_of_range_name_the_file(minilm_dir, tmp_path, name, setting, message):
    from gte_jax.errors import ConfigError

    path = write_model_dir(minilm_dir, str(tmp_path / "model"), st_config={"prompts": PROMPTS})
    target = os.path.join(path, name)
    if os.path.islink(target):
        os.remove(target)  # a link to MiniLM's own file: never write through it
    with open(target, "w") as f:
        json.dump(setting, f)
    with pytest.raises(ConfigError, match=message) as err:
        GTEEncoder.from_pretrained(path)
    assert str(err.value).startswith(f"{path}/{name}: ")
