"""gte_jax against sentence-transformers and ONNX Runtime, float32 and low precision, same weights and threads.

Each system (``bench/systems.py``) runs as a user would, in a fresh subprocess, the
systems alternating within each round, on STS-B sentences (short) and documents built
from them, of 300-512 tokens (long) or, with ``--lengths``, of 0.59-1x each length:

* ``st``: ``SentenceTransformer(dir, device="cpu").encode(texts, batch_size=32)``;
* ``st-bf16``: the same loaded with ``model_kwargs={"dtype": torch.bfloat16}``;
* ``ort``, ``ort-int8``: ONNX Runtime on the checkpoint exported to ONNX, float32 and
  dynamically quantised to int8 (exported once, cached);
* ``jax``: ``GTEEncoder.from_pretrained(dir, dtype=...).encode(texts)`` for each ``--dtype``.

Each child reports cold start (interpreter start + import + load + encoding one
sentence), per workload the first pass (includes XLA compiles / warm-up) and the best
of ``--passes`` further passes (steady state), and peak RSS (``VmHWM``).

    python bench/compare.py                          # st and jax float32, random-init gte-small
    python bench/compare.py --systems st,st-bf16,ort,ort-int8,jax --dtype float32,bfloat16,int8
    python bench/compare.py --model DIR --short 4000 --long 400 --rounds 3 --passes 2
    python bench/compare.py --shape gte-small,gte-base --jax-batch-size 32
    python bench/compare.py --shape gte-base-en-v1.5 --systems st,st-bf16,jax --dtype float32,bfloat16 \
        --short 0 --lengths 512,2048,8192 --long 16,4,1 --rounds 1

Writes its section of bench/RESULTS.md (``--out``), leaving the other sections; a run with ``--lengths`` other
than 512 has a section of its own, named by its models and lengths.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import systems  # noqa: E402

HEADING = "# gte_jax vs sentence-transformers"
HEAD = 16  # vectors per workload a child returns, to check systems against each other


def _child(args) -> None:
    """One system, in this fresh process: prints one JSON line."""
    if args.threads:
        os.sched_setaffinity(0, range(args.threads))
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(args.texts) as f:
        texts = json.load(f)
    workloads = texts["workloads"]
    systems.import_modules(args.child)
    t_import = time.perf_counter()
    knobs = {"batch_size": args.jax_batch_size, "max_batch_tokens": args.jax_max_batch_tokens}
    knobs["attention_impl"] = args.attention_impl
    encode = systems.load(
        args.child,
        args.model,
        threads=args.threads,
        batch_size=args.batch_size,
        jax_options={k: v for k, v in knobs.items() if v},
    )
    t_load = time.perf_counter()
    encode([texts["warmup"]])
    result = {
        "cold_s": time.time() - args.spawn_time,
        "import_s": t_import - t0,
        "load_s": t_load - t_import,
    }
    for name, batch in workloads.items():
        t = time.perf_counter()
        vectors = encode(batch)
        first = time.perf_counter() - t
        steady = []
        for _ in range(args.passes):
            t = time.perf_counter()
            encode(batch)
            steady.append(time.perf_counter() - t)
        result[name] = {"first_s": first, "steady_s": min(steady), "head": vectors[:HEAD].tolist()}
    result["maxrss_mb"] = _peak_rss_mb()
    # Other processes on the machine skew every system (torch's OpenMP threads most): record the load.
    result["load"] = [load_before, os.getloadavg()[0]]
    print(json.dumps(result))


def _peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM, as ``ru_maxrss`` also counts what the parent had resident when it forked."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _describe(workload: str, n: int) -> str:
    return f"{n:,} STS-B sentences" if workload == "short" else f"{n:,} docs of {workload}"


def _workloads(sentences: list[str], model: str, short: int, lengths: list[int], counts: list[int]) -> dict:
    """Workload name -> texts: ``short`` STS-B sentences, then documents of 300-512 tokens scaled to each length."""
    texts = {"short": sentences[:short]} if short else {}
    for length, n in zip(lengths, counts, strict=True):
        lo = length * 300 // 512
        texts[f"{lo}-{length} tokens"] = common.long_documents(sentences, model, n, lo=lo, hi=length)
    return texts


def _tables(models: dict, texts: dict, names: list[str], base: str, runs: dict) -> list[str]:
    """Throughput relative to system ``base``, then start-up, first pass and memory."""
    ref = "st" if "st" in names else base
    columns = [(m, w, f"{m}, {_describe(w, len(texts[m][w]))}") for m in models for w in texts[m]]
    best = {(m, s, w): min(r[w]["steady_s"] for r in runs[m, s]) for m in models for s in names for w in texts[m]}
    lines = [
        "| system | " + " | ".join(c[2] for c in columns) + f" | max abs diff to {systems.label(ref)} |",
        "|---|" + "---:|" * (len(columns) + 1),
    ]
    for s in names:
        cells = [
            f"{best[m, base, w] / best[m, s, w]:.2f} ({_rate(len(texts[m][w]) / best[m, s, w])}/s)"
            for m, w, _ in columns
        ]
        diff = max(
            float(np.max(np.abs(np.asarray(runs[m, s][0][w]["head"]) - np.asarray(runs[m, ref][0][w]["head"]))))
            for m, w, _ in columns
        )
        lines.append(f"| {systems.label(s)} | " + " | ".join(cells) + f" | {diff:.1e} |")
    workloads = list(dict.fromkeys(w for m in models for w in texts[m]))
    first = " | ".join(f"first pass s, {w}" for w in workloads)
    lines += [
        "",
        f"| system | cold start s (spawn to first embedding) | import s | load s | {first} | peak RSS MB |",
        "|---|" + "---:|" * (len(workloads) + 4),
    ]
    for m in models:
        for s in names:
            r = runs[m, s]
            firsts = " | ".join(f"{min(x[w]['first_s'] for x in r):.2f}" if w in texts[m] else "" for w in workloads)
            lines.append(
                f"| {systems.label(s)}{f' ({m})' if len(models) > 1 else ''} | {min(x['cold_s'] for x in r):.2f} "
                f"| {min(x['import_s'] for x in r):.2f} | {min(x['load_s'] for x in r):.2f} | {firsts} "
                f"| {max(x['maxrss_mb'] for x in r):.0f} |"
            )
    return lines


def _lengths(lengths: str, counts: str) -> tuple[list[int], list[int]]:
    """``--lengths`` and ``--long`` as lists of positive integers of the same size."""
    try:
        sizes, ns = [int(x) for x in lengths.split(",")], [int(x) for x in counts.split(",")]
    except ValueError:
        raise ValueError(f"--lengths {lengths!r} and --long {counts!r} take comma lists of integers") from None
    if len(ns) == 1:
        ns *= len(sizes)
    if len(ns) != len(sizes):
        raise ValueError(f"--long {counts!r} gives {len(ns)} counts for {len(sizes)} --lengths: give one or one each")
    if min(sizes) < 32 or min(ns) < 1:
        raise ValueError("each of --lengths is 32 tokens or more, each of --long 1 document or more")
    return sizes, ns


def _unfit(model: str, names: list[str], lengths: list[int]) -> str:
    """Why ``model`` cannot run this benchmark as asked, or an empty string."""
    limit = systems.max_length(model)
    if max(lengths) > limit:
        return f"--lengths {max(lengths)} is over its max_seq_length {limit}: documents would be truncated."
    ort = [s for s in names if systems.framework(s) == "ort"]
    if ort and systems.pooling(model) != "mean":
        return f"{', '.join(ort)} mean-pool, it pools by {systems.pooling(model)}: leave them out of --systems."
    return ""


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="comma list of checkpoint folders (default: random-init models of --shape)")
    shapes = [*common.SHAPES, *common.ROTARY_SHAPES]
    p.add_argument("--shape", default="gte-small", help=f"comma list of {', '.join(shapes)} (random init)")
    systems.add_arguments(p, systems="st,jax", dtypes="float32")
    p.add_argument("--short", type=int, default=1000, help="STS-B sentences to embed (0: none)")
    p.add_argument("--lengths", default="512", help="comma list of document lengths in tokens (512: 300-512 tokens)")
    p.add_argument("--long", default="50", help="documents to embed, one count for every length or one per length")
    p.add_argument("--rounds", type=int, default=2, help="fresh processes per system, alternating systems")
    p.add_argument("--passes", type=int, default=1, help="timed passes per workload after the first")
    p.add_argument("--threads", type=int, default=0, help="pin every system to this many cores (default: all)")
    p.add_argument("--batch-size", type=int, default=32, help="sentence-transformers' and ONNX Runtime's batch size")
    p.add_argument("--jax-batch-size", type=int, default=0, help="GTEEncoder batch_size (default: the encoder's)")
    p.add_argument("--jax-max-batch-tokens", type=int, default=0, help="GTEEncoder max_batch_tokens")
    p.add_argument("--attention-impl", default="", help="gte_jax attention kernel (default: the backend's)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--texts", help=argparse.SUPPRESS)
    p.add_argument("--spawn-time", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args)
    try:
        names = systems.expand(args.systems, args.dtype)
    except ValueError as error:
        p.error(str(error))
    unknown = set(args.shape.split(",")) - set(shapes)
    if unknown:
        p.error(f"unknown --shape {', '.join(sorted(unknown))}: choose from {', '.join(shapes)}")
    try:
        lengths, counts = _lengths(args.lengths, args.long)
    except ValueError as error:
        p.error(str(error))
    if args.model:
        models = {os.path.basename(os.path.normpath(d)): d for d in args.model.split(",")}
    else:
        models = {shape: common.random_checkpoint(shape) for shape in args.shape.split(",")}
    for m, model in models.items():
        problem = _unfit(model, names, lengths)
        if problem:
            p.error(f"{m}: {problem}")
    base = "jax-float32" if "jax-float32" in names else names[0]

    sentences = common.sts_sentences()
    texts, tokens = {}, {}
    for m, model in models.items():
        print(f"{m}: {model}")
        for s in names:
            systems.prepare(s, model)
        texts[m] = _workloads(sentences, model, args.short, lengths, counts)
        limit = systems.max_length(model)
        tokens[m] = {w: common.token_counts(model, t, max_length=limit) for w, t in texts[m].items()}
        for w in texts[m]:
            t = tokens[m][w]
            print(f"  {w}: {len(t)} texts, {sum(t)} tokens, {min(t)}-{max(t)} per text")
    features = " ".join(common.cpu_features()) or "none"
    print(f"CPU low-precision features: {features}; ONNX Runtime int8 kernel: {systems.ort_int8_kernel()}")

    runs = {(m, s): [] for m in models for s in names}
    forwarded = ["--threads", str(args.threads), "--passes", str(args.passes), "--batch-size", str(args.batch_size)]
    forwarded += ["--jax-batch-size", str(args.jax_batch_size)]
    forwarded += ["--jax-max-batch-tokens", str(args.jax_max_batch_tokens)]
    if args.attention_impl:
        forwarded += ["--attention-impl", args.attention_impl]
    with tempfile.TemporaryDirectory() as tmp:
        paths = {m: os.path.join(tmp, f"{i}.json") for i, m in enumerate(models)}
        for m, path in paths.items():
            with open(path, "w") as f:
                json.dump({"warmup": sentences[0], "workloads": texts[m]}, f)
        for i in range(args.rounds):
            for m, model in models.items():
                for s in names:
                    child = ["--child", s, "--model", model, "--texts", paths[m], "--spawn-time", str(time.time())]
                    r = common.run_child(__file__, [*child, *forwarded])
                    runs[m, s].append(r)
                    steady = ", ".join(
                        f"{w} {_rate(len(texts[m][w]) / r[w]['steady_s'])} texts/s (first {r[w]['first_s']:.1f} s)"
                        for w in texts[m]
                    )
                    load = "->".join(f"{x:.1f}" for x in r["load"])
                    print(
                        f"round {i + 1} {m} {s}: cold {r['cold_s']:.1f} s, {steady}, RSS {r['maxrss_mb']:.0f} MB, "
                        f"load {load}"
                    )
                    sys.stdout.flush()

    knob_names = ("jax_batch_size", "jax_max_batch_tokens", "attention_impl")
    knobs = {k: getattr(args, k) for k in knob_names if getattr(args, k)}
    loads = [load for results in runs.values() for r in results for load in r["load"]]
    described = ", ".join(f"`{model if args.model else m + ' (random init)'}`" for m, model in models.items())
    workloads = "; ".join(
        f"{m} {w}: {len(tokens[m][w])} texts, {sum(tokens[m][w])} real tokens" for m in models for w in texts[m]
    )
    # Longer documents get their own section, named by model and length, so they leave the 512-token results be.
    heading = (
        HEADING if lengths == [512] else f"{HEADING}: {', '.join(models)} at {', '.join(map(str, lengths))} tokens"
    )
    lines = [
        heading,
        "",
        f"- machine: {common.machine()}; CPU low-precision features: {features}; threads: {args.threads or 'all'}; "
        f"1-min load average during the runs {min(loads):.1f}-{max(loads):.1f} (above the thread count, timings are "
        "unreliable, torch's most)",
        f"- model: {described}; sentence-transformers and ONNX Runtime batch_size {args.batch_size}, gte_jax knobs "
        f"{knobs or 'defaults'}; workloads (real tokens after truncation): {workloads}",
        f"- {args.rounds} fresh processes per system, alternating; best of each system; steady = best of "
        f"{args.passes} pass(es) after the first; a cell is the speed relative to {systems.label(base)} (texts/s in "
        "brackets)",
        f"- command: `python bench/compare.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        *_tables(models, texts, names, base, runs),
        "",
    ]
    report = "\n".join(lines)
    print("\n" + report)
    common.replace_section(args.out, report)
    print(f"wrote its section of {args.out}")


if __name__ == "__main__":
    main()
