"""The ``gte-jax`` command: each subcommand lives in its own module and registers itself here.

Exit codes, for every subcommand: 0 done; 2 a mistake the user can fix (a bad option, file or model name:
one line ``gte-jax <command>: error: ...`` on stderr, from any :class:`gte_jax.errors.UserError`).
Any other exception is a bug and ends with its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gte_jax.errors import UserError

# subcommand -> module with add_parser(subparsers); imported lazily so `--help` stays fast.
SUBCOMMANDS = {
    "demo": "gte_jax.demo",
    "embed": "gte_jax.corpus.cli",
    "convert": "gte_jax_convert.cli",
    "train": "gte_jax.train.cli",
    "serve": "gte_jax.serve.cli",
}


def _build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="gte-jax", description="GTE text embeddings in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for module in SUBCOMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser, dict(sub.choices)


def build_parser() -> argparse.ArgumentParser:
    """The ``gte-jax`` parser with every subcommand."""
    return _build()[0]


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand; returns its exit code (2 for a :class:`UserError`, printed as one line)."""
    parser, commands = _build()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would answer with the top-level usage; the subcommand's says what it takes
        commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"gte-jax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
