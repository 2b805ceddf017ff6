"""GTEReranker on the rotary families' sequence classifiers, against sentence-transformers' CrossEncoder."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from gte_jax import GTEReranker

from checkpoints import copy_tokenizer
from family_checkpoints import GTE_TINY, hub_config, hub_state_dict, transformers_rope

LONG = "rerankers read the query and the document together " * 40
PAIRS = [("what is a tensor?", "A tensor is an array."), ("", "empty"), ("a long one", LONG), (LONG, LONG[:700])]
CFG = dataclasses.replace(GTE_TINY, vocab_size=30522)  # the bundled BERT vocabulary (gte-base-en-v1.5 uses it)


def torch_gte_classifier(seed: int = 0):
    import torch
    from transformers import GteConfig, GteForSequenceClassification

    hf = GteConfig(
        vocab_size=CFG.vocab_size,
        hidden_size=CFG.hidden_size,
        num_hidden_layers=CFG.num_hidden_layers,
        num_attention_heads=CFG.num_attention_heads,
        intermediate_size=CFG.intermediate_size,
        type_vocab_size=CFG.type_vocab_size,
        pad_token_id=CFG.pad_token_id,
        rope_parameters=transformers_rope(CFG),
        num_labels=1,
    )
    torch.manual_seed(seed)
    model = GteForSequenceClassification(hf)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(0.1 * torch.randn_like(p) + (1.0 if p.ndim == 1 and p.shape[0] == CFG.hidden_size else 0.0))
    return model.eval()


@pytest.fixture(scope="module")
def gte_classifiers(tmp_path_factory, minilm_dir):
    from safetensors.torch import save_file

    model = torch_gte_classifier()
    native = str(tmp_path_factory.mktemp("gte-native"))
    model.save_pretrained(native)
    copy_tokenizer(minilm_dir, native)
    hub = str(tmp_path_factory.mktemp("gte-hub"))
    state = hub_state_dict(model.gte, prefix="new.")
    state.update({k: v.contiguous() for k, v in model.state_dict().items() if k.startswith("classifier.")})
    save_file(state, os.path.join(hub, "model.safetensors"))
    with open(os.path.join(hub, "config.json"), "w") as f:
        json.dump({**hub_config(CFG, architecture="NewForSequenceClassification"), "num_labels": 1}, f)
    copy_tokenizer(minilm_dir, hub)
    return native, hub


def test_gte_reranker_equals_cross_encoder_in_both_layouts(gte_classifiers):
    from sentence_transformers import CrossEncoder

    native, hub = gte_classifiers
    expected = CrossEncoder(native, device="cpu", max_length=96).predict(PAIRS)
    for model_dir in (native, hub):
        got = GTEReranker.from_pretrained(model_dir, max_length=96).predict(PAIRS)
        assert np.abs(got - expected).max() <= 1e-5, model_dir


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_modernbert_reranker_equals_cross_encoder(tmp_path, pooling):
    import torch
    from sentence_transformers import CrossEncoder

    from modernbert_checkpoints import BIASED_HF, torch_modernbert, write_checkpoint

    hf = {**BIASED_HF, "num_labels": 1, "classifier_pooling": pooling, "classifier_bias": True}
    model = torch_modernbert(hf, head="ForSequenceClassification")
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(0.05 * torch.randn_like(p))  # LayerNorms and the head off their initial values too
    model_dir = write_checkpoint(model, str(tmp_path / pooling))
    pairs = [("rerank me", "a document about rerankers"), ("", "x"), ("long " * 300, "short")]
    expected = CrossEncoder(model_dir, device="cpu", max_length=64).predict(pairs)
    got = GTEReranker.from_pretrained(model_dir, max_length=64).predict(pairs)
    assert np.abs(got - expected).max() <= 1e-5
