"""GTEReranker against sentence-transformers' CrossEncoder on random-init sequence-classification checkpoints."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from gte_jax import GTEReranker

from checkpoints import TINY, copy_tokenizer

LONG = "the quick brown fox jumps over the lazy dog " * 60  # past max_length: truncated longest_first
PAIRS = [
    ("what is a tensor?", "A tensor is a multi-dimensional array of numbers."),
    ("what is a tensor?", "Paris is the capital of France."),
    ("", "an empty query"),
    ("a long document", LONG),
    (LONG, "a long query"),
    (LONG, LONG[:900]),
]


def bert_cross_encoder(out_dir: str, tokenizer_dir: str, num_labels: int = 1, activation: str | None = None) -> str:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(num_labels)
    hf = {k: v for k, v in TINY.to_hf_config().items() if k != "architectures"}
    model = BertForSequenceClassification(BertConfig(**hf, num_labels=num_labels)).eval()
    model.save_pretrained(out_dir)
    copy_tokenizer(tokenizer_dir, out_dir)
    if activation:
        path = os.path.join(out_dir, "config.json")
        with open(path) as f:
            config = json.load(f)
        config["sentence_transformers"] = {"activation_fn": activation}
        with open(path, "w") as f:
            json.dump(config, f)
    return out_dir


@pytest.fixture(scope="module")
def one_label(tmp_path_factory, minilm_dir):
    return bert_cross_encoder(str(tmp_path_factory.mktemp("ce1")), minilm_dir)


def _reference(model_dir, max_length, **kw):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(model_dir, device="cpu", max_length=max_length, **kw)


@pytest.mark.parametrize("max_length", [64, 512])
def test_predict_equals_cross_encoder(one_label, max_length):
    ours = GTEReranker.from_pretrained(one_label, max_length=max_length)
    ref = _reference(one_label, max_length)
    expected = ref.predict(PAIRS)
    got = ours.predict(PAIRS)
    assert got.shape == (len(PAIRS),) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-5
    raw = ours.predict(PAIRS, activation="identity")
    assert np.abs(raw - ref.predict(PAIRS, activation_fn=__import__("torch").nn.Identity())).max() <= 1e-5
    assert np.isclose(ours.predict(PAIRS[0]), expected[0], atol=1e-5)  # one pair: a scalar


def test_rank_equals_cross_encoder(one_label):
    docs = [d for _, d in PAIRS]
    ours = GTEReranker.from_pretrained(one_label, max_length=64).rank("what is a tensor?", docs, return_documents=True)
    ref = _reference(one_label, 64).rank("what is a tensor?", docs, return_documents=True)
    assert [r["corpus_id"] for r in ours] == [r["corpus_id"] for r in ref]
    assert [r["text"] for r in ours] == [r["text"] for r in ref]
    assert np.abs(np.array([r["score"] for r in ours]) - np.array([r["score"] for r in ref])).max() <= 1e-5
    top = GTEReranker.from_pretrained(one_label, max_length=64).rank("what is a tensor?", docs, top_k=2)
    assert [r["corpus_id"] for r in top] == [r["corpus_id"] for r in ref[:2]] and "text" not in top[0]


def test_several_labels_and_the_checkpoint_activation(tmp_path, minilm_dir):
    model_dir = bert_cross_encoder(str(tmp_path / "ce3"), minilm_dir, 3, "torch.nn.modules.activation.Softmax")
    ours = GTEReranker.from_pretrained(model_dir, max_length=64)
    assert ours.activation == "softmax" and ours.num_labels == 3
    ref = _reference(model_dir, 64)
    got = ours.predict(PAIRS)
    assert got.shape == (len(PAIRS), 3)
    assert np.abs(got - ref.predict(PAIRS)).max() <= 1e-5
    assert np.abs(ours.predict(PAIRS, apply_softmax=True) - ref.predict(PAIRS, apply_softmax=True)).max() <= 1e-5


def test_bad_pairs_are_named(one_label):
    ours = GTEReranker.from_pretrained(one_label, max_length=64)
    with pytest.raises(TypeError, match="pair 1"):
        ours.predict([("a", "b"), ("only one",)])
    with pytest.raises(TypeError, match="pair 0 holds str and int"):
        ours.predict([("a", 3)])
    with pytest.raises(ValueError, match="activation 'relu'"):
        ours.predict([("a", "b")], activation="relu")
    assert ours.predict([]).shape == (0,)


def test_shared_is_one_reranker_per_model_and_settings_until_released(cross_encoder_dir):
    first = GTEReranker.shared(cross_encoder_dir, max_length=64)
    assert GTEReranker.shared(cross_encoder_dir + "/", max_length=64, dtype="float32") is first  # defaults filled in
    assert GTEReranker.shared(cross_encoder_dir, max_length=32) is not first
    assert GTEReranker.release(cross_encoder_dir) == 2
    assert GTEReranker.shared(cross_encoder_dir, max_length=64) is not first  # loaded afresh
    GTEReranker.release(cross_encoder_dir)
