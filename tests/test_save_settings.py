"""A load -> save_pretrained -> load round trip keeps every sentence setting, and sentence-transformers agrees."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from gte_jax import GTEEncoder
from gte_jax.checkpoints.sentence_config import read_sentence_config

TEXTS = ["what is a tensor?", "A tensor is a multi-dimensional array of numbers.", ""]
PROMPTS = {"query": "query: ", "passage": "passage: "}


def _bge_style(minilm_dir: str, out: str) -> str:
    """MiniLM re-dressed as a bge/e5-style checkpoint: CLS pooling in a folder of its own name, no Normalize,
    prompts with a default, dot-product similarity, a Matryoshka truncate_dim and a shorter max_seq_length."""
    shutil.copytree(minilm_dir, out, ignore=shutil.ignore_patterns("1_Pooling", "modules.json"))
    os.makedirs(os.path.join(out, "pooling_cls"))
    with open(os.path.join(out, "pooling_cls", "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": 384, "pooling_mode": "cls", "include_prompt": True}, f)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "pooling_cls", "type": "sentence_transformers.models.Pooling"},
    ]
    with open(os.path.join(out, "modules.json"), "w") as f:
        json.dump(modules, f)
    with open(os.path.join(out, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": 128, "do_lower_case": False}, f)
    st = {"prompts": PROMPTS, "default_prompt_name": "query", "similarity_fn_name": "dot", "truncate_dim": 256}
    with open(os.path.join(out, "config_sentence_transformers.json"), "w") as f:
        json.dump(st, f)
    return out


def test_round_trip_keeps_every_sentence_setting(minilm_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    src = _bge_style(minilm_dir, str(tmp_path / "src"))
    out = GTEEncoder.from_pretrained(src).save_pretrained(str(tmp_path / "out"))
    before, after = read_sentence_config(src), read_sentence_config(out)
    assert after == before, (before, after)
    assert not after.normalize_module and after.pooling_folder == "pooling_cls"

    again = GTEEncoder.from_pretrained(out)
    assert (again.pooling, again.dim, again.max_length) == ("cls", 256, 128)
    assert (again.prompts, again.default_prompt_name, again.similarity_fn_name) == (PROMPTS, "query", "dot")
    st = SentenceTransformer(out, device="cpu")
    st_prompts = {k: v for k, v in st.prompts.items() if v}  # sentence-transformers 6 adds empty ones
    assert (st_prompts, st.default_prompt_name, st.similarity_fn_name, st.truncate_dim) == (
        PROMPTS,
        "query",
        "dot",
        256,
    )
    ours = again.encode(TEXTS, normalize=False)  # the default prompt applies on both sides
    theirs = st.encode(TEXTS)
    assert np.abs(ours - theirs).max() <= 1e-5
    assert (
        np.abs(
            again.encode(TEXTS, prompt_name="passage", normalize=False) - st.encode(TEXTS, prompt_name="passage")
        ).max()
        <= 1e-5
    )


def test_a_normalising_checkpoint_keeps_its_normalize_module(minilm, tmp_path):
    out = minilm.save_pretrained(str(tmp_path / "out"))
    assert read_sentence_config(out).normalize_module
    assert read_sentence_config(out).pooling_folder == "1_Pooling"
