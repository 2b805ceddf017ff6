"""gte_jax against sentence-transformers on the same weights, same machine, same threads.

Each side runs as a user would (``GTEEncoder.from_pretrained(dir).encode(texts)``;
``SentenceTransformer(dir, device="cpu").encode(texts, batch_size=32)``) in a
fresh subprocess, alternating (ST, JAX, ST, JAX, ...), on STS-B sentences
(short) and 300-512-token documents built from them (long). Each child reports:

* cold start: interpreter start + import + load + encoding one sentence;
* per workload, the first pass (includes XLA compiles / warm-up) and the best
  of ``--passes`` further passes (steady state), as texts/s and real tokens/s;
* peak RSS (``ru_maxrss``).

    python bench/compare.py                          # random-init gte-small, a few minutes on 2 idle cores
    python bench/compare.py --model DIR --short 4000 --long 400 --rounds 3 --passes 2
    python bench/compare.py --jax-batch-size 32 --jax-max-batch-tokens 8192

Writes a markdown table to bench/RESULTS.md (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

WORKLOADS = ("short", "long")


def _child(args) -> None:
    """One side, in this fresh process: prints one JSON line."""
    if args.threads:
        os.sched_setaffinity(0, range(args.threads))
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(args.texts) as f:
        texts = json.load(f)
    if args.child == "st":
        import torch
        from sentence_transformers import SentenceTransformer

        if args.threads:
            torch.set_num_threads(args.threads)
        t_import = time.perf_counter()
        model = SentenceTransformer(args.model, device="cpu")

        def encode(batch):
            return model.encode(batch, batch_size=args.st_batch_size, normalize_embeddings=True)
    else:
        from gte_jax import GTEEncoder

        t_import = time.perf_counter()
        kwargs = {"dtype": args.dtype}
        if args.jax_batch_size:
            kwargs["batch_size"] = args.jax_batch_size
        if args.jax_max_batch_tokens:
            kwargs["max_batch_tokens"] = args.jax_max_batch_tokens
        if args.attention_impl:
            kwargs["attention_impl"] = args.attention_impl
        model = GTEEncoder.from_pretrained(args.model, **kwargs)
        encode = model.encode
    t_load = time.perf_counter()
    encode([texts["short"][0]])
    result = {
        "cold_s": time.time() - args.spawn_time,
        "import_s": t_import - t0,
        "load_s": t_load - t_import,
    }
    for name in WORKLOADS:
        batch = texts[name]
        t = time.perf_counter()
        vectors = encode(batch)
        first = time.perf_counter() - t
        steady = []
        for _ in range(args.passes):
            t = time.perf_counter()
            encode(batch)
            steady.append(time.perf_counter() - t)
        result[name] = {"first_s": first, "steady_s": min(steady), "head": vectors[:16].tolist()}
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # Other processes on the machine skew both sides (torch's OpenMP threads most): record the load.
    result["load"] = [load_before, os.getloadavg()[0]]
    print(json.dumps(result))


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores available"


def _table(texts, tokens, runs) -> list[str]:
    import numpy as np

    lines = [
        "| workload | texts | real tokens | ST texts/s | JAX texts/s | JAX / ST | ST tokens/s | JAX tokens/s "
        "| ST first pass s | JAX first pass s | max abs diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in WORKLOADS:
        best = {side: min(r[name]["steady_s"] for r in runs[side]) for side in runs}
        first = {side: min(r[name]["first_s"] for r in runs[side]) for side in runs}
        n, tok = len(texts[name]), sum(tokens[name])
        diff = float(np.max(np.abs(np.asarray(runs["st"][0][name]["head"]) - np.asarray(runs["jax"][0][name]["head"]))))
        st, jx = best["st"], best["jax"]
        lines.append(
            f"| {name} | {n} | {tok} | {n / st:.1f} | {n / jx:.1f} | {st / jx:.2f} | {tok / st:.0f} | {tok / jx:.0f} "
            f"| {first['st']:.2f} | {first['jax']:.2f} | {diff:.1e} |"
        )
    lines += [
        "",
        "| side | cold start s (spawn to first embedding) | import s | load s | peak RSS MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for side, label in (("st", "sentence-transformers"), ("jax", "gte_jax")):
        r = runs[side]
        lines.append(
            f"| {label} | {min(x['cold_s'] for x in r):.2f} | {min(x['import_s'] for x in r):.2f} "
            f"| {min(x['load_s'] for x in r):.2f} | {max(x['maxrss_mb'] for x in r):.0f} |"
        )
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="checkpoint folder (default: a random-init gte-small, made once and cached)")
    p.add_argument("--shape", default="gte-small", choices=sorted(common.SHAPES), help="shape of the random model")
    p.add_argument("--short", type=int, default=1000, help="STS-B sentences to embed")
    p.add_argument("--long", type=int, default=50, help="300-512-token documents to embed")
    p.add_argument("--rounds", type=int, default=2, help="fresh processes per side, alternating ST, JAX, ...")
    p.add_argument("--passes", type=int, default=1, help="timed passes per workload after the first")
    p.add_argument("--threads", type=int, default=0, help="pin both sides to this many cores (default: all)")
    p.add_argument("--st-batch-size", type=int, default=32)
    p.add_argument("--jax-batch-size", type=int, default=0, help="GTEEncoder batch_size (default: the encoder's)")
    p.add_argument("--jax-max-batch-tokens", type=int, default=0, help="GTEEncoder max_batch_tokens")
    p.add_argument("--attention-impl", default="", help="gte_jax attention kernel (default: the backend's)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="gte_jax dtype")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"))
    p.add_argument("--child", choices=("st", "jax"), help=argparse.SUPPRESS)
    p.add_argument("--texts", help=argparse.SUPPRESS)
    p.add_argument("--spawn-time", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args)

    model = args.model or common.random_checkpoint(args.shape)
    sentences = common.sts_sentences()
    texts = {"short": sentences[: args.short], "long": common.long_documents(sentences, model, args.long)}
    tokens = {name: common.token_counts(model, t) for name, t in texts.items()}
    print(f"model {model}")
    for name in WORKLOADS:
        t = tokens[name]
        print(f"{name}: {len(t)} texts, {sum(t)} tokens, {min(t)}-{max(t)} per text")

    runs = {"st": [], "jax": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "texts.json")
        with open(path, "w") as f:
            json.dump(texts, f)
        forwarded = ["--model", model, "--texts", path, "--threads", str(args.threads), "--passes", str(args.passes)]
        forwarded += ["--st-batch-size", str(args.st_batch_size), "--dtype", args.dtype]
        forwarded += ["--jax-batch-size", str(args.jax_batch_size)]
        forwarded += ["--jax-max-batch-tokens", str(args.jax_max_batch_tokens)]
        if args.attention_impl:
            forwarded += ["--attention-impl", args.attention_impl]
        for i in range(args.rounds):
            for side in ("st", "jax"):
                r = common.run_child(__file__, ["--child", side, "--spawn-time", str(time.time()), *forwarded])
                runs[side].append(r)
                steady = ", ".join(
                    f"{name} {len(texts[name]) / r[name]['steady_s']:.1f} texts/s (first {r[name]['first_s']:.1f} s)"
                    for name in WORKLOADS
                )
                load = "->".join(f"{x:.1f}" for x in r["load"])
                rss = f"RSS {r['maxrss_mb']:.0f} MB"
                print(f"round {i + 1} {side:3s}: cold {r['cold_s']:.1f} s, {steady}, {rss}, load {load}")
                sys.stdout.flush()

    knob_names = ("jax_batch_size", "jax_max_batch_tokens", "attention_impl")
    knobs = {k: getattr(args, k) for k in knob_names if getattr(args, k)}
    loads = [x for side in runs for r in runs[side] for x in r["load"]]
    lines = [
        "# gte_jax vs sentence-transformers",
        "",
        f"- machine: {_machine()}; threads: {args.threads or 'all'}; 1-min load average during the runs "
        f"{min(loads):.1f}-{max(loads):.1f} (above the thread count, timings are unreliable, torch's most)",
        f"- model: `{model if args.model else args.shape + ' (random init)'}`, gte_jax dtype {args.dtype}, "
        f"ST batch_size {args.st_batch_size}, gte_jax knobs {knobs or 'defaults'}",
        f"- {args.rounds} fresh processes per side, alternating; best of each side; steady = best of "
        f"{args.passes} pass(es) after the first",
        f"- command: `python bench/compare.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        *_table(texts, tokens, runs),
        "",
    ]
    report = "\n".join(lines)
    print("\n" + report)
    with open(args.out, "w") as f:
        f.write(report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
