"""GTEEncoder.encode: shapes, order, truncation, batch invariance and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from gte_jax_convert.reference import torch_embeddings

from texts import VARIED_TEXTS


def test_shapes_and_unit_norm(minilm):
    vecs = minilm.encode(["what is a tensor?", "A tensor is ..."])
    assert vecs.shape == (2, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)
    one = minilm.encode("one text")
    assert one.shape == (384,)
    np.testing.assert_array_equal(one, minilm.encode(["one text"])[0])


def test_empty_list_gives_zero_rows(minilm):
    out = minilm.encode([])
    assert out.shape == (0, 384) and out.dtype == np.float32


def test_empty_and_whitespace_match_reference(minilm, minilm_dir):
    texts = ["", "   ", "\n\t"]
    ref = torch_embeddings(minilm_dir, texts, max_length=minilm.max_length)
    assert np.abs(minilm.encode(texts) - ref).max() <= 1e-5


@pytest.mark.parametrize("bad, index", [([None], 0), (["ok", 3], 1), (["a", "b", b"bytes"], 2)])
def test_non_string_raises_type_error_naming_index(minilm, bad, index):
    with pytest.raises(TypeError, match=rf"texts\[{index}\]"):
        minilm.encode(bad)


def test_long_text_is_truncated_not_rejected(minilm):
    long = "word " * 2000
    ids = minilm.tokenize([long])[0]
    assert len(ids) == minilm.max_length
    head = minilm.tokenizer.backend.decode(ids[1:-1].tolist())
    np.testing.assert_allclose(minilm.encode(long), minilm.encode(head), atol=1e-6)


def test_order_kept_and_batch_invariant(minilm):
    alone = np.stack([minilm.encode(t) for t in VARIED_TEXTS])
    together = minilm.encode(VARIED_TEXTS)
    shuffled_order = np.random.default_rng(0).permutation(len(VARIED_TEXTS))
    shuffled = minilm.encode([VARIED_TEXTS[i] for i in shuffled_order])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    np.testing.assert_allclose(shuffled, together[shuffled_order], atol=1e-6)
    # the same text padded into other buckets and batch sizes
    probe = "an embedding never depends on its neighbours"
    probe_alone = minilm.encode(probe)
    for batch_size in (1, 2, 8):
        mixed = minilm.encode([probe] + VARIED_TEXTS, batch_size=batch_size)
        np.testing.assert_allclose(mixed[0], probe_alone, atol=1e-6)


def test_unnormalized_is_the_mean_before_scaling(minilm):
    raw = minilm.encode(["unit length?"], normalize=False)
    unit = minilm.encode(["unit length?"])
    assert not np.isclose(np.linalg.norm(raw), 1.0)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), unit, atol=1e-6)


def test_show_progress_draws_a_bar(minilm, capsys):
    minilm.encode(["a", "b", "c"], show_progress=True)
    err = capsys.readouterr().err
    assert "embedding" in err and "3/3" in err and "text/s" in err
