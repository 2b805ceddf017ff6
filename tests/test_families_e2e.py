"""The whole path on the rotary families: GTE v1.5 (hub and native layouts, English WordPiece and XLM-R-like
Unigram vocabularies) and ModernBERT, each shipped as the real models are (CLS pooling, Normalize, a real
tokenizer), through GTEEncoder, low precision, tensor parallelism, the CLI and LangChain, against
sentence-transformers and transformers.

The checkpoints are tiny random-init models (tests/family_checkpoints.py, tests/modernbert_checkpoints.py);
the 8,192-token test uses gte-base-en-v1.5's layer shape with 2 layers instead of 12.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from gte_jax import GTEEncoder
from gte_jax.models.gte import GteConfig

from family_checkpoints import CORPUS, GTE_TINY, torch_gte, train_xlmr_unigram, write_gte
from modernbert_checkpoints import TINY_HF, corpus, torch_modernbert
from modernbert_checkpoints import write_checkpoint as write_modernbert
from processes import cpu_env

MAX_LENGTH = 2560  # sentence_bert_config.json's max_seq_length: past 2,048, and the longest text goes beyond it
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
MINILM_TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")

# gte-base-en-v1.5's English shape: the bert-base WordPiece vocabulary (rounded up to 30,528), no token types.
GTE_EN = dataclasses.replace(
    GTE_TINY, vocab_size=30528, rope_theta=500000.0, rope_ntk_factor=2.0, type_vocab_size=0, pad_token_id=0
)
# gte-multilingual-base's shape: XLM-R's ids (<pad> 1), theta 20k, NTK 8, one token type.
GTE_MULTI = dataclasses.replace(
    GTE_TINY, vocab_size=1000, rope_theta=20000.0, rope_ntk_factor=8.0, type_vocab_size=1, pad_token_id=1
)


def add_sentence_transformers_files(model_dir: str, max_seq_length: int = MAX_LENGTH) -> str:
    """The sentence-transformers files Alibaba-NLP ships: Transformer, CLS Pooling, Normalize."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    with open(os.path.join(model_dir, "config.json")) as f:
        hidden = json.load(f)["hidden_size"]
    pooling = {
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": True,
        "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }
    os.makedirs(os.path.join(model_dir, "1_Pooling"), exist_ok=True)
    os.makedirs(os.path.join(model_dir, "2_Normalize"), exist_ok=True)
    for name, content in (
        ("modules.json", modules),
        ("1_Pooling/config.json", pooling),
        ("sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False}),
    ):
        with open(os.path.join(model_dir, name), "w") as f:
            json.dump(content, f, indent=2)
    return model_dir


def _copy_minilm_tokenizer(minilm_dir: str, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    for name in MINILM_TOKENIZER:
        shutil.copyfile(os.path.join(minilm_dir, name), os.path.join(out, name))


def _gte(cfg: GteConfig, root, layouts: tuple[str, ...], tokenizer) -> dict[str, str]:
    """One random-init GTE written in each of ``layouts`` (the same weights), with the files ``tokenizer(dir)``
    writes, made once and copied (a Unigram trained twice need not come out the same)."""
    reference = torch_gte(cfg, seed=3)
    made = str(root / "tokenizer")
    tokenizer(made)
    dirs = {}
    for layout in layouts:
        out = str(root / layout)
        write_gte(reference, cfg, out, layout, "new.")
        shutil.copytree(made, out, dirs_exist_ok=True)
        dirs[layout] = add_sentence_transformers_files(out)
    return dirs


@pytest.fixture(scope="module")
def gte_en(tmp_path_factory, minilm_dir) -> dict[str, str]:
    """``{"native": dir, "hub": dir}``: gte-base-en-v1.5's configuration on a tiny model, MiniLM's WordPiece."""
    root = tmp_path_factory.mktemp("gte-en")
    return _gte(GTE_EN, root, ("native", "hub"), lambda out: _copy_minilm_tokenizer(minilm_dir, out))


@pytest.fixture(scope="module")
def gte_multi(tmp_path_factory) -> dict[str, str]:
    """gte-multilingual-base's configuration on a tiny model, with a small XLM-R-like Unigram tokenizer."""
    root = tmp_path_factory.mktemp("gte-multi")
    return _gte(GTE_MULTI, root, ("native", "hub"), _xlmr_tokenizer)


def _xlmr_tokenizer(out: str) -> None:
    """The small Unigram, marked for transformers as a plain ``tokenizer.json`` tokenizer: otherwise transformers 5
    picks ``XLMRobertaTokenizer`` for ``model_type`` "gte" and rebuilds the pre-tokenizer (WhitespaceSplit then
    Metaspace) over the file's, which drops leading and trailing whitespace the file's pipeline keeps."""
    train_xlmr_unigram(out)
    path = os.path.join(out, "tokenizer_config.json")
    with open(path) as f:
        config = json.load(f)
    with open(path, "w") as f:
        json.dump({**config, "tokenizer_class": "TokenizersBackend"}, f)


@pytest.fixture(scope="module")
def modernbert_dir(tmp_path_factory) -> str:
    """A tiny random-init ModernBERT with the byte-level BPE tokenizer and gte-modernbert-base's ST files."""
    out = str(tmp_path_factory.mktemp("modernbert"))
    return add_sentence_transformers_files(write_modernbert(torch_modernbert(TINY_HF), out))


def texts_for(model_dir: str, kind: str) -> list[str]:
    """From empty to past :data:`MAX_LENGTH` tokens (about 2,300 and 4,000 at the long end), in the kind of text
    each tokenizer was trained on; lengths cut in proportion to the tokens of the whole text."""
    prose = corpus(4000) if kind == "modernbert" else " ".join(CORPUS * 3)
    (total,) = _token_counts(model_dir, [prose])
    cut = [prose[: len(prose) * n // total].rsplit(" ", 1)[0] for n in (12, 600, 2300, 4000)]
    return ["", "a", *cut, "   ", "naïve café — 東京"]


def _token_counts(model_dir: str, texts: list[str]) -> list[int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_truncation()  # MiniLM's file truncates and pads to 128
    tok.no_padding()
    return [len(e.ids) for e in tok.encode_batch(texts)]


def _sentence_transformers(model_dir: str, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model_dir, device="cpu", model_kwargs={"attn_implementation": "eager"})
    assert st.max_seq_length == MAX_LENGTH
    return st.encode(texts, batch_size=4, convert_to_numpy=True)


CASES = {  # name: (fixture, layout GTEEncoder loads, the one sentence-transformers loads, text kind)
    "gte-en-native": ("gte_en", "native", "native", "gte"),
    "gte-en-hub": ("gte_en", "hub", "native", "gte"),
    "gte-multilingual-hub": ("gte_multi", "hub", "native", "gte"),
    "modernbert": ("modernbert_dir", None, None, "modernbert"),
}


def _dirs(request, case: str) -> tuple[str, str]:
    fixture, ours, theirs, _ = CASES[case]
    value = request.getfixturevalue(fixture)
    return (value, value) if ours is None else (value[ours], value[theirs])


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_encode_equals_sentence_transformers(request, case):
    ours, theirs = _dirs(request, case)
    texts = texts_for(ours, CASES[case][3])
    counts = _token_counts(ours, texts)
    assert min(counts) <= 2 and any(2048 < n <= MAX_LENGTH for n in counts) and max(counts) > MAX_LENGTH
    enc = GTEEncoder.from_pretrained(ours)
    assert enc.pooling == "cls" and enc.max_length == MAX_LENGTH
    got = enc.encode(texts, batch_size=4)
    want = _sentence_transformers(theirs, texts)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5


# --- low precision and tensor parallelism -------------------------------------------------------------------------

LOW_PRECISION_COSINE = 0.99  # tiny random models (32 wide): bfloat16 and int8 rounding is a larger share of them
SHORT_LENGTH = 512  # keeps these tests quick; the long inputs are covered above in float32
SHARDED_WORKER = os.path.join(TESTS_DIR, "sharded_worker.py")
PRECISION_CASES = ("gte-en-native", "gte-multilingual-hub", "modernbert")


def _short_texts(request, case: str) -> tuple[str, list[str]]:
    ours, _ = _dirs(request, case)
    texts = texts_for(ours, CASES[case][3])
    return ours, texts[:4] + texts[-2:]  # empty, one word, ~12 and ~600 tokens (truncated at 512), odd ones


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
@pytest.mark.parametrize("case", PRECISION_CASES)
def test_low_precision_stays_close_to_float32(request, case, dtype):
    model_dir, texts = _short_texts(request, case)
    want = GTEEncoder.from_pretrained(model_dir, max_length=SHORT_LENGTH).encode(texts)
    low = GTEEncoder.from_pretrained(model_dir, dtype=dtype, max_length=SHORT_LENGTH)
    assert low.dtype == dtype
    got = low.encode(texts)
    cosine = np.sum(got * want, axis=-1)  # both normalised
    assert cosine.min() >= LOW_PRECISION_COSINE, cosine
    assert np.abs(got - want).max() > 0  # really another precision


@pytest.mark.slow
@pytest.mark.parametrize("case", PRECISION_CASES)
def test_tensor_parallel_mesh_gives_the_same_vectors(request, case, tmp_path):
    model_dir, texts = _short_texts(request, case)
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    out = tmp_path / "v.npy"
    cmd = [sys.executable, SHARDED_WORKER, model_dir, str(tmp_path / "texts.json"), str(out), "--mesh", "data,model"]
    res = subprocess.run(
        [*cmd, "--max-length", str(SHORT_LENGTH)], env=cpu_env(8), capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["devices"] == 8 and report["mesh"] == {"data": 4, "model": 2}
    want = GTEEncoder.from_pretrained(model_dir, max_length=SHORT_LENGTH).encode(texts)
    assert np.abs(np.load(out) - want).max() <= 1e-5


# --- 8,192 tokens in linear memory --------------------------------------------------------------------------------

# gte-base-en-v1.5's layer shape and RoPE, 2 layers instead of 12 to keep the test minutes shorter.
GTE_BASE_2_LAYERS = dataclasses.replace(GteConfig.gte_base_en_v15(), num_hidden_layers=2)
RSS_WORKER = os.path.join(TESTS_DIR, "rss_worker.py")
# One layer's float32 attention scores for one 8,192-token text (12 heads x 8,192^2 x 4 bytes), in MiB: what a
# quadratic kernel would hold at least. The growth from 2,048 to 8,192 tokens is bounded by a share of it.
QUADRATIC_SCORES_MIB = 12 * 8192 * 8192 * 4 / 2**20


def _text_of(n_tokens: int, minilm_dir: str, seed: int = 0) -> str:
    """Random whole words of MiniLM's vocabulary, each one token: ``n_tokens`` with [CLS] and [SEP]."""
    with open(os.path.join(minilm_dir, "vocab.txt"), encoding="utf-8") as f:
        words = [w for w in f.read().split("\n") if w.isascii() and w.isalpha() and w.islower() and len(w) > 2]
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(words, n_tokens - 2))


@pytest.fixture(scope="module")
def gte_base_2_layers(tmp_path_factory, minilm_dir):
    """``(torch model, directory)``: gte-base-en-v1.5's shape with 2 layers, native layout, 8,192 tokens."""
    out = str(tmp_path_factory.mktemp("gte-base-2-layers"))
    reference = torch_gte(GTE_BASE_2_LAYERS, seed=5)
    write_gte(reference, GTE_BASE_2_LAYERS, out, "native")
    _copy_minilm_tokenizer(minilm_dir, out)
    return reference, add_sentence_transformers_files(out, max_seq_length=8192)


def _rss(model_dir: str, text: str, tmp_path) -> tuple[dict, np.ndarray]:
    (tmp_path / "text.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "v.npy"
    res = subprocess.run(
        [sys.executable, RSS_WORKER, model_dir, str(tmp_path / "text.txt"), str(out)],
        env=cpu_env(1),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1]), np.load(out)


@pytest.mark.slow
def test_8192_tokens_embed_in_linear_memory_and_equal_transformers(gte_base_2_layers, minilm_dir, tmp_path):
    import torch

    reference, model_dir = gte_base_2_layers
    short, long = _text_of(2048, minilm_dir), _text_of(8192, minilm_dir)
    (tmp_path / "short").mkdir()
    (tmp_path / "long").mkdir()
    small, _ = _rss(model_dir, short, tmp_path / "short")
    big, got = _rss(model_dir, long, tmp_path / "long")
    print(f"peak RSS growth: 2,048 tokens {small['growth_mib']:.0f} MiB, 8,192 tokens {big['growth_mib']:.0f} MiB")
    assert (small["tokens"], big["tokens"]) == (2048, 8192)
    # Linear: 4x the tokens, about 4x the memory; quadratic attention would be 16x and at least a score matrix.
    assert small["growth_mib"] > 16  # the measurement sees a 2,048-token text's activations at all
    assert big["growth_mib"] <= 8 * small["growth_mib"]
    assert big["growth_mib"] <= QUADRATIC_SCORES_MIB / 2

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(8192)
    ids = torch.tensor([tok.encode(long).ids])
    assert ids.shape == (1, 8192)
    reference.config._attn_implementation = "sdpa"  # memory-efficient on CPU; eager would hold 12 x 8,192^2 scores
    with torch.no_grad():
        cls = reference(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[:, 0].numpy()
    want = cls / np.linalg.norm(cls, axis=-1, keepdims=True)
    assert np.abs(got - want).max() <= 1e-5


# --- the CLI and LangChain --------------------------------------------------------------------------------------------


def test_cli_embed_text_on_a_hub_layout_gte(gte_en):
    texts = ["", "The quick brown fox.", "naïve café"]
    args = ["embed", "--model", gte_en["hub"], *(a for t in texts for a in ("--text", t))]
    res = subprocess.run(
        [sys.executable, "-m", "gte_jax.cli", *args], env=cpu_env(1), capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["id"] for r in rows] == [0, 1, 2]
    want = _sentence_transformers(gte_en["native"], texts)
    assert np.abs(np.array([r["embedding"] for r in rows]) - want).max() <= 1e-5


def test_langchain_embeddings_on_a_hub_layout_gte(gte_en):
    langchain_gte_jax = pytest.importorskip("langchain_gte_jax")

    texts = ["The quick brown fox.", "Rotary position embeddings rotate queries and keys."]
    emb = langchain_gte_jax.GTEEmbeddings(model_name=gte_en["hub"])
    docs = emb.embed_documents(texts)
    query = emb.embed_query(texts[0])
    assert all(type(x) is float for x in query)
    want = _sentence_transformers(gte_en["native"], texts)
    assert np.abs(np.array(docs) - want).max() <= 1e-5
    assert np.abs(np.array(query) - want[0]).max() <= 1e-5
