"""Prompts: named strings prepended to texts before tokenisation, as sentence-transformers 6.x resolves them.

A prompt is plain text put in front of each text (``"query: " + text``), so its tokens count
against ``max_length``. Which one applies to a call:

1. ``prompt=`` given: that string (``""`` means none); a ``prompt_name`` beside it is ignored with
   a warning, as sentence-transformers does.
2. ``prompt_name=`` given: the encoder's prompt of that name (an unknown name is an error).
3. otherwise the prompt named by ``default_prompt_name``, if any.

``encode_query`` fills in step 2 with ``"query"`` and ``encode_document`` with the first of
``"document"``, ``"passage"``, ``"corpus"`` that the encoder has; without one they use no prompt
(never the default prompt), as sentence-transformers does.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gte_jax.engine.tokenization import Tokenizer

QUERY_PROMPT_NAMES = ("query",)
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")


def check_prompts(
    prompts: Mapping[str, str] | Iterable[tuple[str, str]] | None, default_prompt_name: str | None
) -> dict[str, str]:
    """``prompts`` as a dict, after checking it and that ``default_prompt_name`` is one of them.

    Raises:
        TypeError: ``prompts`` is not a mapping of names to texts (a string, say), or a name or text is not a string.
        ValueError: ``default_prompt_name`` names no prompt.
    """
    shown = repr(prompts) if len(repr(prompts)) <= 40 else f"a {type(prompts).__name__}"
    wrong = f"prompts must be a dict of prompt name to prompt text, such as {{'query': 'query: '}}, not {shown}."
    if isinstance(prompts, (str, bytes)):
        raise TypeError(wrong)
    try:
        checked = dict(prompts or {})
    except (TypeError, ValueError):
        raise TypeError(wrong) from None
    for name, text in checked.items():
        if not isinstance(name, str) or not isinstance(text, str):
            raise TypeError(f"prompts must map names to strings; got {name!r}: {text!r}.")
    if default_prompt_name is not None and default_prompt_name not in checked:
        raise ValueError(f"default_prompt_name {default_prompt_name!r} is not one of the prompts {sorted(checked)}.")
    return checked


def resolve_prompt(
    prompts: Mapping[str, str],
    default_prompt_name: str | None,
    prompt: str | None,
    prompt_name: str | None,
    *,
    no_prompts: str = "pass prompts= to from_pretrained, or prompt= here",
) -> str:
    """The text to prepend (``""`` for none) for a call given ``prompt`` and ``prompt_name``.

    ``no_prompts`` is what the error says to do when the model has no prompts at all, in the caller's terms.

    Raises:
        TypeError: ``prompt`` or ``prompt_name`` is not a string.
        ValueError: ``prompt_name`` is not one of ``prompts`` (the message lists them).
    """
    if prompt is not None:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, not {type(prompt).__name__}.")
        if prompt_name is not None:
            warnings.warn(
                f"both prompt= and prompt_name={prompt_name!r} were given; using prompt and ignoring prompt_name.",
                stacklevel=3,
            )
        return prompt
    if prompt_name is not None:
        if not isinstance(prompt_name, str):
            raise TypeError(f"prompt_name must be a string, not {type(prompt_name).__name__}.")
        if prompt_name not in prompts:
            known = sorted(prompts) or f"none: {no_prompts}"
            raise ValueError(f"prompt_name {prompt_name!r} is not one of this model's prompts ({known}).")
        return prompts[prompt_name]
    if default_prompt_name is not None:
        return prompts[default_prompt_name]
    return ""


def first_prompt(prompts: Mapping[str, str], names: tuple[str, ...]) -> str:
    """The first of ``names`` that ``prompts`` has, or ``""``."""
    return next((prompts[n] for n in names if n in prompts), "")


def prompt_tokens_if_too_long(tokenizer: Tokenizer, prompt: str) -> int | None:
    """The prompt's token count when it leaves no room for the text, else None.

    A prompt that fills ``max_length`` with [CLS] and [SEP] truncates every text away: every text would
    get the same vector, the prompt's.
    """
    if not prompt:
        return None
    encoding = tokenizer.backend.encode(prompt, add_special_tokens=False)  # truncated: the rest overflows
    count = len(encoding.ids) + sum(len(part.ids) for part in encoding.overflowing)
    special = len(tokenizer.backend.encode("").ids)
    return count if count + special >= tokenizer.max_length else None


def too_long_prompt(prompt: str, count: int, max_length: int) -> str:
    """What is wrong with a prompt that :func:`prompt_tokens_if_too_long` found too long (callers add the fix)."""
    shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
    return (
        f"the prompt {shown!r} is {count} tokens, which with [CLS] and [SEP] fill max_length {max_length}: no "
        "token of any text fits after it, so every text would get the same vector"
    )
