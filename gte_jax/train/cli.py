"""``gte-jax train``: contrastive fine-tuning into a sentence-transformers folder (or a cross-encoder with
``--loss bce`` or ``--loss lambda`` into a ``CrossEncoder`` folder), resumable.

Exit codes: 0 done; 2 the data, the options, the model or the checkpoint folder need fixing
(the message names the file, line or setting).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from gte_jax.engine.loading import Loaded
    from gte_jax.train.checkpoint import Checkpoints
    from gte_jax.train.data import Examples, Tokenized
    from gte_jax.train.listwise import Listwise, ListwiseTokens
    from gte_jax.train.step import Trainer, TrainState

from gte_jax.argtypes import positive_int
from gte_jax.errors import UserError, missing_extra

# Only argparse at import time: `gte-jax --help` builds every subcommand's parser.

EPILOG = """\
data: .jsonl, .csv/.tsv (with a header) or .parquet; text columns in order, plus score/label for cosent:
  {"sentence1": "A man is playing a guitar.", "sentence2": "A man plays guitar.", "score": 0.95}
  {"anchor": "what is a tensor?", "positive": "A tensor is ...", "negative": "Tension is ..."}
  {"query": "what is a tensor?", "document": "A tensor is ...", "label": 1}   (bce: 0/1 or a probability)
  {"query": "what is a tensor?", "docs": ["A tensor is ...", "Tension is ..."], "labels": [1, 0]}   (lambda;
      in CSV the docs and labels cells are JSON lists)

examples:
  gte-jax train --model thenlper/gte-small --data sts.jsonl --loss cosent --output gte-small-sts
  gte-jax train --model thenlper/gte-base --data pairs.parquet --loss gte --batch-size 1024 \\
      --mini-batch-size 64 --output gte-base-ft
  # after a crash or preemption, the same command with --resume continues from the last checkpoint:
  gte-jax train --model thenlper/gte-small --data sts.jsonl --loss cosent --output gte-small-sts --resume
  # a cross-encoder (a *ForSequenceClassification checkpoint) into a CrossEncoder folder:
  gte-jax train --model cross-encoder/ms-marco-MiniLM-L6-v2 --data pairs.jsonl --loss bce --output reranker-ft
  gte-jax train --model cross-encoder/ms-marco-MiniLM-L6-v2 --data lists.jsonl --loss lambda --output reranker-ft
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
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number, 0 or more, got {value}")
    return value


SEED_LIMIT = 2**32  # JAX's PRNG keys take 32 bits (without x64): larger seeds would repeat smaller ones


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be from 0 to {SEED_LIMIT - 1}, got {text}")
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
        choices=("cosent", "infonce", "gte", "bce", "lambda"),
        help="cosent: scored pairs; infonce: anchor, positive[, negatives] with in-batch negatives; "
        "gte: InfoNCE over GTE's four directions; bce: a cross-encoder on labelled (query, document) pairs; "
        "lambda: a cross-encoder on queries with ranked documents (LambdaLoss)",
    )
    p.add_argument(
        "--cross-encoder",
        action="store_true",
        help="the model is a sequence classifier even though its config.json names no *ForSequenceClassification "
        "architecture (found from it otherwise)",
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
    p.add_argument("--seed", type=_seed, default=0, help="data order and dropout (default: 0)")
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
    p.add_argument(
        "--checkpoint-dir",
        default=None,
        help="train-state checkpoints, kept out of the model folder (default: OUTPUT.checkpoints, beside it)",
    )
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


class _Diverged(ArithmeticError, UserError):
    """The loss or the weights stopped being finite: nothing of that step is kept."""


def run(args: argparse.Namespace) -> int:
    """The training job; raises the user errors that :func:`main` turns into exit code 2.

    Every check that needs no model comes first (options, output folder, data), so a mistake costs no load.
    """
    _check_options(args)
    inputs = _read_data(args)
    job = _build(args, inputs)
    checkpoints = _checkpoints(args, job)
    state, start = _restore_or_init(args, job, checkpoints)
    state, tokens, elapsed = _train(args, job, checkpoints, state)
    _export(args, job, state)
    steps_run = job.total_steps - (start or 0)
    _say(
        args,
        f"trained {steps_run} steps in {elapsed:.1f} s ({steps_run / max(elapsed, 1e-9):.2f} steps/s, "
        f"{tokens / max(elapsed, 1e-9):,.0f} tokens/s); model written to {args.output}",
    )
    return 0


def checkpoint_dir(args: argparse.Namespace) -> str:
    """``--checkpoint-dir``, by default ``OUTPUT.checkpoints`` beside the model folder: shipping the model
    folder must not ship the optimiser state (three times the model's size)."""
    import os

    return args.checkpoint_dir or f"{os.path.abspath(args.output)}.checkpoints"


def _check_options(args: argparse.Namespace) -> None:
    import os

    from gte_jax.checkpoints.export import check_output
    from gte_jax.train.step import CROSS_ENCODER_LOSSES

    check_output(args.output)  # before training: a folder the model cannot go to would waste the run
    ckpt = checkpoint_dir(args)
    if os.path.lexists(ckpt) and not os.path.isdir(ckpt):
        raise _OptionError(f"--checkpoint-dir {ckpt} is a file; name a folder (it is created).")
    if os.path.abspath(ckpt) == os.path.abspath(args.output):
        raise _OptionError("--checkpoint-dir is the --output folder; name another folder for the checkpoints.")
    if args.loss in CROSS_ENCODER_LOSSES and args.eval:
        raise _OptionError(
            "--eval scores embedding models (STS Spearman, top-1 accuracy); for a cross-encoder leave it out and "
            "score the exported folder with GTEReranker."
        )
    if args.loss in CROSS_ENCODER_LOSSES and args.remat:
        raise _OptionError("--remat is for embedding models; train the cross-encoder without it.")
    if args.max_length is not None and args.max_length < 2:
        raise _OptionError(f"--max-length {args.max_length} leaves no room for text: [CLS] and [SEP] take 2 tokens.")


def _read_data(args: argparse.Namespace) -> tuple[Examples | Listwise, Examples | None]:
    """The training and evaluation examples, every row checked (before the model loads)."""
    from gte_jax.train import data
    from gte_jax.train.listwise import read_listwise

    if args.loss == "lambda":
        return read_listwise(args.data), None  # --eval is refused for cross-encoders
    examples = data.read_examples(args.data)
    data.check_for_loss(examples, args.loss)
    eval_examples = data.read_examples(args.eval) if args.eval else None
    if eval_examples is not None:
        data.check_for_eval(eval_examples)
    return examples, eval_examples


@dataclasses.dataclass
class _Job:
    """What the steps after loading share."""

    loaded: Loaded
    trainer: Trainer
    examples: Examples | Listwise
    train_data: Tokenized | ListwiseTokens
    eval_data: Tokenized | None
    spans: list[tuple[int, int]]
    total_steps: int
    activation: str | None = None  # a cross-encoder's (written into its folder); None for an embedding model


def _build(args: argparse.Namespace, inputs: tuple[Examples | Listwise, Examples | None]) -> _Job:
    """The model, the tokenised data, the optimiser and the compiled step."""
    from gte_jax.checkpoints.hub import ModelNotFoundError
    from gte_jax.engine import sharding
    from gte_jax.engine.loading import load
    from gte_jax.errors import CheckpointError, ConfigError
    from gte_jax.train import data
    from gte_jax.train.listwise import Listwise, tokenize_listwise
    from gte_jax.train.step import StepOptions, Trainer, adamw, make_loss

    examples, eval_examples = inputs
    mesh = sharding.default_mesh()
    dp = sharding.data_parallelism(mesh)
    if args.batch_size % dp:
        raise _OptionError(f"--batch-size {args.batch_size} is not a multiple of the {dp} devices; round it.")
    if args.mini_batch_size and (args.batch_size % args.mini_batch_size or args.mini_batch_size % dp):
        raise _OptionError(
            f"--mini-batch-size {args.mini_batch_size} must divide --batch-size {args.batch_size} and be a multiple "
            f"of the {dp} devices."
        )
    spans = data.epoch_batches(len(examples), args.batch_size, dp)
    if not spans:
        raise data.DataError(f"{args.data}: {len(examples)} examples make no batch for {dp} devices.")
    num_labels, activation = _cross_encoder(args)
    try:
        loaded = load(args.model, mesh=mesh, max_length=args.max_length, num_labels=num_labels)
    except (ModelNotFoundError, CheckpointError, ConfigError):
        raise
    except ValueError as e:  # the one other setting load checks against the model: its length limit
        raise _OptionError(f"--max-length: {e}") from None
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
        cross_encoder=num_labels is not None,
    )
    trainer = Trainer(loaded.model, make_loss(args.loss, scale=args.scale), tx, mesh=mesh, options=options)
    if num_labels is not None:
        from gte_jax.engine.tokenization import MAX_PAIR_VOCAB

        if loaded.tokenizer.vocab_size > MAX_PAIR_VOCAB:  # pairs pack their token types into the ids' high bits
            raise _OptionError(
                f"{args.model}: a tokenizer of {loaded.tokenizer.vocab_size} ids is too large for pairs."
            )
        train_data: Tokenized | ListwiseTokens
        if isinstance(examples, Listwise):
            train_data = tokenize_listwise(examples, loaded.tokenizer)
        else:
            train_data = data.tokenize_pairs(examples, loaded.tokenizer)
    else:
        assert not isinstance(examples, Listwise)  # --loss lambda is refused for embedding models
        train_data = data.tokenize(examples, loaded.tokenizer)
    eval_data = data.tokenize(eval_examples, loaded.tokenizer) if eval_examples is not None else None
    return _Job(loaded, trainer, examples, train_data, eval_data, spans, total_steps, activation)


def _cross_encoder(args: argparse.Namespace) -> tuple[int | None, str | None]:
    """``(num_labels, activation)`` of a cross-encoder checkpoint, ``(None, None)`` for an embedding model;
    a loss that does not fit the kind of model is refused before it loads."""
    from gte_jax.checkpoints.hub import read_json, resolve_model_dir
    from gte_jax.engine.reranker import _num_labels, checkpoint_activation
    from gte_jax.train.step import CROSS_ENCODER_LOSSES

    model_dir = resolve_model_dir(args.model)
    hf = read_json(model_dir, "config.json") or {}
    names = hf.get("architectures") or []
    cross = args.cross_encoder or any(str(n).endswith("ForSequenceClassification") for n in names)
    if args.loss in CROSS_ENCODER_LOSSES and not cross:
        raise _OptionError(
            f"--loss {args.loss} trains a cross-encoder, and {args.model} is an embedding model (config.json names "
            f"{names or 'no architecture'}); start from a *ForSequenceClassification checkpoint, or pass "
            "--cross-encoder if it is one whose config.json does not say so."
        )
    if not cross:
        return None, None
    if args.loss not in CROSS_ENCODER_LOSSES:
        raise _OptionError(
            f"{args.model} is a cross-encoder (a sequence classifier), which --loss {args.loss} cannot train (it "
            "compares embeddings); use --loss bce with labelled pairs or --loss lambda with ranked lists, or start "
            "from an embedding model."
        )
    source = f"{model_dir}/config.json"
    num_labels = _num_labels(hf, source)
    if num_labels != 1:
        raise _OptionError(f"--loss {args.loss} trains one logit per pair, and {args.model} has {num_labels} labels.")
    return num_labels, checkpoint_activation(hf, num_labels, source)


def _checkpoints(args: argparse.Namespace, job: _Job) -> Checkpoints:
    """The checkpoint folder, checked against this run's settings (recorded there by a fresh run)."""
    import os

    from gte_jax.train.checkpoint import Checkpoints

    checkpoints = Checkpoints(checkpoint_dir(args))
    checkpoints.check_foreign()
    settings = {k: getattr(args, k) for k in _RUN_SETTINGS}
    settings.update(
        model=os.path.abspath(args.model) if os.path.isdir(args.model) else args.model,
        data=os.path.abspath(args.data),
        data_sha256=_sha256(args.data),  # the same order needs the same rows
        max_length=job.loaded.tokenizer.max_length,
    )
    checkpoints.check_args(settings, resume=args.resume, output=args.output)
    return checkpoints


def _restore_or_init(args: argparse.Namespace, job: _Job, checkpoints: Checkpoints) -> tuple[TrainState, int | None]:
    """The state to start from, and the step it was restored at (None: a fresh start)."""
    start = checkpoints.latest_step() if args.resume else None
    if start is None:
        if args.resume:
            _say(args, f"no checkpoint in {checkpoints.directory} yet: starting from step 0")
        return job.trainer.init(args.seed), None
    state = checkpoints.restore(job.trainer.abstract_state(args.seed), start)
    _say(args, f"resuming from step {start} of {job.total_steps} ({checkpoints.directory})")
    return state, start


def _train(
    args: argparse.Namespace, job: _Job, checkpoints: Checkpoints, state: TrainState
) -> tuple[TrainState, int, float]:
    """The epochs from ``state``'s step on, saving every ``--save-steps`` and at each epoch's end.

    Returns:
        The final state, the tokens trained on, and the seconds it took.
    """
    import time

    from gte_jax.train import data
    from gte_jax.train.evaluate import describe, evaluate

    spans, trainer = job.spans, job.trainer
    bar = _progress(job.total_steps, int(state.step), args.quiet)
    tokens = 0
    began = time.perf_counter()
    for epoch in range(int(state.step) // len(spans), args.epochs):
        order = data.epoch_order(len(job.examples), args.seed, epoch)
        for k in range(int(state.step) - epoch * len(spans), len(spans)):
            begin, end = spans[k]
            batch = job.train_data.batch(order[begin:end])
            state, metrics = trainer.step(state, trainer.shard_batch(batch))
            tokens += int(batch["attention_mask"].sum())
            loss = float(metrics["loss"])
            _check_finite(args, job, checkpoints, int(state.step), loss, bool(metrics["params_finite"]))
            # Each step is reached once per run, so one save per step: the epoch's end may be a multiple too.
            if int(state.step) % args.save_steps == 0 or k == len(spans) - 1:
                checkpoints.save(state)
            if bar is not None:
                elapsed = max(time.perf_counter() - began, 1e-9)
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens / elapsed:,.0f}", refresh=False)
                bar.update(1)
        if job.eval_data is not None:
            name, value = evaluate(trainer, state.params, job.eval_data)
            _say(args, f"epoch {epoch + 1}/{args.epochs}: {args.eval} {describe(name, value)}", bar)
    if bar is not None:
        bar.close()
    return state, tokens, time.perf_counter() - began


def _check_finite(
    args: argparse.Namespace, job: _Job, checkpoints: Checkpoints, step: int, loss: float, finite: bool
) -> None:
    """Stops a run whose loss or weights are no longer finite, before anything of it is saved."""
    if math.isfinite(loss) and finite:
        return
    what = f"the loss is {loss}" if not math.isfinite(loss) else "the weights hold NaN or infinite values"
    latest = checkpoints.latest_step()
    kept = (
        f"the checkpoints up to step {latest} in {checkpoints.directory} are kept (delete that folder to start again)"
        if latest is not None
        else "nothing was saved"
    )
    raise _Diverged(
        f"training diverged at step {step} of {job.total_steps} ({what}); no model was written and {kept}. "
        f"Start again with a lower --lr (now {args.lr:g}) or clip gradients with --max-grad-norm (now "
        f"{args.max_grad_norm:g}{': off' if not args.max_grad_norm else ''})."
    )


def _export(args: argparse.Namespace, job: _Job, state: TrainState) -> None:
    import jax
    from flax import nnx

    from gte_jax.checkpoints import export

    nnx.update(job.loaded.model, state.params)
    if jax.process_index() == 0 and job.activation is not None:
        from gte_jax.train.cross_export import save_cross_encoder

        save_cross_encoder(
            cast(Any, job.loaded.model),
            args.output,
            source_dir=job.loaded.model_dir,
            activation=job.activation,
            tokenizer=job.loaded.tokenizer,
        )
    elif jax.process_index() == 0:
        export.save_pretrained(
            job.loaded.model,
            args.output,
            source_dir=job.loaded.model_dir,
            tokenizer=job.loaded.tokenizer,
            sentence=dataclasses.replace(job.loaded.sentence, max_seq_length=job.loaded.tokenizer.max_length),
        )


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
