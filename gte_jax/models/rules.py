"""Checkpoint conversion as data: one table of rules per model family, read in both directions.

A rule pairs a Hugging Face key pattern with an NNX path pattern and the transform each way::

    Rule("encoder.layer.{i}.attention.self.{p:query|key|value}.weight",
         "layer.{i}.attention.{p}.kernel", load=qkv_kernel, save=qkv_kernel_inv)

``{i}`` stands for a layer number, ``{p:a|b}`` for one of the names given; both must appear on
both sides. ``[weight|gamma]`` is an alternative of one side only (old TF-converted checkpoints
say ``gamma``): loading accepts each, saving writes the first. A rule whose NNX side is a tuple
splits one tensor into several parameters (the hub's fused ``qkv_proj``); such rules are
``load_only``: export writes transformers' native layout, one tensor per parameter.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# A transform sees the tensor and the model's config (shapes for reshapes); a split returns a tuple.
Transform = Callable[[np.ndarray, Any], Any]


def identity(t: np.ndarray, cfg: Any) -> np.ndarray:
    return t


def transpose(t: np.ndarray, cfg: Any) -> np.ndarray:  # torch Linear stores [out, in]; einsum kernels [in, out]
    return t.T


_FIELD = re.compile(r"\{(\w+)(?::([^}]*))?\}|\[([^\]]*)\]")


def _choices(*patterns: str) -> dict[str, str]:
    """The alternatives each named field is given on any side (``{p:query|key|value}``)."""
    return {m[1]: m[2] for p in patterns for m in _FIELD.finditer(p) if m[1] and m[2]}


def _regex(pattern: str, choices: dict[str, str]) -> re.Pattern[str]:
    out, pos = [], 0
    for m in _FIELD.finditer(pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        name, given, local = m.groups()
        if local is not None:
            out.append("(?:" + "|".join(map(re.escape, local.split("|"))) + ")")
        else:
            options = given or choices.get(name)
            out.append(f"(?P<{name}>" + ("|".join(map(re.escape, options.split("|"))) if options else r"\d+") + ")")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out) + "$")


def _fill(pattern: str, fields: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name, _given, local = m.groups()
        return local.split("|")[0] if local is not None else fields[name]

    return _FIELD.sub(sub, pattern)


@dataclasses.dataclass(frozen=True)
class Rule:
    """One Hugging Face tensor <-> one NNX parameter (or several, for a fused tensor; load only)."""

    hf: str
    nnx: str | tuple[str, ...]
    load: Transform = identity
    save: Transform = identity
    load_only: bool = False

    def __post_init__(self) -> None:
        choices = _choices(self.hf, *self.targets)
        object.__setattr__(self, "_hf_re", _regex(self.hf, choices))
        object.__setattr__(self, "_nnx_re", [_regex(t, choices) for t in self.targets])

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.nnx,) if isinstance(self.nnx, str) else self.nnx

    def match_hf(self, key: str) -> dict[str, str] | None:
        m = self._hf_re.match(key)  # type: ignore[attr-defined]
        return m.groupdict() if m else None

    def match_nnx(self, path: str) -> dict[str, str] | None:
        m = self._nnx_re[0].match(path)  # type: ignore[attr-defined]
        return m.groupdict() if m else None


@dataclasses.dataclass(frozen=True)
class Conversion:
    """A family's rules, with the key prefixes its checkpoints may carry and the keys embedding never reads.

    Args:
        rules: the table.
        prefixes: stripped from a checkpoint key before matching (``"bert."``, ``"new."``); the first
            match wins, so list longer prefixes first.
        ignored: regexes of keys that are skipped on load (position ids, masked-LM heads).
    """

    rules: Sequence[Rule]
    prefixes: Sequence[str] = ()
    ignored: Sequence[str] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ignored", [re.compile(p) for p in self.ignored])

    def strip(self, key: str) -> str:
        for prefix in self.prefixes:
            if key.startswith(prefix):
                return key[len(prefix) :]
        return key

    def is_ignored(self, key: str) -> bool:
        return any(p.search(key) for p in self._ignored)  # type: ignore[attr-defined]

    def to_nnx(self, key: str, tensor: np.ndarray, cfg: Any) -> list[tuple[str, np.ndarray]] | None:
        """The NNX paths and arrays for a checkpoint tensor, or None when no rule takes the key.

        Raises:
            ValueError: the tensor cannot be reshaped as the rule says (a shape that does not fit).
        """
        key = self.strip(key)
        for rule in self.rules:
            fields = rule.match_hf(key)
            if fields is None:
                continue
            out = rule.load(tensor, cfg)
            arrays = out if isinstance(rule.nnx, tuple) else (out,)
            return [(_fill(t, fields), a) for t, a in zip(rule.targets, arrays, strict=True)]
        return None

    def nnx_path(self, key: str) -> list[str] | None:
        """The NNX paths a checkpoint key loads into (no tensor needed), or None."""
        key = self.strip(key)
        for rule in self.rules:
            fields = rule.match_hf(key)
            if fields is not None:
                return [_fill(t, fields) for t in rule.targets]
        return None

    def to_hf(self, path: str, array: np.ndarray, cfg: Any) -> tuple[str, np.ndarray]:
        """The Hugging Face key (no prefix) and tensor for an NNX parameter.

        Raises:
            ValueError: no two-way rule covers ``path`` (a module this family cannot export).
        """
        for rule in self.rules:
            if rule.load_only:
                continue
            fields = rule.match_nnx(path)
            if fields is not None:
                return _fill(rule.hf, fields), np.ascontiguousarray(rule.save(array, cfg))
        raise ValueError(f"parameter {path} has no Hugging Face name; it cannot be exported.")
