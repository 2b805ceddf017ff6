"""``gte-jax train``: contrastive fine-tuning into a sentence-transformers folder, resumable.

Exit codes: 0 done; 2 the data, the options, the model or the checkpoint folder need fixing
(the message names the file, line or setting).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gte_jax.argtypes import positive_int
from gte_jax.errors import UserError, missing_extra

# Only argparse at import time: `gte-jax --help` builds every subcommand's parser.

EPILOG = """\
data: .jsonl, .csv/.tsv (with a header) or .parquet; text columns in order, plus score/label for cosent:
  {"sentence1": "A man is playing a guitar.", "sentence2": "A man plays guitar.", "score": 0.95}
  {"anchor": "what is a tensor?", "positive": "A tensor is ...", "negative": "Tension is ..."}

examples:
  gte-jax train --model thenlper/gte-small --data sts.jsonl --loss cosent --output gte-small-sts
  gte-jax train --model thenlper/gte-base --data pairs.parquet --loss gte --batch-size 1024 \\
      --mini-batch-size 64 --output gte-base-ft
  # after a crash or preemption, the same command with --resume continues from the last checkpoint:
  gte-jax train --model thenlper/gte-small --data sts.jsonl --loss cosent --output gte-small-sts --resume
"""

# Settings that change the weights a run ends with: a resume must repeat them.
_RUN_SETTINGS = (
    "model",
    "data",
    "loss",
    "epochs",
    "batch_size",
    "lr",
    "warmup_ratio",
    "weight_decay",
    "max_grad_norm",
    "max_length",
    "seed",
    "mini_batch_size",
    "remat",
    "dtype",
    "scale",
    "no_dropout",
)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {value}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune a model with a contrastive loss (CoSENT, InfoNCE, GTE's) into a sentence-transformers folder",
        description="Fine-tunes a BERT embedding model on pairs or triplets and writes a sentence-transformers "
        "folder (Hugging Face BERT weights) that SentenceTransformer, transformers and gte_jax load. The batch is "
        "split over every device; in-batch negatives come from the whole batch. Checkpoints let --resume "
        "continue after a crash and end with the weights of an uninterrupted run.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="hub id or local model directory to start from")
    p.add_argument("--data", required=True, help="training file: .jsonl, .csv, .tsv or .parquet")
    p.add_argument(
        "--loss",
        required=True,
        choices=("cosent", "infonce", "gte"),
        help="cosent: scored pairs; infonce: anchor, positive[, negatives] with in-batch negatives; "
        "gte: InfoNCE over GTE's four directions",
    )
    p.add_argument("--output", "-o", required=True, help="folder for the trained sentence-transformers model")
    p.add_argument("--epochs", type=positive_int, default=1, help="passes over the data (default: 1)")
    p.add_argument(
        "--batch-size", type=positive_int, default=32, help="examples per step, across all devices (default: 32)"
    )
    p.add_argument("--lr", type=_non_negative, default=2e-5, help="peak learning rate (default: 2e-5)")
    p.add_argument(
        "--warmup-ratio", type=_fraction, default=0.1, help="share of the steps of linear warm-up (default: 0.1)"
    )
    p.add_argument("--weight-decay", type=_non_negative, default=0.01, help="AdamW weight decay (default: 0.01)")
    p.add_argument(
        "--max-grad-norm", type=_non_negative, default=1.0, help="clip gradients to this norm; 0: off (default: 1)"
    )
    p.add_argument("--max-length", type=positive_int, default=None, help="truncate texts (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="data order and dropout (default: 0)")
    p.add_argument("--scale", type=_non_negative, default=20.0, help="the loss's inverse temperature (default: 20)")
    p.add_argument(
        "--mini-batch-size",
        type=positive_int,
        default=None,
        help="GradCache: embed and backpropagate this many examples at a time, so the contrastive batch can "
        "exceed device memory with the same loss and gradients",
    )
    p.add_argument("--remat", action="store_true", help="recompute layer activations in the backward pass")
    p.add_argument("--no-dropout", action="store_true", help="train without BERT's dropout")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="compute dtype (bf16: mixed)")
    p.add_argument("--eval", default=None, help="file to score after each epoch (STS Spearman, or top-1 accuracy)")
    p.add_argument("--checkpoint-dir", default=None, help="train-state checkpoints (default: OUTPUT/checkpoints)")
    p.add_argument("--save-steps", type=positive_int, default=500, help="checkpoint every N steps (default: 500)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint, if any")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar (results still print)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        import optax  # noqa: F401
        import orbax.checkpoint  # noqa: F401
    except ImportError as e:
        raise missing_extra(e.name, "train", "fine-tuning") from None
    try:
        return run(args)
    except UserError as e:
        print(f"gte-jax train: error: {e}", file=sys.stderr)
        return 2


class _OptionError(ValueError, UserError):
    pass


def run(args: argparse.Namespace) -> int:
    """The training job; raises the user errors that :func:`main` turns into exit code 2."""
    import os
    import time

    import jax
    from flax import nnx

    from gte_jax import export, sharding
    from gte_jax.loading import load
    from gte_jax.train import data
    from gte_jax.train.checkpoint import Checkpoints
    from gte_jax.train.evaluate import evaluate
    from gte_jax.train.step import StepOptions, Trainer, adamw, make_loss

    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise _OptionError(f"--output {args.output} is a file; name a folder.")
    examples = data.read_examples(args.data)
    data.check_for_loss(examples, args.loss)
    eval_examples = data.read_examples(args.eval) if args.eval else None
    if eval_examples is not None and eval_examples.labels is None and len(eval_examples.columns) < 2:
        raise data.DataError(f"{args.eval}: evaluation needs two text columns (and a score for STS).")

    mesh = sharding.default_mesh()
    dp = sharding.data_parallelism(mesh)
    if args.batch_size % dp:
        raise _OptionError(f"--batch-size {args.batch_size} is not a multiple of the {dp} devices; round it.")
    if args.mini_batch_size and (args.batch_size % args.mini_batch_size or args.mini_batch_size % dp):
        raise _OptionError(
            f"--mini-batch-size {args.mini_batch_size} must divide --batch-size {args.batch_size} and be a multiple "
            f"of the {dp} devices."
        )
    loaded = load(args.model, mesh=mesh, max_length=args.max_length)
    model = loaded.model
    train_data = data.tokenize(examples, loaded.tokenizer)
    eval_data = data.tokenize(eval_examples, loaded.tokenizer) if eval_examples is not None else None

    spans = data.epoch_batches(len(examples), args.batch_size, dp)
    if not spans:
        raise data.DataError(f"{args.data}: {len(examples)} examples make no batch for {dp} devices.")
    total_steps = args.epochs * len(spans)
    tx = adamw(
        args.lr,
        total_steps,
        warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm or None,
    )
    options = StepOptions(
        pooling=loaded.pooling,
        dropout=not args.no_dropout,
        remat=args.remat,
        mini_batch_size=args.mini_batch_size if args.mini_batch_size != args.batch_size else None,
        compute_dtype="bfloat16" if args.dtype == "bfloat16" else None,
    )
    trainer = Trainer(model, make_loss(args.loss, scale=args.scale), tx, mesh=mesh, options=options)

    checkpoints = Checkpoints(args.checkpoint_dir or os.path.join(args.output, "checkpoints"))
    settings = {k: getattr(args, k) for k in _RUN_SETTINGS}
    settings.update(
        model=os.path.abspath(args.model) if os.path.isdir(args.model) else args.model,
        data=os.path.abspath(args.data),
        data_sha256=_sha256(args.data),  # the same order needs the same rows
        max_length=loaded.tokenizer.max_length,
    )
    checkpoints.check_args(settings, resume=args.resume)
    start = checkpoints.latest_step() if args.resume else None
    if start is not None:
        state = checkpoints.restore(trainer.abstract_state(args.seed))
        _say(args, f"resuming from step {start} of {total_steps} ({checkpoints.directory})")
    else:
        if args.resume:
            _say(args, f"no checkpoint in {checkpoints.directory} yet: starting from step 0")
        state = trainer.init(args.seed)

    bar = _progress(total_steps, int(state.step), args.quiet)
    tokens = 0
    began = time.perf_counter()
    for epoch in range(int(state.step) // len(spans), args.epochs):
        order = data.epoch_order(len(examples), args.seed, epoch)
        for k in range(int(state.step) - epoch * len(spans), len(spans)):
            begin, end = spans[k]
            batch = train_data.batch(order[begin:end])
            state, metrics = trainer.step(state, trainer.shard_batch(batch))
            tokens += int(batch["attention_mask"].sum())
            step = int(state.step)
            if step % args.save_steps == 0 and step < total_steps:
                checkpoints.save(state)
            if bar is not None:
                elapsed = max(time.perf_counter() - began, 1e-9)
                bar.set_postfix(loss=f"{float(metrics['loss']):.4f}", tok_s=f"{tokens / elapsed:,.0f}", refresh=False)
                bar.update(1)
        checkpoints.save(state)
        if eval_data is not None:
            name, value = evaluate(trainer, state.params, eval_data)
            _say(args, f"epoch {epoch + 1}/{args.epochs}: {args.eval} {name} {value:.4f}", bar)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - began

    nnx.update(model, state.params)
    if jax.process_index() == 0:
        export.save_pretrained(
            model,
            args.output,
            source_dir=loaded.model_dir,
            tokenizer=loaded.tokenizer,
            pooling=loaded.pooling,
            max_seq_length=loaded.tokenizer.max_length,
        )
    steps_run = total_steps - (start or 0)
    _say(
        args,
        f"trained {steps_run} steps in {elapsed:.1f} s ({steps_run / max(elapsed, 1e-9):.2f} steps/s, "
        f"{tokens / max(elapsed, 1e-9):,.0f} tokens/s); model written to {args.output}",
    )
    return 0


def _sha256(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _progress(total: int, done: int, quiet: bool) -> Any:
    if quiet:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="step", desc="training", dynamic_ncols=True)


def _say(args: argparse.Namespace, message: str, bar: Any = None) -> None:
    """A line on stderr (above the progress bar, if any): results print even with --quiet."""
    if bar is not None:
        bar.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr)
