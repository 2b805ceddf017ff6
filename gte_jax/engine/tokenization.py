"""Tokenisation with the ``tokenizers`` library (WordPiece, SentencePiece, byte-level BPE), truncating, never padding.

A text is truncated to ``max_length`` tokens, but ``tokenizers`` only truncates
after tokenising the whole text, so a 50 MB line would cost gigabytes. Texts
longer than a window of characters are therefore tokenised a window at a time,
until ``max_length`` tokens are collected. Tokens never straddle a cut, so the
ids are those of the whole text (``tests/test_tokenization.py`` checks this
against transformers). Where a window is cut depends on the pre-tokeniser:

* BERT's: just before a character where it always splits (whitespace,
  punctuation, CJK ideographs).
* any other (SentencePiece's Metaspace as in XLM-R, byte-level BPE as in
  ModernBERT): at the start of the window's last pre-token (with the whitespace
  run before it), once tokenising each side on its own is checked to give the
  same pre-tokens as the window (no prefix space added, no space collapsed
  differently). A pre-token longer than the window (a long run without spaces)
  is tokenised whole: exact, with memory that grows with that run
  (``tests/test_family_gte.py``).
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from collections.abc import Iterator
from typing import Any, cast

import numpy as np
from tokenizers import PreTokenizedString
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers.implementations import BertWordPieceTokenizer
from tokenizers.pre_tokenizers import BertPreTokenizer

from gte_jax.checkpoints.hub import read_json
from gte_jax.errors import ConfigError

# Far more characters than a WordPiece token ever covers in English prose.
CHARS_PER_TOKEN = 20

# Whitespace that BERT's normaliser keeps as a space (Rust's White_Space minus the control characters it
# deletes: \x0b, \x0c and \x85 vanish, joining their neighbours).
_SPACES = " \t\n\r\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Ideographs that BERT's normaliser surrounds with spaces (``handle_chinese_chars``).
_CJK = (
    "\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff\U00020000-\U0002a6df\U0002a700-\U0002b73f\U0002b740-\U0002b81f"
    "\U0002b820-\U0002ceaf\U0002f800-\U0002fa1f"
)


# A token's flags ride in the high bits of its int32 id, so that the engine's batching, padding and runners
# move one array per row whatever the row carries: a pair's segment (token type) for cross-encoders, and
# whether pooling skips the token (a prompt's tokens under ``include_prompt: false``).
SEGMENT_SHIFT = 24
MAX_PAIR_VOCAB = 1 << SEGMENT_SHIFT  # XLM-R's 250,048 ids fit many times over
UNPOOLED = 1 << 30


def pack_segments(ids: np.ndarray, type_ids: np.ndarray) -> np.ndarray:
    """Token ids with each token's segment (0 or 1) in the high bits."""
    return (ids.astype(np.int32) | (type_ids.astype(np.int32) << SEGMENT_SHIFT)).astype(np.int32)


def mark_unpooled(ids: np.ndarray, n: int) -> np.ndarray:
    """``ids`` with its first ``n`` tokens flagged for pooling to skip (they are still attended to)."""
    out = ids.copy()
    out[:n] |= UNPOOLED
    return out


def unpack_segments(packed: Any) -> tuple[Any, Any]:
    """``(ids, token_type_ids)`` of packed ids (numpy or jax arrays alike)."""
    return packed & (MAX_PAIR_VOCAB - 1), (packed >> SEGMENT_SHIFT) & 1


def pooled(packed: Any) -> Any:
    """1 where pooling takes the token, 0 where :func:`mark_unpooled` flagged it (numpy or jax alike)."""
    return 1 - ((packed >> 30) & 1)


def lone_surrogate(text: str) -> int | None:
    """The index of ``text``'s first lone surrogate (a code point UTF-8 cannot encode, so no tokenizer can take
    the text), or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


@functools.cache
def _punctuation() -> str:
    """Characters of Unicode category P* that every Unicode version since BERT agrees on, as a regex class body."""
    blocks = (range(0x21, 0x2E00), range(0x3000, 0x3040), range(0xFF00, 0xFFF0))
    chars = [chr(c) for r in blocks for c in r if unicodedata.category(chr(c)).startswith("P")]
    return "".join(re.escape(c) for c in chars)


@functools.cache
def _boundary(cjk: bool) -> re.Pattern[str]:
    """Characters before which BERT's pre-tokeniser always starts a new token."""
    return re.compile(f"[{_SPACES}{_punctuation()}{_CJK if cjk else ''}]")


class Tokenizer:
    """Turns texts into token-id arrays, matching transformers' tokenizer for the checkpoint.

    Args:
        backend: a ``tokenizers.Tokenizer`` (BERT normaliser and pre-tokeniser).
        max_length: texts longer than this many tokens (special tokens included) are truncated.
        pad_token_id: the id used for padding by the batching code.
    """

    def __init__(self, backend: _HFTokenizer, max_length: int, pad_token_id: int = 0):
        self.backend = backend
        self.max_length = max_length
        self.pad_token_id = pad_token_id
        backend.no_padding()  # the encoder pads to its own length buckets
        backend.enable_truncation(max_length)
        # Texts longer than this many characters are tokenised a window at a time.
        self.window = max_length * CHARS_PER_TOKEN
        self._special = backend.encode("").ids  # [CLS], [SEP]: what the template adds around a text
        self._boundary = _boundary(getattr(backend.normalizer, "handle_chinese_chars", False) is True)
        # BERT's pre-tokeniser splits at characters the boundary regex knows; any other is asked where it splits.
        pre = backend.pre_tokenizer
        self._bert_like = pre is None or isinstance(pre, BertPreTokenizer)

    @property
    def vocab_size(self) -> int:
        """How many ids the tokenizer can produce (added tokens included)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_dir(cls, model_dir: str, max_length: int, default_pad_id: int = 0) -> Tokenizer:
        """Loads ``tokenizer.json``, else builds BERT WordPiece from ``vocab.txt``.

        The padding id is the tokenizer's pad token (``tokenizer_config.json``, else ``[PAD]``),
        else ``default_pad_id`` (the model config's ``pad_token_id``).

        Raises:
            ConfigError: neither file is in ``model_dir``, or ``tokenizer.json`` cannot be read.
        """
        tj = os.path.join(model_dir, "tokenizer.json")
        vocab = os.path.join(model_dir, "vocab.txt")
        config = read_json(model_dir, "tokenizer_config.json") or {}
        if os.path.isfile(tj):
            try:
                backend = _HFTokenizer.from_file(tj)
            except Exception as e:  # tokenizers raises a bare Exception for a malformed file
                raise ConfigError(f"{tj} cannot be read ({e}); restore it from the original model.") from None
        elif os.path.isfile(vocab):
            lower = config.get("do_lower_case", True)
            backend = BertWordPieceTokenizer(vocab, lowercase=lower)._tokenizer
        else:
            raise ConfigError(
                f"{model_dir}: no tokenizer.json or vocab.txt; copy the tokenizer files of the "
                "original model into this directory."
            )
        pad_token = config.get("pad_token", "[PAD]")
        if isinstance(pad_token, dict):  # an AddedToken, serialised
            pad_token = pad_token.get("content", "[PAD]")
        pad = backend.token_to_id(pad_token)
        return cls(backend, max_length, default_pad_id if pad is None else pad)

    def __call__(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids (with [CLS] and [SEP]) per text, each at most ``max_length`` long."""
        short = [i for i, t in enumerate(texts) if len(t) <= self.window]
        ids: list[np.ndarray] = [None] * len(texts)  # type: ignore[list-item]
        for i, e in zip(short, self.backend.encode_batch([texts[i] for i in short]), strict=True):
            ids[i] = np.asarray(e.ids, dtype=np.int32)
        for i, t in enumerate(texts):
            if ids[i] is None:
                ids[i] = self._encode_long(t)
        return ids

    def pairs(self, pairs: list[tuple[str, str]]) -> list[np.ndarray]:
        """Packed token ids (:func:`pack_segments`) per ``(first, second)`` pair, truncated to ``max_length``
        together as transformers' fast tokenizers do (``longest_first``).

        A side longer than :attr:`window` characters is first cut to a prefix holding at least
        ``max_length`` tokens (at a boundary tokens never cross), so the ids are those of the whole pair.
        """
        encoded = self.backend.encode_batch([(self._prefix(a), self._prefix(b)) for a, b in pairs])
        return [pack_segments(np.asarray(e.ids), np.asarray(e.type_ids)) for e in encoded]

    def truncated(self, inputs: list[str] | list[tuple[str, str]], ids: list[np.ndarray]) -> list[int]:
        """Indices of ``inputs`` (texts, or pairs as :meth:`pairs` takes them) whose ``ids`` (this tokenizer's) the
        limit cut: the ones that reach it, tokenised again with room for one more token."""
        full = [i for i, t in enumerate(ids) if len(t) >= self.max_length]
        if not full:
            return []
        one_more = self._one_token_longer
        if isinstance(inputs[0], tuple):
            longer = one_more.pairs([cast(tuple[str, str], inputs[i]) for i in full])
        else:
            longer = one_more([cast(str, inputs[i]) for i in full])
        return [i for i, t in zip(full, longer, strict=True) if len(t) > self.max_length]

    @functools.cached_property
    def _one_token_longer(self) -> Tokenizer:
        return Tokenizer(_HFTokenizer.from_str(self.backend.to_str()), self.max_length + 1, self.pad_token_id)

    def _prefix(self, text: str) -> str:
        """``text``, or for a text longer than :attr:`window` a prefix whose tokens start the text's and number at
        least ``max_length``."""
        if len(text) <= self.window:
            return text
        pieces: list[str] = []
        count = 0
        for piece, _, _ in self._pieces(text):
            pieces.append(piece)
            count += len(self.backend.encode(piece, add_special_tokens=False).ids)
            if count >= self.max_length:
                break
        return "".join(pieces)

    def _encode_long(self, text: str) -> np.ndarray:
        """The ids of a text longer than :attr:`window`, tokenising only as much of it as they need."""
        need = self.max_length - len(self._special)
        content: list[int] = []
        for piece, _, _ in self._pieces(text):
            content += self.backend.encode(piece, add_special_tokens=False).ids
            if len(content) >= need:
                break
        return np.asarray([*self._special[:1], *content[:need], *self._special[1:]], dtype=np.int32)

    def tokens(self, text: str, add_special_tokens: bool = True) -> list[tuple[int, str, bool, int, int]]:
        """``(id, token, special, start, stop)`` of each token ``text`` is truncated to, offsets in characters of
        ``text`` (``(0, 0)`` for a special token), tokenising only as much of a long text as they need."""
        if len(text) <= self.window:
            e = self.backend.encode(text, add_special_tokens=add_special_tokens)
            every = zip(e.ids, e.tokens, e.special_tokens_mask, e.offsets, strict=True)
            return [(i, t, bool(special), a, b) for i, t, special, (a, b) in every]
        specials = self._special if add_special_tokens else []
        need = self.max_length - len(specials)
        content: list[tuple[int, str, bool, int, int]] = []
        for piece, start, end in self._pieces(text):
            e = self.backend.encode(piece, add_special_tokens=False)
            raw = piece == text[start:end]  # else one over-long word, normalised: its [UNK] spans the word
            for i, t, (a, b) in zip(e.ids, e.tokens, e.offsets, strict=True):
                content.append((i, t, False, start + a, start + b) if raw else (i, t, False, start, end))
            if len(content) >= need:
                break
        marks = [(i, self.backend.id_to_token(i) or "", True, 0, 0) for i in specials]
        return [*marks[:1], *content[:need], *marks[1:]]

    def _pieces(self, text: str) -> Iterator[tuple[str, int, int]]:
        """Consecutive pieces of ``text`` to tokenise in turn, each at most about :attr:`window` characters,
        with where each starts and ends in ``text``."""
        if not self._bert_like:
            yield from self._pretoken_pieces(text)
            return
        start = 0
        while start < len(text):
            end = start + self.window
            if end >= len(text):
                yield text[start:], start, len(text)
                return
            last = self._boundary.search(text[start:end][::-1])  # the window's last boundary
            cut = end - last.start() - 1 if last else start
            if cut > start:
                yield text[start:cut], start, cut
                start = cut
            elif last:  # the window's only boundary is its first character
                yield text[start], start, start + 1
                start += 1
            else:  # one word longer than the window
                after = self._boundary.search(text, end)
                word_end = after.start() if after else len(text)
                yield self._normalized_word(text, start, word_end), start, word_end
                start = word_end

    def _normalized_word(self, text: str, start: int, end: int) -> str:
        """``text[start:end]`` (one word) normalised, or its first part once that is too long to be anything
        but one [UNK]: WordPiece gives up on words longer than ``max_input_chars_per_word``.

        Normalising a window at a time bounds the memory; a normalised word tokenises as the raw word does.
        """
        normalize = self.backend.normalizer.normalize_str if self.backend.normalizer else str
        limit = getattr(self.backend.model, "max_input_chars_per_word", 100)
        word = ""
        for a in range(start, end, self.window):
            word += normalize(text[a : min(a + self.window, end)])
            if len(word) > limit:
                break
        return word

    def _pretoken_pieces(self, text: str) -> Iterator[tuple[str, int, int]]:
        """:meth:`_pieces` for a pre-tokeniser other than BERT's: each piece ends where the window's last
        pre-token starts; a window without such a cut is doubled until it has one (a pre-token that long)."""
        start = 0
        while start < len(text):
            size = self.window
            while True:
                end = start + size
                if end >= len(text):
                    yield text[start:], start, len(text)
                    return
                cut = self._cut(text[start:end])
                if cut:
                    yield text[start : start + cut], start, start + cut
                    start += cut
                    break
                size *= 2

    def _splits(self, text: str) -> list[tuple[str, tuple[int, int]]]:
        """``text`` normalised and pre-tokenised: each pre-token with its character span in ``text``."""
        pretok = PreTokenizedString(text)
        if self.backend.normalizer is not None:
            pretok.normalize(self.backend.normalizer.normalize)
        self.backend.pre_tokenizer.pre_tokenize(pretok)
        return [(piece, span) for piece, span, _ in pretok.get_splits("original", "char")]

    def _cut(self, window: str, tries: int = 4) -> int:
        """Where ``window`` may be cut so that both sides tokenise as they do within it (0: nowhere).

        Candidates are the starts of the last pre-tokens, each also moved back over the whitespace before it
        (SentencePiece collapses a run of spaces into the next pre-token's ``▁``; a cut inside the run would
        leave a lone ``▁``). A candidate is taken once each side, pre-tokenised alone, gives the window's own
        pre-tokens: that rules out a prefix space added to the right side or text normalised differently.
        """
        splits = self._splits(window)
        candidates: list[int] = []
        for _, (a, _) in reversed(splits[1:]):
            run = a
            while run > 0 and window[run - 1].isspace():
                run -= 1
            candidates += [c for c in (run, a) if c > 0 and c not in candidates]
            if len(candidates) >= tries:
                break
        for c in candidates:
            left = [p for p, (_, b) in splits if b <= c]
            right = [p for p, (a, _) in splits if a >= c]
            if [p for p, _ in self._splits(window[:c])] == left and [p for p, _ in self._splits(window[c:])] == right:
                return c
        return 0
