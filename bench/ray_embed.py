"""Rows/s through Ray Data (``gte_jax.ray.Embedder``, 1 and 2 actors) against ``gte-jax embed``, same input.

Each run is a fresh process, as a user would start it, reading the same Parquet file and writing Parquet:

* ``gte-jax embed corpus.parquet --output DIR``;
* ``ray.data.read_parquet(corpus).map_batches(Embedder, batch_format="pyarrow",
  compute=ActorPoolStrategy(size=k), batch_size=B).write_parquet(DIR)`` on a local Ray cluster
  (``ray.init(num_cpus=k + 1)``: a CPU per actor, one for reading and writing).

Every run shares one JAX persistent compilation cache, filled first by a full warm-up, so no run
compiles (the Embedder warms every program in its constructor: from the cache, that is a load).
Reported per run: end to end (process start to the last file written: imports, Ray start, actors,
model load, warm-up, I/O) and steady state (gte-jax embed: its manifest's rows over seconds after
model load; Ray: rows over the span from the first batch's start to the last batch's end, across actors).

    python bench/ray_embed.py                         # 4,000 STS-B sentences, all-MiniLM-L6-v2: about 2 minutes
    python bench/ray_embed.py --rows 20000 --model DIR --batch-size 1024 --append bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def _ray_child(args: argparse.Namespace) -> None:
    """One Ray Data run with ``args.actors`` actors, in this fresh process: prints one JSON line."""
    import ray

    from gte_jax.ray import Embedder

    class TimedEmbedder(Embedder):
        """Logs each call's span, to measure the steady state across actors."""

        def __call__(self, batch):
            start = time.time()
            out = super().__call__(batch)
            with open(args.log, "a") as f:
                f.write(f"{start} {time.time()} {out.num_rows}\n")
            return out

    ray.init(num_cpus=args.actors + 1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.wait_for_min_actors_s = 600  # batches go out once every actor is up: the steady span is the pool's
    ds = ray.data.read_parquet(args.input, override_num_blocks=4 * args.actors)
    ds = ds.map_batches(
        TimedEmbedder,
        fn_constructor_kwargs={"model": args.model},
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=args.actors),
        batch_size=args.batch_size,
    )
    ds.write_parquet(args.output)
    end = time.time()
    ray.shutdown()
    spans = [tuple(map(float, line.split())) for line in open(args.log)]
    rows = int(sum(s[2] for s in spans))
    print(json.dumps({"rows": rows, "first": min(s[0] for s in spans), "last": max(s[1] for s in spans), "end": end}))


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.time()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed:\n{done.stderr[-4000:]}")
    return time.time() - t0, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=4000, help="STS-B sentences to embed (train split)")
    parser.add_argument("--model", default=None, help="model directory (default: the all-MiniLM-L6-v2 fixture)")
    parser.add_argument("--batch-size", type=int, default=512, help="Ray Data rows per Embedder call")
    parser.add_argument("--actors", default="1,2", help="actor counts to run")
    parser.add_argument("--append", default=None, help="append the markdown section to this file")
    parser.add_argument("--ray-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    parser.add_argument("--actors-n", dest="actor_count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ray_child:
        args.actors = args.actor_count
        return _ray_child(args)

    import pyarrow as pa
    import pyarrow.parquet as pq

    model = args.model or common.tokenizer_source()
    texts = (common.sts_sentences("train") * (1 + args.rows // 11498))[: args.rows]
    work = tempfile.mkdtemp(prefix="gte-jax-ray-bench-")
    corpus = os.path.join(work, "corpus.parquet")
    pq.write_table(pa.table({"id": range(len(texts)), "text": texts}), corpus, row_group_size=1000)
    cache = os.path.join(common.CACHE_DIR, "jax-compilation-cache")
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    load = [os.getloadavg()[0]]

    prime = f"""
from gte_jax import GTEEncoder
from gte_jax.engine import sharding
print(GTEEncoder.from_pretrained({model!r}, mesh=sharding.local_mesh()).warmup())"""
    seconds, out = _run([sys.executable, "-c", prime], env)
    print(f"warm-up into the compilation cache {cache}: {out.strip()} programs, {seconds:.1f} s", file=sys.stderr)

    results = []
    out_dir = os.path.join(work, "embed")
    cli = "from gte_jax.cli import main; raise SystemExit(main())"
    wall, _ = _run([sys.executable, "-c", cli, "embed", corpus, "--model", model, "--output", out_dir, "--quiet"], env)
    manifest = json.load(open(os.path.join(out_dir, "_manifest.json")))
    this_run = manifest["this_run"]
    # Its progress (and this_run's clock) starts once the model is loaded.
    seconds = this_run["seconds"]
    results.append(("`gte-jax embed` (1 process)", this_run["rows"], wall, wall - seconds, seconds))
    load.append(os.getloadavg()[0])
    print(results[-1], file=sys.stderr)

    for k in map(int, args.actors.split(",")):
        log = os.path.join(work, f"ray-{k}.log")
        cmd = [sys.executable, os.path.abspath(__file__), "--ray-child", "--actors-n", str(k), "--input", corpus]
        cmd += ["--output", os.path.join(work, f"ray-{k}"), "--log", log, "--model", model]
        cmd += ["--batch-size", str(args.batch_size)]
        launched = time.time()
        _, out = _run(cmd, env)
        r = json.loads(out.strip().splitlines()[-1])
        wall, startup, steady = r["end"] - launched, r["first"] - launched, r["last"] - r["first"]
        written = pq.read_table(os.path.join(work, f"ray-{k}")).num_rows
        assert written == len(texts) == r["rows"], (written, r["rows"])
        results.append((f"Ray Data, {k} actor{'s' * (k > 1)}", r["rows"], wall, startup, steady))
        load.append(os.getloadavg()[0])
        print(results[-1], file=sys.stderr)

    import ray

    lines = [
        "",
        "# Ray Data (`gte_jax.ray.Embedder`) against `gte-jax embed`",
        "",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; 1-min load average "
        f"during the runs {min(load):.1f}-{max(load):.1f}",
        f"- model: `{os.path.basename(model.rstrip('/'))}` float32; {len(texts)} STS-B train sentences in one "
        f"Parquet file; Ray {ray.__version__}, Ray Data batch_size {args.batch_size}, batch_format pyarrow, "
        "a compilation cache filled before the runs (no run compiles)",
        "- start-up: process start to the first batch (Ray: cluster, actors, model load, warm-up from the cache; "
        "gte-jax embed: model load); steady: the embedding after it; end to end: process start to the last file "
        "written (see `bench/ray_embed.py`)",
        f"- command: `python bench/ray_embed.py --rows {args.rows} --batch-size {args.batch_size}`",
        "",
        "| run | rows | start-up s | steady s | steady rows/s | end-to-end s | end-to-end rows/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows, wall, startup, steady in results:
        lines.append(
            f"| {name} | {rows} | {startup:.1f} | {steady:.1f} | {rows / steady:.0f} | {wall:.1f} | {rows / wall:.0f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
