"""Every pooling mode of sentence-transformers' Pooling module, against that module on the same weights.

Each case is a copy of all-MiniLM-L6-v2 (weights linked) whose ``1_Pooling/config.json`` asks for
the mode, loaded by both gte_jax and sentence-transformers; the copies have GTE's module layout
(no Normalize module), so the raw pooled vectors compare. Texts of 4 to 12 tokens in one batch,
so padding is in play for the modes that weigh positions (``weightedmean``, ``lasttoken``).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from gte_jax import GTEEncoder
from gte_jax.errors import ConfigError
from gte_jax.models.pooling import POOLING_MODES

TEXTS = [
    "A cat.",
    "A man is playing a guitar.",
    "Someone plays an instrument on the stage tonight.",
    "The stock market fell sharply today after the news.",
    "Rain.",
]
MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
]
LEGACY_FALSE = {
    "pooling_mode_cls_token": False,
    "pooling_mode_mean_tokens": False,
    "pooling_mode_max_tokens": False,
    "pooling_mode_mean_sqrt_len_tokens": False,
}
CASES = {
    # the legacy boolean keys, as most checkpoints on the Hub have them
    "cls": {**LEGACY_FALSE, "pooling_mode_cls_token": True},
    "max": {**LEGACY_FALSE, "pooling_mode_max_tokens": True},
    "mean": {**LEGACY_FALSE, "pooling_mode_mean_tokens": True},
    "mean_sqrt_len_tokens": {**LEGACY_FALSE, "pooling_mode_mean_sqrt_len_tokens": True},
    "weightedmean": {**LEGACY_FALSE, "pooling_mode_weightedmean_tokens": True},
    "lasttoken": {**LEGACY_FALSE, "pooling_mode_lasttoken": True},
    # several modes are concatenated: legacy keys in sentence-transformers' fixed order, the new key as listed
    "cls+max+mean": {
        **LEGACY_FALSE,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_cls_token": True,
        "pooling_mode_max_tokens": True,
    },  # fmt: skip
    "weightedmean+cls": {"pooling_mode": ["weightedmean", "cls"]},
}


def model_dir(src: str, dst: str, pooling: dict, modules: list[dict] = MODULES) -> str:
    os.makedirs(os.path.join(dst, "1_Pooling"))
    for name in os.listdir(src):
        if os.path.isfile(os.path.join(src, name)) and name != "modules.json":
            os.symlink(os.path.join(src, name), os.path.join(dst, name))
    for name, content in (
        ("1_Pooling/config.json", {"word_embedding_dimension": 384, **pooling}),
        ("modules.json", modules),
    ):
        with open(os.path.join(dst, name), "w") as f:
            json.dump(content, f)
    return dst


def st_embed(path: str, texts: list[str], **kwargs) -> np.ndarray:
    import torch
    from sentence_transformers import SentenceTransformer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # beside JAX's threads on a shared 2-core machine
    try:
        return SentenceTransformer(path, device="cpu").encode(texts, **kwargs)
    finally:
        torch.set_num_threads(threads)


def test_every_mode_is_covered():
    covered = {m for case in CASES for m in case.split("+")}
    assert covered == set(POOLING_MODES)


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(CASES))
def test_pooling_matches_sentence_transformers(minilm_dir, tmp_path, mode):
    path = model_dir(minilm_dir, str(tmp_path / "model"), CASES[mode])
    enc = GTEEncoder.from_pretrained(path, max_length=16)
    assert enc.pooling == mode
    ours = enc.encode(TEXTS, normalize=False)
    theirs = st_embed(path, TEXTS, normalize_embeddings=False)
    assert ours.shape == theirs.shape == (len(TEXTS), 384 * len(mode.split("+")))
    assert enc.dim == ours.shape[1]
    assert np.abs(ours - theirs).max() <= 1e-5, mode


def test_normalize_module_is_accepted_and_means_unit_vectors(minilm_dir, minilm):
    # the shipped MiniLM ends in sentence_transformers.models.Normalize: its default vectors are unit length
    with open(os.path.join(minilm_dir, "modules.json")) as f:
        assert json.load(f)[-1]["type"] == "sentence_transformers.models.Normalize"
    vectors = minilm.encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(vectors, st_embed(minilm_dir, TEXTS), atol=1e-5)


def test_sentence_transformers_6_module_names_are_understood(minilm_dir, tmp_path):
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.sentence_transformer.modules.pooling",
        },
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.base.modules.normalize"},
    ]
    path = model_dir(minilm_dir, str(tmp_path / "model"), {"pooling_mode": "cls"}, modules)
    assert GTEEncoder.from_pretrained(path, max_length=16).pooling == "cls"


@pytest.mark.parametrize(
    "module",
    [
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        {"idx": 2, "name": "2", "path": "2_LayerNorm", "type": "sentence_transformers.models.LayerNorm"},
        {"idx": 2, "name": "2", "path": "2_Mine", "type": "my_package.MyModule"},
    ],
)
def test_an_unsupported_module_is_refused_by_name(minilm_dir, tmp_path, module):
    path = model_dir(minilm_dir, str(tmp_path / "model"), {"pooling_mode_mean_tokens": True}, [*MODULES, module])
    with pytest.raises(ConfigError) as err:
        GTEEncoder.from_pretrained(path)
    assert module["type"] in str(err.value) and "modules.json: module 2" in str(err.value)


def test_an_unknown_pooling_mode_is_refused(minilm_dir, tmp_path):
    path = model_dir(minilm_dir, str(tmp_path / "model"), {"pooling_mode": ["mean", "median"]})
    with pytest.raises(ConfigError, match="'median'"):
        GTEEncoder.from_pretrained(path)


@pytest.mark.parametrize(
    "mode", ["mean", "max", "mean_sqrt_len_tokens"]
)  # not lasttoken: sentence-transformers 6 then reads position -1 (padding), a quirk not copied
def test_a_prompt_excluded_from_pooling_equals_sentence_transformers(minilm_dir, tmp_path, mode):
    # INSTRUCTOR-style: include_prompt false: the prompt's tokens are attended to but left out of the pooling.
    pooling = {"pooling_mode": mode, "include_prompt": False}
    path = model_dir(minilm_dir, str(tmp_path / "model"), pooling)
    enc = GTEEncoder.from_pretrained(path, max_length=16)
    np.testing.assert_allclose(enc.encode(TEXTS[:2]), st_embed(path, TEXTS[:2], normalize_embeddings=True), atol=1e-5)
    texts = [*TEXTS, "a text long enough to be cut at sixteen tokens with the prompt before it, and more"]
    ours = enc.encode(texts, prompt="Represent this sentence for retrieval: ")
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(path, device="cpu")
    st.max_seq_length = 16  # as the encoder: rows cut with the prompt in them
    theirs = st.encode(texts, normalize_embeddings=True, prompt="Represent this sentence for retrieval: ")
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert (
        np.abs(
            ours
            - GTEEncoder.from_pretrained(minilm_dir, max_length=16).encode(
                texts, prompt="Represent this sentence for retrieval: "
            )
        ).max()
        > 1e-3
    )  # the prompt really is left out
