"""The request and response bodies of the OpenAI and TEI embedding APIs, checked by hand.

Plain Python over ``json.loads`` output, no web framework: every error is a :class:`RequestError`
whose message names the field (``input[3][7]``) and says what to send instead, and the
route turns it into the status code and error body of the API it mirrors.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from gte_jax.engine.tokenization import lone_surrogate
from gte_jax.errors import UserError
from gte_jax.models.similarity import truncate_rows

# JSON's names for Python's types, for messages that speak the client's language.
_JSON_KINDS = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}

ENCODING_FORMATS = ("float", "base64")


class RequestError(UserError):
    """A client's mistake.

    Args:
        message: what is wrong and what to send instead, naming the field.
        param: the field (OpenAI's ``error.param``).
        status: the HTTP status; None for a malformed field, which each API answers with its own
            (OpenAI 400, TEI 422).
    """

    def __init__(self, message: str, *, param: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a request is checked against: the model's and the server's."""

    dim: int
    max_length: int  # tokens, [CLS] and [SEP] included
    vocab_size: int  # rows of the embedding table: token ids must be below it
    max_client_batch_size: int


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What to embed: texts to tokenise, or token ids a client sent (already cut to ``max_length``)."""

    texts: list[str] | None = None
    token_ids: list[np.ndarray] | None = None
    overlong: tuple[int, ...] = ()  # indices of token-id inputs longer than max_length (before the cut)

    def __len__(self) -> int:
        return len(self.texts) if self.texts is not None else len(self.token_ids or ())


@dataclasses.dataclass(frozen=True)
class OpenAIRequest:
    """``POST /v1/embeddings``."""

    inputs: Inputs
    model: str | None
    encoding_format: str
    dimensions: int | None


@dataclasses.dataclass(frozen=True)
class EmbedRequest:
    """TEI's ``POST /embed``."""

    inputs: Inputs
    normalize: bool
    truncate: bool
    dimensions: int | None
    prompt_name: str | None = None


@dataclasses.dataclass(frozen=True)
class TokenizeRequest:
    """TEI's ``POST /tokenize``."""

    texts: list[str]
    add_special_tokens: bool
    prompt_name: str | None = None
    truncate: bool = True


def kind(value: Any) -> str:
    """The JSON type of ``value``, with an article: ``an array``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return _JSON_KINDS.get(type(value), type(value).__name__)


def given(value: Any, limit: int = 60) -> str:
    """``value`` as the client wrote it (JSON), shortened: for messages that say what was sent."""
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_json(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object.

    Raises:
        RequestError: (400) the body is not UTF-8, not JSON, or not an object.
    """
    example = 'send a JSON object such as {"input": ["some text"]}'
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(
            f"the request body is not UTF-8 text (byte 0x{body[e.start]:02x} at offset {e.start}); {example}, "
            "encoded as UTF-8 and not compressed",
            status=400,
        ) from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise RequestError(f"the request body is nested too deeply to be read; {example}", status=400) from None
    except json.JSONDecodeError as e:
        raise RequestError(f"the request body is not valid JSON ({e}); {example}", status=400) from None
    except ValueError:  # Python refuses to read an integer of more than sys.get_int_max_str_digits() digits
        raise RequestError(
            f"the request body holds a number of thousands of digits, which no field takes; {example}", status=400
        ) from None
    if not isinstance(value, dict):
        raise RequestError(f"the request body must be a JSON object, not {kind(value)}", status=400)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_text(text: str, field: str) -> None:
    at = lone_surrogate(text)
    if at is not None:
        raise RequestError(
            f"`{field}` holds a lone surrogate ({text[at]!r} at character {at}), which is not text; "
            "send valid UTF-8 or replace the character",
            param=field.split("[")[0],
        )


def _token_ids(value: list, field: str, limits: Limits) -> tuple[np.ndarray, bool]:
    """One input's token ids, cut to ``max_length``, and whether it was longer."""
    param = field.split("[")[0]
    if not value:
        raise RequestError(f"`{field}` is an empty list of token ids; send at least one id", param=param)
    for j, t in enumerate(value):
        if not _is_int(t):
            raise RequestError(f"`{field}[{j}]` is {kind(t)}, not a token id (an integer)", param=param)
        if not 0 <= t < limits.vocab_size:
            raise RequestError(
                f"`{field}[{j}]` = {t} is not a token id of this model (0 to {limits.vocab_size - 1}); "
                "send ids from this server's /tokenize, not another tokenizer's (such as tiktoken's)",
                param=param,
            )
    return np.asarray(value[: limits.max_length], dtype=np.int32), len(value) > limits.max_length


def _too_many(n: int, field: str, limits: Limits) -> None:
    if n > limits.max_client_batch_size:
        raise RequestError(
            f"`{field}` holds {n} inputs, more than this server takes in one request "
            f"({limits.max_client_batch_size}, --max-client-batch-size); split it into smaller requests",
            param=field,
            status=413,
        )


def parse_inputs(value: Any, field: str, limits: Limits) -> Inputs:
    """A string, a list of strings, a list of token ids (one input) or a list of lists of token ids.

    Raises:
        RequestError: the value is missing, empty or of the wrong type (the message names the item),
            a token id is outside the vocabulary, or (413) there are more inputs than the server takes.
    """
    expected = "a string, a list of strings, a list of token ids or a list of lists of token ids"
    if value is None:
        raise RequestError(f"`{field}` is missing; send {expected}", param=field)
    if isinstance(value, str):
        _check_text(value, field)
        return Inputs(texts=[value])
    if not isinstance(value, list):
        raise RequestError(f"`{field}` must be {expected}, not {kind(value)}", param=field)
    if not value:
        raise RequestError(f"`{field}` is an empty list; send at least one input", param=field)
    first = value[0]
    if _is_int(first):  # one input, already tokenised
        one, cut = _token_ids(value, field, limits)
        return Inputs(token_ids=[one], overlong=(0,) if cut else ())
    _too_many(len(value), field, limits)
    if isinstance(first, str):
        for i, t in enumerate(value):
            if not isinstance(t, str):
                raise RequestError(f"`{field}[{i}]` is {kind(t)}; a list of texts must hold only strings", param=field)
            _check_text(t, f"{field}[{i}]")
        return Inputs(texts=list(value))
    if isinstance(first, list):
        ids: list[np.ndarray] = []
        overlong: list[int] = []
        for i, item in enumerate(value):
            if not isinstance(item, list):
                raise RequestError(
                    f"`{field}[{i}]` is {kind(item)}; a list of token-id lists must hold only lists of integers",
                    param=field,
                )
            row, longer = _token_ids(item, f"{field}[{i}]", limits)
            ids.append(row)
            if longer:
                overlong.append(i)
        return Inputs(token_ids=ids, overlong=tuple(overlong))
    raise RequestError(f"`{field}[0]` is {kind(first)}; `{field}` must be {expected}", param=field)


def _dimensions(value: Any, limits: Limits) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or not 1 <= value <= limits.dim:
        raise RequestError(
            f"`dimensions` must be an integer from 1 to {limits.dim} (this model's dimension), not {given(value)}",
            param="dimensions",
        )
    return value


def _bool(body: dict[str, Any], field: str, default: bool) -> bool:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(f"`{field}` must be true or false, not {kind(value)}", param=field)
    return value


def _string(body: dict[str, Any], field: str) -> str | None:
    """An optional text field: a string that UTF-8 can encode (the answer may echo it), or null."""
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise RequestError(f"`{field}` must be a string, not {kind(value)}", param=field)
    if value is not None:
        _check_text(value, field)
    return value


def _prompt_name(body: dict[str, Any]) -> str | None:
    """TEI's ``prompt_name``: one of the model's prompts (checked when the texts are tokenised)."""
    return _string(body, "prompt_name")


def parse_openai(body: dict[str, Any], limits: Limits) -> OpenAIRequest:
    """An OpenAI ``/v1/embeddings`` request (``input``, ``model``, ``encoding_format``, ``dimensions``, ``user``)."""
    inputs = parse_inputs(body.get("input"), "input", limits)
    model = _string(body, "model")
    fmt = body.get("encoding_format")
    if fmt is None:
        fmt = "float"
    if fmt not in ENCODING_FORMATS:
        raise RequestError(f'`encoding_format` must be "float" or "base64", not {given(fmt)}', param="encoding_format")
    return OpenAIRequest(inputs, model, fmt, _dimensions(body.get("dimensions"), limits))


def parse_embed(body: dict[str, Any], limits: Limits) -> EmbedRequest:
    """A TEI ``/embed`` request (``inputs``, ``normalize``, ``truncate``, ``prompt_name``, ``dimensions``)."""
    inputs = parse_inputs(body.get("inputs"), "inputs", limits)
    normalize = _bool(body, "normalize", True)
    truncate = _bool(body, "truncate", True)
    direction = body.get("truncation_direction")
    if direction is not None and (not isinstance(direction, str) or direction.lower() != "right"):
        raise RequestError(
            f"`truncation_direction` {given(direction)} is not supported; this server keeps the start of a text "
            '("Right") only',
            param="truncation_direction",
        )
    return EmbedRequest(inputs, normalize, truncate, _dimensions(body.get("dimensions"), limits), _prompt_name(body))


def parse_tokenize(body: dict[str, Any], limits: Limits) -> TokenizeRequest:
    """A TEI ``/tokenize`` request (``inputs`` as texts, ``add_special_tokens``, ``prompt_name``, ``truncate``)."""
    inputs = parse_inputs(body.get("inputs"), "inputs", limits)
    if inputs.texts is None:
        raise RequestError("`inputs` must be a string or a list of strings to tokenize, not token ids", param="inputs")
    return TokenizeRequest(
        inputs.texts, _bool(body, "add_special_tokens", True), _prompt_name(body), _bool(body, "truncate", True)
    )


def shape_vectors(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """The first ``dimensions`` of each vector (Matryoshka style), re-normalised if asked."""
    return truncate_rows(vectors, dimensions, normalize)


def openai_body(vectors: np.ndarray, *, model: str, encoding_format: str, prompt_tokens: int) -> bytes:
    """An OpenAI embeddings response; ``base64`` is little-endian float32, as the ``openai`` client decodes it."""
    if encoding_format == "base64":
        little = vectors.astype("<f4", copy=False)
        embeddings: Sequence[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
    else:
        embeddings = vectors.tolist()
    data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(embeddings)]
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return _dumps({"object": "list", "data": data, "model": model, "usage": usage})


def tei_body(vectors: np.ndarray) -> bytes:
    """TEI's ``/embed`` response: one list of floats per input."""
    return _dumps(vectors.tolist())


def token_list(tokens: list[tuple[int, str, bool, int, int]], prompt_chars: int, limit: int) -> list[dict[str, Any]]:
    """TEI's ``/tokenize`` tokens of one text, at most ``limit``, from
    :meth:`~gte_jax.engine.tokenization.Tokenizer.tokens` of ``prompt + text``.

    Offsets are characters of the client's text (the prompt's length taken off); the prompt's tokens, which the
    client never sent, are special like [CLS] and [SEP], and every special token has null offsets.
    """
    out = []
    for tid, text, special, start, stop in tokens[:limit]:
        special = special or stop <= prompt_chars
        out.append(
            {
                "id": tid,
                "text": text,
                "special": special,
                "start": None if special else max(0, start - prompt_chars),
                "stop": None if special else stop - prompt_chars,
            }
        )
    return out


def tokens_body(rows: list[list[dict[str, Any]]]) -> bytes:
    """TEI's ``/tokenize`` response: the tokens of each text (see :func:`token_list`)."""
    return _dumps(rows)


def _dumps(value: Any) -> bytes:
    # allow_nan=False: a NaN would make the body invalid JSON; the batcher never hands one over, this makes sure.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
