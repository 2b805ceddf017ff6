"""WordPiece tokenisation with the ``tokenizers`` library, truncating, never padding."""

from __future__ import annotations

import json
import os

import numpy as np
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers.implementations import BertWordPieceTokenizer


class Tokenizer:
    """Turns texts into token-id arrays, matching transformers' tokenizer for the checkpoint.

    Args:
        backend: a ``tokenizers.Tokenizer``.
        max_length: texts longer than this many tokens (special tokens included) are truncated.
        pad_token_id: the id used for padding by the batching code.
    """

    def __init__(self, backend: _HFTokenizer, max_length: int, pad_token_id: int = 0):
        self.backend = backend
        self.max_length = max_length
        self.pad_token_id = pad_token_id
        backend.no_padding()  # the encoder pads to its own length buckets
        backend.enable_truncation(max_length)

    @classmethod
    def from_dir(cls, model_dir: str, max_length: int) -> Tokenizer:
        """Loads ``tokenizer.json``, else builds BERT WordPiece from ``vocab.txt``.

        Raises:
            FileNotFoundError: neither file is in ``model_dir``.
        """
        tj = os.path.join(model_dir, "tokenizer.json")
        vocab = os.path.join(model_dir, "vocab.txt")
        config = _tokenizer_config(model_dir)
        if os.path.isfile(tj):
            backend = _HFTokenizer.from_file(tj)
        elif os.path.isfile(vocab):
            lower = config.get("do_lower_case", True)
            backend = BertWordPieceTokenizer(vocab, lowercase=lower)._tokenizer
        else:
            raise FileNotFoundError(
                f"{model_dir}: no tokenizer.json or vocab.txt; copy the tokenizer files of the "
                "original model into this directory."
            )
        pad = backend.token_to_id(config.get("pad_token", "[PAD]"))
        return cls(backend, max_length, 0 if pad is None else pad)

    def __call__(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids (with [CLS] and [SEP]) per text, each at most ``max_length`` long."""
        # The tokenizer truncates only after tokenising the whole text: cut very long texts first,
        # at a whitespace boundary, where no WordPiece token can straddle the cut.
        limit = self.max_length * _CHARS_PER_TOKEN
        cut = [_cut_at_space(t, limit) if len(t) > limit else t for t in texts]
        ids = [np.asarray(e.ids, dtype=np.int32) for e in self.backend.encode_batch(cut)]
        # A cut text that no longer fills max_length tokens (very long words, no spaces) is redone whole.
        redo = [i for i, t in enumerate(texts) if cut[i] is not t and len(ids[i]) < self.max_length]
        for i, e in zip(redo, self.backend.encode_batch([texts[i] for i in redo]), strict=True):
            ids[i] = np.asarray(e.ids, dtype=np.int32)
        return ids


# Far more characters than a WordPiece token ever covers in English prose.
_CHARS_PER_TOKEN = 20


def _cut_at_space(text: str, limit: int) -> str:
    """``text`` up to the last whitespace before ``limit`` characters (all of it if there is none)."""
    i = max(text.rfind(c, 0, limit) for c in " \n\t")
    return text[:i] if i > 0 else text


def _tokenizer_config(model_dir: str) -> dict:
    path = os.path.join(model_dir, "tokenizer_config.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    pad = cfg.get("pad_token")
    if isinstance(pad, dict):  # AddedToken serialised
        cfg["pad_token"] = pad.get("content", "[PAD]")
    return cfg
