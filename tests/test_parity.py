"""float32 parity with transformers' PyTorch BertModel + masked mean + L2 normalise."""

from __future__ import annotations

import numpy as np
import pytest

from gte_jax import GTEEncoder
from gte_jax_convert.reference import torch_embeddings

from texts import VARIED_TEXTS

TOL = 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("shape", ["gte-small", "gte-base", "gte-large"])
def test_random_gte_shapes_match_pytorch(gte_checkpoints, shape, fmt):
    model_dir = gte_checkpoints(shape, fmt)
    enc = GTEEncoder.from_pretrained(model_dir)
    assert enc.max_length == 512  # no sentence_bert_config: the position limit
    ours = enc.encode(VARIED_TEXTS)
    ref = torch_embeddings(model_dir, VARIED_TEXTS, max_length=512)
    diff = np.abs(ours - ref).max()
    print(f"{shape} {fmt}: max abs difference {diff:.2e}")
    assert ours.shape == (len(VARIED_TEXTS), enc.config.hidden_size)
    assert diff <= TOL


def test_minilm_matches_pytorch(minilm, minilm_dir, sts_test):
    texts = VARIED_TEXTS + sts_test[0][:200]
    ours = minilm.encode(texts)
    ref = torch_embeddings(minilm_dir, texts, max_length=minilm.max_length)
    diff = np.abs(ours - ref).max()
    print(f"all-MiniLM-L6-v2: max abs difference {diff:.2e}")
    assert diff <= TOL


def test_minilm_matches_sentence_transformers(minilm, minilm_dir):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(minilm_dir, device="cpu")
    ref = st.encode(VARIED_TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert np.abs(minilm.encode(VARIED_TEXTS) - ref).max() <= TOL
