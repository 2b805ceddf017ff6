"""How far each low-precision system lands from float32: cosine to float32 vectors, and STS-B Spearman.

    python bench/precision.py                                   # all-MiniLM-L6-v2, first 1,000 STS-B test pairs
    python bench/precision.py --systems st-bf16,ort,ort-int8,jax --dtype bfloat16,int8 --pairs 1379
    python bench/precision.py --model DIR --systems jax --dtype int8

Each system (``bench/systems.py``) embeds both sentences of the first ``--pairs`` STS-B test
pairs. Reported per system: the min and mean cosine of its vectors to those of its framework's
float32 system (ONNX Runtime int8 to ONNX Runtime float32, gte-jax bfloat16 and int8 to gte-jax
float32, sentence-transformers bfloat16 to sentence-transformers float32) and to
sentence-transformers float32; and STS-B Spearman x 100 (cosine of the pair against the gold
score) with its difference to the float32 system's. The float32 systems run too, as references.
All systems run in this process, one after another; one that fails stops the run with its error.

Writes its section of bench/RESULTS.md (``--out``), leaving the other sections.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from importlib.metadata import PackageNotFoundError, version

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import systems  # noqa: E402

HEADING = "# Low precision against float32: cosine and STS-B"
PACKAGES = ("torch", "sentence-transformers", "onnxruntime", "jax", "gte-jax")


def _versions() -> str:
    found = []
    for package in PACKAGES:
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            pass
    return ", ".join(found)


def _spearman(vectors: np.ndarray, gold: list[float]) -> float:
    """STS-B Spearman x 100 of the cosines of rows ``i`` and ``n + i`` against the gold scores."""
    from scipy.stats import spearmanr

    n = len(gold)
    return 100 * float(spearmanr((vectors[:n] * vectors[n:]).sum(axis=1), gold).statistic)


def _cosines(a: np.ndarray, b: np.ndarray) -> str:
    """``min | mean`` cosine of matching rows (both already unit length in float64)."""
    cos = (a * b).sum(axis=1)
    return f"{cos.min():.6f} | {cos.mean():.6f}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="checkpoint folder (default: the bundled all-MiniLM-L6-v2)")
    systems.add_arguments(p, systems="st-bf16,ort,ort-int8,jax", dtypes="bfloat16,int8")
    p.add_argument("--pairs", type=int, default=1000, help="first STS-B test pairs to embed (1,379 in all)")
    p.add_argument("--threads", type=int, default=0, help="torch and ONNX Runtime threads (default: theirs)")
    p.add_argument("--batch-size", type=int, default=32, help="sentence-transformers' and ONNX Runtime's batch size")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"))
    args = p.parse_args(argv)
    try:
        names = systems.expand(args.systems, args.dtype)
    except ValueError as error:
        p.error(str(error))
    model = args.model or common.tokenizer_source()
    # The references first: sentence-transformers float32, then each framework's float32 system.
    order = ["st", *(systems.FLOAT32[systems.framework(s)] for s in names), *names]
    names = list(dict.fromkeys(order))

    first, second, gold = (column[: args.pairs] for column in common.sts_pairs("test"))
    texts = first + second
    vectors = {}
    for name in names:
        systems.prepare(name, model)
        t = time.perf_counter()
        encode = systems.load(name, model, threads=args.threads, batch_size=args.batch_size)
        out = encode(texts).astype(np.float64)
        vectors[name] = out / np.linalg.norm(out, axis=1, keepdims=True)
        seconds = time.perf_counter() - t
        print(
            f"{name}: {len(texts)} texts in {seconds:.1f} s (load, compile and encode), "
            f"Spearman {_spearman(vectors[name], gold):.2f}"
        )
        sys.stdout.flush()

    lines = [
        HEADING,
        "",
        f"- machine: {common.machine()}; CPU low-precision features: {' '.join(common.cpu_features()) or 'none'}",
        f"- model: `{os.path.basename(os.path.normpath(model))}`; data: both sentences of the first {len(gold):,} "
        f"STS-B test pairs ({len(texts):,} texts); {_versions()}",
        "- cosine: of each text's vector to the same text's vector from the float32 system of the same framework, "
        "and from sentence-transformers float32; Spearman: cosine of each pair against the gold score, x 100",
        f"- command: `python bench/precision.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        "| system | its float32 | min cosine | mean cosine | min cosine to ST float32 | mean cosine to ST float32 "
        "| STS-B Spearman | difference |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        ref = systems.FLOAT32[systems.framework(name)]
        spearman = _spearman(vectors[name], gold)
        own = "- | - | -" if ref == name else f"{systems.label(ref)} | {_cosines(vectors[name], vectors[ref])}"
        to_st = "- | -" if name == "st" else _cosines(vectors[name], vectors["st"])
        difference = "-" if ref == name else f"{spearman - _spearman(vectors[ref], gold):+.2f}"
        lines.append(f"| {systems.label(name)} | {own} | {to_st} | {spearman:.2f} | {difference} |")
    report = "\n".join([*lines, ""])
    print("\n" + report)
    common.replace_section(args.out, report)
    print(f"wrote its section of {args.out}")


if __name__ == "__main__":
    main()
