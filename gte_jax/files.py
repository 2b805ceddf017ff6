"""Reading a model directory's JSON files, with errors that name the file."""

from __future__ import annotations

import json
from typing import Any

from gte_jax.errors import ConfigError


def read_json_object(path: str) -> dict[str, Any]:
    """A ``config.json`` as a dict.

    Raises:
        ConfigError: the file is missing, not UTF-8 JSON, or not an object (the message names it).
    """
    try:
        with open(path, encoding="utf-8") as f:
            hf = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; pass a model directory that holds its config.json.") from None
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
            "restore the model's original config.json."
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text; restore the model's original config.json.") from None
    if not isinstance(hf, dict):
        raise ConfigError(
            f"{path} holds a JSON {type(hf).__name__}, not an object; restore the model's original config.json."
        )
    return hf
