"""``gte-jax embed``: a corpus file into Parquet shards, or a few texts to JSON lines on stdout.

Exit codes: 0 done; 2 the input, the options or the output directory need fixing
(the message says which file, line or setting).
"""

from __future__ import annotations

import argparse
import json
import sys

from gte_jax.argtypes import positive_int
from gte_jax.engine.dtypes import DTYPES
from gte_jax.engine.dtypes import HELP as DTYPES_HELP

# Only argparse at import time: `gte-jax --help` builds every subcommand's parser.

EPILOG = """\
examples:
  gte-jax embed corpus.jsonl --model thenlper/gte-small --output embeddings/
  gte-jax embed --model thenlper/gte-small --text "what is a tensor?" --text "a pair of shoes"
  gte-jax embed - --model thenlper/gte-small < queries.txt > vectors.jsonl
  # int8 vectors (one set of ranges for the whole output) of the first 256 dimensions:
  gte-jax embed corpus.jsonl --model M --output emb-int8/ --precision int8 --truncate-dim 256
  # every host of a TPU pod runs the same command:
  gte-jax embed /mnt/corpus.parquet --model thenlper/gte-base --dtype bfloat16 --output /mnt/emb --distributed
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "embed",
        help="embed a corpus file (.txt, .jsonl, .parquet) into Parquet shards, resumably",
        description="Embeds a corpus into Parquet shards with columns id and embedding. "
        "A .txt file holds one text per line (id: the 0-based line number); .jsonl and .parquet "
        "hold records with a text field and optionally an id field. Rerunning the same command "
        "after a crash continues where it stopped.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", nargs="?", help="corpus file, or - to read texts (one per line) from stdin")
    p.add_argument("--model", default=None, help="hub id or local model directory (default: thenlper/gte-small)")
    p.add_argument("--output", "-o", help="directory for the Parquet shards (required for a corpus file)")
    p.add_argument("--text", action="append", default=None, help="embed this text and print it as JSON (repeatable)")
    p.add_argument("--format", choices=("txt", "jsonl", "parquet"), help="input format (default: from the suffix)")
    p.add_argument("--text-field", default="text", help="JSON key or Parquet column of the text (default: text)")
    p.add_argument(
        "--id-field",
        default=None,
        help="JSON key or Parquet column of the id (default: id, else the row number)",
    )
    p.add_argument("--dtype", default="float32", choices=DTYPES, help=DTYPES_HELP)
    p.add_argument("--max-length", type=positive_int, default=None, help="truncate texts to this many tokens")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="most texts per device step (default: the backend's, 64 on CPU and 256 on GPU/TPU)",
    )
    p.add_argument(
        "--shard-size", type=positive_int, default=100_000, help="input rows per output shard (default: 100000)"
    )
    p.add_argument("--skip-invalid", action="store_true", help="skip and count bad rows instead of stopping")
    p.add_argument("--no-normalize", dest="normalize", action="store_false", help="keep the raw pooled vectors")
    p.add_argument(
        "--truncate-dim",
        type=positive_int,
        default=None,
        help="keep the first N dimensions (Matryoshka), before normalising (default: all)",
    )
    p.add_argument(
        "--precision",
        default="float32",
        choices=("float32", "int8", "uint8", "binary", "ubinary"),
        help="stored precision: int8/uint8 scalar-quantised with one set of ranges per output, binary/ubinary one "
        "bit per dimension packed into dim/8 bytes (default: float32)",
    )
    p.add_argument(
        "--calibration",
        metavar="FILE",
        default=None,
        help="int8/uint8 ranges: a .npy of [2, dim] minima and maxima, or a .txt/.jsonl/.parquet of texts "
        "(--text-field) to take them from (default: the input's first shard, at most 10000 texts)",
    )
    p.add_argument(
        "--prompt-name",
        default=None,
        help="put this prompt of the model's config_sentence_transformers.json before every text (default: its "
        "default_prompt_name, if it names one)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    d = p.add_argument_group(
        "multi-host",
        "Run the same command on every host; shard k goes to process k % N. On a TPU pod pass --distributed "
        "alone (JAX finds the hosts); elsewhere name the coordinator, the process count and this process.",
    )
    d.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() before anything else")
    d.add_argument("--coordinator", help="HOST:PORT of process 0 (implies --distributed)")
    d.add_argument("--num-processes", type=positive_int, help="how many processes take part")
    d.add_argument("--process-id", type=int, help="this process's index, 0 to N-1")
    p.set_defaults(func=main)


def init_distributed(args: argparse.Namespace) -> None:
    """Starts jax.distributed when asked; must run before anything touches a device."""
    named = {
        "coordinator_address": args.coordinator,
        "num_processes": args.num_processes,
        "process_id": args.process_id,
    }
    if not (args.distributed or any(v is not None for v in named.values())):
        return
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts; other backends ignore it
    jax.distributed.initialize(**{k: v for k, v in named.items() if v is not None})


def main(args: argparse.Namespace) -> int:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        print("gte-jax embed: error: the corpus job writes Parquet; pip install pyarrow", file=sys.stderr)
        return 2
    from gte_jax.checkpoints.hub import DEFAULT_MODEL
    from gte_jax.corpus.job import EmbedJob, run
    from gte_jax.errors import UserError

    def fail(message: str) -> int:
        print(f"gte-jax embed: error: {message}", file=sys.stderr)
        return 2

    quick = args.text is not None or args.input == "-"
    if args.text is not None and args.input is not None:
        return fail("give either INPUT or --text, not both.")
    if not quick and args.input is None:
        return fail("give a corpus file, - for stdin, or --text.")
    if not quick and not args.output:
        return fail("--output DIR is required for a corpus file.")
    if quick and args.output:
        return fail("--output is for corpus files; --text and - print JSON lines to stdout.")
    model = args.model or DEFAULT_MODEL
    try:
        init_distributed(args)
        if quick:
            return embed_stream(args, model)
        run(
            EmbedJob(
                input=args.input,
                output=args.output,
                model=model,
                format=args.format,
                text_field=args.text_field,
                id_field=args.id_field,
                dtype=args.dtype,
                max_length=args.max_length,
                batch_size=args.batch_size,
                shard_size=args.shard_size,
                skip_invalid=args.skip_invalid,
                normalize=args.normalize,
                quiet=args.quiet,
                truncate_dim=args.truncate_dim,
                precision=args.precision,
                prompt_name=args.prompt_name,
                calibration=args.calibration,
            )
        )
        return 0
    except UserError as e:  # what the user can fix; anything else is a bug and keeps its traceback
        return fail(str(e))


def embed_stream(args: argparse.Namespace, model: str, chunk: int = 256) -> int:
    """``--text`` or stdin: prints ``{"id": i, "embedding": [...]}`` per text, as each chunk is done."""
    import numpy as np

    from gte_jax.corpus.job import EmbedJob
    from gte_jax.corpus.options import embed_texts, load_encoder, make_ranges, quantize, resolve_options
    from gte_jax.engine.quantization import RANGED
    from gte_jax.engine.tokenization import lone_surrogate

    for i, text in enumerate(args.text or []):
        at = lone_surrogate(text)
        if at is not None:  # bytes of the command line that are not UTF-8 (Python keeps them as surrogates)
            byte = len(text[:at].encode("utf-8", "surrogateescape"))
            print(f"gte-jax embed: error: --text {i + 1}: invalid UTF-8 at byte {byte}", file=sys.stderr)
            return 2
    enc = load_encoder(model, dtype=args.dtype, max_length=args.max_length)
    options = EmbedJob(
        input="-",
        output="",
        model=model,
        text_field=args.text_field,
        truncate_dim=args.truncate_dim,
        precision=args.precision,
        prompt_name=args.prompt_name,
        calibration=args.calibration,
    )
    prompt, dim = resolve_options(enc, options)

    def floats(texts: list[str]) -> np.ndarray:
        vectors, _ = embed_texts(
            enc, texts, args.batch_size, args.normalize, prompt=prompt, truncate_dim=args.truncate_dim
        )
        return vectors

    ranges, source = make_ranges(options, floats, dim, None, 1) if args.precision in RANGED else (None, None)

    def emit(first: int, texts: list[str]) -> None:
        vectors = quantize(floats(texts), args.precision, ranges, source)
        for i, v in enumerate(np.asarray(vectors).tolist()):
            sys.stdout.write(json.dumps({"id": first + i, "embedding": v}) + "\n")
        sys.stdout.flush()

    if args.text is not None:
        emit(0, args.text)
        return 0
    texts: list[str] = []
    first = 0
    for line_no, raw in enumerate(sys.stdin.buffer):
        try:
            texts.append(raw.rstrip(b"\n").removesuffix(b"\r").decode("utf-8"))
        except UnicodeDecodeError as e:
            print(f"gte-jax embed: error: stdin line {line_no + 1}: invalid UTF-8 at byte {e.start}", file=sys.stderr)
            return 2
        if len(texts) == chunk:
            emit(first, texts)
            first, texts = first + chunk, []
    if texts:
        emit(first, texts)
    return 0
