"""The one base of every error the user can fix, so the CLI tells those from bugs in one place."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix: bad input, options, files or model names; the message says what to change.

    The ``gte-jax`` command prints it as one line, ``gte-jax <command>: error: <message>``, and exits 2;
    any other exception is a bug and keeps its traceback. Each subclass also keeps its older base
    (``ValueError``, ``FileNotFoundError``, ...), so ``except ValueError`` callers still catch it.
    """


class ConfigError(ValueError, UserError):
    """A model directory's settings (``config.json``, tokenizer, pooling files) are missing, malformed or
    unsupported; the message names the file (if any) and the field."""


class CheckpointError(ValueError, UserError):
    """A checkpoint does not fit the model; the message lists every problem."""


class MissingExtraError(ImportError, UserError):
    """A feature's optional dependency is not installed; the message names the extra that brings it."""


def missing_extra(module: str | None, extra: str, feature: str) -> MissingExtraError:
    """The error for ``feature`` when ``module`` (from the ``extra`` extra) cannot be imported.

    gte-jax is not on PyPI, so the install line is the one that works from the checkout.
    """
    return MissingExtraError(
        f"{feature} needs {module or 'a package'} from the {extra} extra, which is not installed: "
        f'pip install ".[{extra}]" in the gte-jax checkout (gte-jax is not on PyPI).',
        name=module,
    )
