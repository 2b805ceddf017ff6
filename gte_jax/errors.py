"""The one base of every error the user can fix, so the CLI tells those from bugs in one place."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix: bad input, options, files or model names; the message says what to change.

    The ``gte-jax`` command prints it as one line, ``gte-jax <command>: error: <message>``, and exits 2;
    any other exception is a bug and keeps its traceback. Each subclass also keeps its older base
    (``ValueError``, ``FileNotFoundError``, ...), so ``except ValueError`` callers still catch it.
    """
