"""Very long texts: tokenised a window at a time (flat memory), with the ids of the whole text."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest

from gte_jax.engine import inputs as encoder_inputs
from gte_jax.engine.tokenization import Tokenizer
from gte_jax_convert.reference import torch_embeddings, torch_token_ids

# Prints the peak-RSS growth (MiB) of encoding one whitespace-free text, and its vector.
_MEASURE = """
import json, resource, sys
from gte_jax import GTEEncoder
enc = GTEEncoder.from_pretrained(sys.argv[1])
enc.encode("warm up: " + "word " * 1000)  # loads and compiles the longest bucket for one row
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
vector = enc.encode(sys.argv[2] * int(sys.argv[3]))
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"grown_mib": grown, "vector": vector.tolist()}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["a,", "日本語", "x"])
def test_whitespace_free_text_keeps_memory_flat(minilm_dir, unit):
    # 4-6 million characters with no whitespace: tokenised whole, "a," * 2_000_000 grew peak memory by 2.1 GB.
    repeat = 6_000_000 // len(unit)
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, minilm_dir, unit, str(repeat)], capture_output=True, text=True, check=True
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["grown_mib"] < 150, result["grown_mib"]
    # The PyTorch reference on a prefix long enough to give the same truncated tokens (tokenising all
    # 6 million characters would take it 3 GB; the windowing itself is checked against whole texts below).
    prefix = unit * (40_000 // len(unit))
    ref = torch_embeddings(minilm_dir, [prefix], max_length=256)[0]
    assert np.abs(np.asarray(result["vector"]) - ref).max() < 1e-5


def _random_text(rng: random.Random) -> str:
    """Words, punctuation, CJK, accents, control characters and over-long words, in random runs."""
    parts = [
        lambda: rng.choice(["tensor", "Embedding", "naïve", "façade", "don't", "3.14", "ΑΣ", "ß"]),
        lambda: rng.choice([" ", "  ", "\n", "\t", "\u3000", "\xa0"]),
        lambda: rng.choice([",", ".", "!", "—", "。", "、", "(", ")", "¿", "«"]),
        lambda: "".join(rng.choice("日本語中文文本") for _ in range(rng.randint(1, 30))),
        lambda: rng.choice(["\x00", "\x0b", "\x85", "\u0301", "\ufffd", "🙂"]),
        lambda: rng.choice("abcxyz") * rng.randint(50, 400),  # longer than a window: one [UNK]
        lambda: "\x00" * rng.randint(50, 300),  # deleted by the normaliser, joining its neighbours
    ]
    return "".join(rng.choice(parts)() for _ in range(rng.randint(20, 400)))


def test_windowed_tokenising_gives_the_ids_of_the_whole_text(minilm_dir):
    tok = Tokenizer.from_dir(minilm_dir, 512)
    tok.window = 48  # many cuts per text (the real window is max_length * 20 characters)
    rng = random.Random(0)
    texts = [_random_text(rng) for _ in range(300)]
    assert sum(len(t) > tok.window for t in texts) > 250
    assert [list(map(int, t)) for t in tok(texts)] == torch_token_ids(minilm_dir, texts, max_length=512)


def test_encode_tokenises_a_chunk_at_a_time(minilm, monkeypatch):
    texts = [f"text number {i} " * (1 + i % 7) for i in range(500)]
    whole = minilm.encode(texts)
    sizes = []
    tokenize = minilm.tokenize
    monkeypatch.setattr(minilm, "tokenize", lambda chunk: sizes.append(len(chunk)) or tokenize(chunk))
    monkeypatch.setattr(encoder_inputs, "TOKENIZE_AHEAD_TEXTS", 64)
    chunked = minilm.encode(texts)
    assert max(sizes) == 64 and sum(sizes) == len(texts)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
