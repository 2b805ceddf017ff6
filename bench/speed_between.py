"""Encode speed of two checkouts of gte-jax side by side: fresh processes alternating between them.

    python bench/speed_between.py OLD_CHECKOUT NEW_CHECKOUT [--rounds 2] [--texts 2000]

Each process embeds the first ``--texts`` STS-B test sentences with the bundled all-MiniLM-L6-v2 (float32, CPU
defaults), warmed on the texts first, and reports the best of 3 passes in texts/s. For a change to the engine
(``bench/RESULTS.md``, "Issue 18 reshaping"): a checkout is any directory holding a ``gte_jax`` package.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CODE = r"""
import json, sys, time
from gte_jax import GTEEncoder
texts, model = json.loads(sys.argv[1]), sys.argv[2]
enc = GTEEncoder.from_pretrained(model)
enc.warmup(texts)
best = 1e9
for _ in range(3):
    t = time.perf_counter(); enc.encode(texts); best = min(best, time.perf_counter() - t)
print(json.dumps({"texts_per_s": len(texts) / best}))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--texts", type=int, default=2000)
    args = p.parse_args()
    sys.path.insert(0, os.path.dirname(HERE))
    from conftest import minilm_path, read_sts

    a, b, _ = read_sts("test")
    texts = json.dumps((a + b)[: args.texts])
    for _ in range(args.rounds):
        for name, tree in (("old", args.old), ("new", args.new)):
            env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
            out = subprocess.run(
                [sys.executable, "-c", CODE, texts, minilm_path()], env=env, cwd=tree, capture_output=True, text=True
            )
            if out.returncode:
                print(f"{name} ({tree}) failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                return 1
            rate = json.loads(out.stdout.strip().splitlines()[-1])["texts_per_s"]
            print(f"{name}: {rate:.1f} texts/s (load {os.getloadavg()[0]:.1f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
