"""Fine-tune all-MiniLM-L6-v2 on STS-B train with CoSENT: `gte-jax train` against sentence-transformers' own trainer.

Same recipe on both sides: 1 epoch over the 5,749 training pairs (score/5 as the label), batch 16, AdamW at lr 2e-5
with 10% linear warm-up then linear decay, weight decay 0.01 (not on biases and LayerNorms), gradient clipping at 1,
BERT's dropout on, max_seq_length 256, seeds 0, 1, 2. Each side trains in its own process, one after the other; both
results are scored the same way (sentence-transformers' encode, cosine, Spearman against the STS-B test scores).

Needs `pip install "sentence-transformers[train]"` (datasets, accelerate) for the sentence-transformers side.

    python bench/finetune_sts.py                 # seeds 0 1 2 on each side; prints the markdown section
    python bench/finetune_sts.py --write         # also appends it to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

STSB_DIR = os.environ.get("GTE_JAX_STSB_DIR", os.path.join(REPO, "tests", "data", "stsbenchmark"))


def read_sts(split: str) -> tuple[list[str], list[str], list[float]]:
    s1, s2, scores = [], [], []
    with open(os.path.join(STSB_DIR, f"sts-{split}.csv"), encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            scores.append(float(fields[4]) / 5)
            s1.append(fields[5])
            s2.append(fields[6])
    return s1, s2, scores


def write_jsonl(path: str, split: str, limit: int | None = None) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for a, b, s in list(zip(*read_sts(split), strict=True))[:limit]:
            f.write(json.dumps({"sentence1": a, "sentence2": b, "score": s}) + "\n")


def spearman_st(model_dir: str) -> float:
    """STS-B test Spearman of a model folder, through sentence-transformers (the same scorer for every model)."""
    import numpy as np
    from scipy.stats import spearmanr
    from sentence_transformers import SentenceTransformer

    s1, s2, scores = read_sts("test")
    model = SentenceTransformer(model_dir, device="cpu")
    a = model.encode(s1, batch_size=64, normalize_embeddings=True)
    b = model.encode(s2, batch_size=64, normalize_embeddings=True)
    return float(spearmanr(np.sum(a * b, axis=1), scores).statistic)


def train_st(args: argparse.Namespace) -> None:
    """The sentence-transformers side (runs in its own process): writes the model and its timing."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    s1, s2, scores = (column[: args.limit] for column in read_sts("train"))
    steps = math.ceil(len(s1) / args.batch_size) * args.epochs
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0} if args.paired else None
    model = SentenceTransformer(args.model, device="cpu", config_kwargs=no_dropout)
    training_args = SentenceTransformerTrainingArguments(
        output_dir=os.path.join(args.work, "st-trainer"),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=math.ceil(steps * args.warmup_ratio),
        weight_decay=args.weight_decay,
        seed=args.seed,
        save_strategy="no",
        report_to="none",
        logging_steps=100,
        use_cpu=True,
    )
    dataset = Dataset.from_dict({"sentence1": s1, "sentence2": s2, "score": scores})
    trainer_class = (
        _same_order_trainer(SentenceTransformerTrainer, args.seed) if args.paired else SentenceTransformerTrainer
    )
    trainer = trainer_class(model=model, args=training_args, train_dataset=dataset, loss=CoSENTLoss(model))
    began = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - began
    model.save(os.path.join(args.work, f"st-model-{_tag(args.seed, args.paired)}"))
    limit = model.max_seq_length
    tokens = sum(len(model.tokenizer(t, truncation=True, max_length=limit)["input_ids"]) for t in s1 + s2)
    with open(os.path.join(args.work, f"st-{_tag(args.seed, args.paired)}.json"), "w") as f:
        json.dump({"seed": args.seed, "seconds": seconds, "steps": result.global_step, "tokens": tokens}, f)


def _tag(seed: int, paired: bool) -> str:
    return f"{seed}-paired" if paired else str(seed)


def _same_order_trainer(base: type, seed: int) -> type:
    """The trainer, fed gte-jax's batches of epoch 0 in gte-jax's order (``gte_jax.train.data``), one epoch."""
    from gte_jax.train.data import epoch_batches, epoch_order

    class SameOrder(base):
        def get_batch_sampler(self, dataset, batch_size, drop_last, *args, **kwargs):
            order = epoch_order(len(dataset), seed, 0)
            return [order[a:b].tolist() for a, b in epoch_batches(len(dataset), batch_size)]

    return SameOrder


def main() -> None:
    from gte_jax.checkpoints.bundle import bundled_model_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=bundled_model_dir(), help="all-MiniLM-L6-v2 directory")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)  # the sentence-transformers side's
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="one run per seed and side")
    parser.add_argument(
        "--paired",
        action="store_true",
        help="also one run per side with dropout off and the same batches in the same order (gte-jax's, seed 0): "
        "the two should then end at the same weights up to float rounding",
    )
    parser.add_argument("--limit", type=int, default=None, help="train on the first N pairs only (a quick check)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--side", choices=("st",), help=argparse.SUPPRESS)
    parser.add_argument("--write", action="store_true", help="append the section to bench/RESULTS.md")
    args = parser.parse_args()
    args.work = args.work or tempfile.mkdtemp(prefix="finetune-sts-")
    os.makedirs(args.work, exist_ok=True)
    if args.side == "st":
        train_st(args)
        return

    train_file, test_file = os.path.join(args.work, "train.jsonl"), os.path.join(args.work, "test.jsonl")
    write_jsonl(train_file, "train", args.limit)
    write_jsonl(test_file, "test")
    before = spearman_st(args.model)
    print(f"before: STS-B test Spearman {before:.4f}", flush=True)

    load_before = os.getloadavg()[0]
    rows = {"sentence-transformers": [], "gte-jax": []}
    for seed in args.seeds:
        rows["gte-jax"].append(run_gte_jax(args, seed, train_file))
        rows["sentence-transformers"].append(run_st(args, seed))
    paired = [run_gte_jax(args, 0, train_file, paired=True), run_st(args, 0, paired=True)] if args.paired else []
    load_after = os.getloadavg()[0]

    n = len(read_sts("train")[0][: args.limit])
    lines = [
        "",
        "# Fine-tuning: `gte-jax train` vs sentence-transformers' trainer (STS-B, CoSENT)",
        "",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with other jobs; "
        f"1-min load average {load_before:.1f} before, {load_after:.1f} after (wall times move with it; CPU seconds "
        "less so)",
        f"- model: all-MiniLM-L6-v2; data: STS-B train ({n} pairs, score/5); {args.epochs} epoch, batch "
        f"{args.batch_size}, lr {args.lr:g}, {args.warmup_ratio:.0%} linear warm-up then linear decay, AdamW weight "
        f"decay {args.weight_decay:g}, clip 1.0, dropout on; seeds {', '.join(map(str, args.seeds))} (data order and "
        "dropout: the sides draw them differently, so a seed is a sample on each side, not a shared run)",
        "- score: STS-B test Spearman (1,379 pairs) of each saved model, both via `SentenceTransformer(DIR).encode`",
        f"- command: `python bench/finetune_sts.py --seeds {' '.join(map(str, args.seeds))}"
        f"{' --paired' if args.paired else ''}` (gte-jax side: "
        "`gte-jax train --loss cosent ...`; sentence-transformers side: `SentenceTransformerTrainer` + `CoSENTLoss`)",
        "",
        "| side | seed | STS-B test Spearman | steps | train s | steps/s | tokens/s | process wall s | process CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| all-MiniLM-L6-v2 before | | {before:.4f} | | | | | | |",
    ]
    for side, runs in [*rows.items(), ("gte-jax", paired[:1]), ("sentence-transformers", paired[1:])]:
        for r in runs:
            lines.append(
                f"| {side} | {r['seed']} | {r['spearman']:.4f} | {r['steps']} | {r['seconds']:.1f} | "
                f"{r['steps'] / r['seconds']:.2f} | {r['tokens_s']:,.0f} | {r['wall']:.1f} | {r['cpu']:.0f} |"
            )
    if paired:
        lines += [
            "",
            f"Paired (seed `0-paired`: dropout off, the same batches in the same order on both sides): Spearman "
            f"{paired[0]['spearman']:.4f} (gte-jax) and {paired[1]['spearman']:.4f} (sentence-transformers), "
            f"difference {paired[0]['spearman'] - paired[1]['spearman']:+.4f}.",
        ]
    if not args.seeds:
        rows = {"gte-jax": paired[:1], "sentence-transformers": paired[1:]}
    mean = {side: sum(r["spearman"] for r in runs) / len(runs) for side, runs in rows.items()}
    rate = {side: sum(r["steps"] for r in runs) / sum(r["seconds"] for r in runs) for side, runs in rows.items()}
    cpu = {side: sum(r["cpu"] for r in runs) for side, runs in rows.items()}
    lines += [
        "",
        f"Mean Spearman: gte-jax {mean['gte-jax']:.4f}, sentence-transformers {mean['sentence-transformers']:.4f} "
        f"(difference {mean['gte-jax'] - mean['sentence-transformers']:+.4f}). Training speed ratio, gte-jax / "
        f"sentence-transformers: {rate['gte-jax'] / rate['sentence-transformers']:.2f} in steps/s of wall time, "
        f"{cpu['sentence-transformers'] / cpu['gte-jax']:.2f} in process CPU seconds. gte-jax's train time includes "
        "compiling one program per padded length bucket (about 5 here); sentence-transformers pads each batch to its "
        "longest text.",
        "",
    ]
    section = "\n".join(lines)
    print(section)
    if args.write:
        with open(os.path.join(REPO, "bench", "RESULTS.md"), "a", encoding="utf-8") as f:
            f.write(section)


def _recipe(args: argparse.Namespace, seed: int) -> list[str]:
    return [
        *("--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr)),
        *("--warmup-ratio", str(args.warmup_ratio), "--weight-decay", str(args.weight_decay), "--seed", str(seed)),
    ]


def _run_timed(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float, float]:
    """Runs ``cmd``, capturing its output: the process, its wall seconds and its CPU seconds."""
    began, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return proc, time.perf_counter() - began, _children_cpu() - cpu


def run_gte_jax(args: argparse.Namespace, seed: int, train_file: str, paired: bool = False) -> dict:
    out = os.path.join(args.work, f"gte-jax-model-{_tag(seed, paired)}")
    cmd = ["gte-jax", "train", "--model", args.model, "--data", train_file, "--loss", "cosent", "--output", out]
    cmd += [*_recipe(args, seed), "--quiet", "--save-steps", "100000", "--checkpoint-dir", out + "-checkpoints"]
    cmd += ["--no-dropout"] if paired else []
    proc, wall, cpu = _run_timed(cmd)
    if proc.returncode:
        sys.exit(f"gte-jax train failed:\n{proc.stderr[-3000:]}")
    summary = re.search(r"trained (\d+) steps in ([\d.]+) s \(([\d.]+) steps/s, ([\d,]+) tokens/s\)", proc.stderr)
    assert summary, proc.stderr[-2000:]
    run = {"seed": _tag(seed, paired), "steps": int(summary[1]), "seconds": float(summary[2]), "wall": wall, "cpu": cpu}
    run["tokens_s"] = float(summary[4].replace(",", ""))
    run["spearman"] = spearman_st(out)
    print(f"gte-jax seed {seed}: {run['steps']} steps in {run['seconds']:.1f} s, Spearman {run['spearman']:.4f}")
    return run


def run_st(args: argparse.Namespace, seed: int, paired: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--side", "st", "--work", args.work, "--model", args.model, *_recipe(args, seed)]
    cmd += ["--limit", str(args.limit)] if args.limit else []
    cmd += ["--paired"] if paired else []
    proc, wall, cpu = _run_timed(cmd)
    if proc.returncode:
        sys.exit(f"the sentence-transformers side failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(args.work, f"st-{_tag(seed, paired)}.json")) as f:
        run = {**json.load(f), "seed": _tag(seed, paired), "wall": wall, "cpu": cpu}
    run["tokens_s"] = run["tokens"] * args.epochs / run["seconds"]
    run["spearman"] = spearman_st(os.path.join(args.work, f"st-model-{_tag(seed, paired)}"))
    print(f"sentence-transformers seed {seed}: {run['steps']} steps in {run['seconds']:.1f} s, ", end="")
    print(f"Spearman {run['spearman']:.4f}", flush=True)
    return run


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes so far (a fairer clock on a shared machine)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
