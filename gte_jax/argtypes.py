"""argparse types shared by the ``gte-jax`` subcommands (standard library only: ``--help`` stays fast)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A whole number above zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value
