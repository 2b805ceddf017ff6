"""The ``gte-jax`` command: each subcommand lives in its own module and registers itself here."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module with add_parser(subparsers); imported lazily so `--help` stays fast.
SUBCOMMANDS = {
    "demo": "gte_jax.demo",
    "embed": "gte_jax.corpus.cli",
    "convert": "gte_jax_convert.cli",
    "train": "gte_jax.train.cli",
    "serve": "gte_jax.serve.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gte-jax", description="GTE text embeddings in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for module in SUBCOMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
