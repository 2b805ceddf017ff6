"""One encoder per process for the same model and settings, shared by every caller until released."""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable
from typing import Any

Key = tuple[str, tuple[tuple[str, Any], ...]]


class Registry:
    """Encoders by (model, settings): the integrations' objects share weights and compiled programs.

    Args:
        factory: builds an encoder (``GTEEncoder.from_pretrained``); its signature names the settings.
    """

    def __init__(self, factory: Callable[..., Any]):
        self._factory = factory
        self._entries: dict[Key, Any] = {}
        self._lock = threading.Lock()  # guards the two dicts only, never held while a model loads
        self._loading: dict[Key, threading.Lock] = {}  # one per entry: a load blocks only its own key

    def key(self, name_or_path: str, **kwargs: Any) -> Key:
        """The model (a directory by its real path) and every setting, defaults filled in."""
        bound = inspect.signature(self._factory).bind(name_or_path, **kwargs)
        bound.apply_defaults()  # shared(d) and shared(d, dtype="float32") are the same encoder
        args = dict(bound.arguments)
        return _model_key(args.pop("name_or_path")), tuple(sorted(args.items()))

    def get(self, name_or_path: str, **kwargs: Any) -> Any:
        """The encoder for these arguments, built on first use."""
        key = self.key(name_or_path, **kwargs)
        with self._lock:
            if key in self._entries:
                return self._entries[key]
            entry_lock = self._loading.setdefault(key, threading.Lock())
        with entry_lock:  # callers of the same key wait for one load; other keys go on
            with self._lock:
                if key in self._entries:
                    return self._entries[key]
            encoder = self._factory(name_or_path, **kwargs)
            with self._lock:
                self._entries[key] = encoder
                self._loading.pop(key, None)
            return encoder

    def release(self, name_or_path: str | None = None) -> int:
        """Drops the encoders of ``name_or_path`` (every setting), or all of them; returns how many.

        The weights and compiled programs are freed once no other object holds the encoder.
        """
        with self._lock:
            gone = [k for k in self._entries if name_or_path is None or k[0] == _model_key(name_or_path)]
            for k in gone:
                del self._entries[k]
        return len(gone)

    def __len__(self) -> int:
        return len(self._entries)


def _model_key(name_or_path: str) -> str:
    name = os.path.expanduser(str(name_or_path))
    return os.path.realpath(name) if os.path.isdir(name) else name  # "d", "d/" and "./d" alike
