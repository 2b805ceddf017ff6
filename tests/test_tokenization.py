"""Our tokenizer gives transformers' token ids, from tokenizer.json or from vocab.txt alone."""

from __future__ import annotations

import pytest

from gte_jax.engine.tokenization import Tokenizer
from gte_jax.errors import ConfigError
from gte_jax_convert.reference import torch_token_ids

from checkpoints import copy_tokenizer
from texts import VARIED_TEXTS


@pytest.mark.parametrize("files", [("tokenizer.json", "tokenizer_config.json"), ("vocab.txt", "tokenizer_config.json")])
@pytest.mark.parametrize("max_length", [512, 16])
def test_token_ids_match_transformers(tmp_path, minilm_dir, sts_test, files, max_length):
    copy_tokenizer(minilm_dir, str(tmp_path), files)
    texts = VARIED_TEXTS + sts_test[0][:300]
    ours = Tokenizer.from_dir(str(tmp_path), max_length)(texts)
    ref = torch_token_ids(minilm_dir, texts, max_length=max_length)
    assert [list(map(int, t)) for t in ours] == ref
    assert max(len(t) for t in ours) == max_length


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="tokenizer.json or vocab.txt"):
        Tokenizer.from_dir(str(tmp_path), 512)


def test_very_long_texts_are_cut_before_tokenising_with_the_same_ids(minilm_dir):
    tok = Tokenizer.from_dir(minilm_dir, 128)
    texts = [
        "Long prose, repeated: the quick brown fox jumps over the lazy dog. " * 400,  # cut at a space
        "x" * 30000,  # no whitespace: tokenised whole
        "ab " + "y" * 30000,  # one space, then one huge word ([UNK])
        "日本語" * 5000,  # no spaces, one token per character
    ]
    assert [list(map(int, t)) for t in tok(texts)] == torch_token_ids(minilm_dir, texts, max_length=128)
