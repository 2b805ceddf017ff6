"""`gte-jax convert SRC OUT_DIR`: a self-contained Flax checkpoint that loads without torch."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import tempfile

import numpy as np

from gte_jax.checkpoints.hub import METADATA_FILES, module_config_files
from gte_jax.errors import UserError

# The model directory's files besides the weights, copied verbatim, with its card and licence.
COPIED_FILES = [*METADATA_FILES, "config_sentence_transformers.json", "README.md", "LICENSE"]
CHECK_TEXTS = [
    "what is a tensor?",
    "A tensor is a multi-dimensional array of numbers.",
    "",
    "The quick brown fox jumps over the lazy dog. " * 80,  # past 512 tokens: truncated
]


def convert(src: str, out_dir: str, *, verify: bool = True, log=print) -> str:
    """Writes ``out_dir`` from ``src`` (hub id or directory); returns ``out_dir``.

    The files are written into a new hidden directory beside ``out_dir`` and
    renamed into place, so ``out_dir`` appears complete or not at all; on
    failure only that directory is removed.

    Raises:
        OutputExistsError: ``out_dir`` is a non-empty directory (nothing is overwritten); a FileExistsError.
        OutputNotADirectoryError: ``out_dir`` exists and is not a directory; a NotADirectoryError.
    """
    from gte_jax import GTEEncoder
    from gte_jax.checkpoints.hub import resolve_model_dir
    from gte_jax.checkpoints.params import FLAX_WEIGHTS, save_flax_weights

    _check_output(out_dir)
    src_dir = resolve_model_dir(src)
    enc = GTEEncoder.from_pretrained(src_dir)
    target = os.path.abspath(out_dir)  # no trailing slash: basename and rename see the directory itself
    os.makedirs(os.path.dirname(target), exist_ok=True)
    # A directory only this run made: removing it on failure cannot touch anybody's files.
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", suffix=".partial", dir=os.path.dirname(target))
    try:
        tmp = os.path.join(work, "model")
        os.mkdir(tmp)  # unlike mkdtemp's 0700, the usual permissions for the final directory
        for name in dict.fromkeys(COPIED_FILES + module_config_files(src_dir)):
            path = os.path.join(src_dir, name)
            if os.path.isfile(path):
                os.makedirs(os.path.dirname(os.path.join(tmp, name)), exist_ok=True)
                shutil.copyfile(path, os.path.join(tmp, name))
        save_flax_weights(enc.model, os.path.join(tmp, FLAX_WEIGHTS))
        _check_output(out_dir)  # again: the conversion takes a while
        os.replace(tmp, target)  # onto a missing or empty directory only: appears complete or not at all
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {out_dir} ({enc.config.num_hidden_layers} layers, dim {enc.dim}, pooling {enc.pooling})")
    if verify:
        converted = GTEEncoder.from_pretrained(out_dir).encode(CHECK_TEXTS)
        diff = float(np.abs(converted - enc.encode(CHECK_TEXTS)).max())
        log(f"converted vs source checkpoint (gte_jax): max abs difference {diff:.2e}")
        if importlib.util.find_spec("torch") and importlib.util.find_spec("transformers"):
            from gte_jax_convert.reference import torch_embeddings

            ref = torch_embeddings(src_dir, CHECK_TEXTS, max_length=enc.max_length, pooling=enc.pooling)
            log(f"converted vs PyTorch BertModel: max abs difference {float(np.abs(converted - ref).max()):.2e}")
        else:
            log("torch/transformers not installed: skipped the comparison with the PyTorch model.")
    return out_dir


class OutputExistsError(FileExistsError, UserError):
    """``OUT_DIR`` is a non-empty directory: nothing is overwritten."""


class OutputNotADirectoryError(NotADirectoryError, UserError):
    """``OUT_DIR`` exists and is a file (or a link to one)."""


def _check_output(out_dir: str) -> None:
    if os.path.isdir(out_dir) and not os.path.islink(out_dir):
        if os.listdir(out_dir):
            raise OutputExistsError(f"{out_dir} exists and is not empty; choose a new output directory.")
    elif os.path.lexists(out_dir):
        raise OutputNotADirectoryError(f"{out_dir} exists and is not a directory; choose a new output directory.")


EPILOG = """\
examples:
  gte-jax convert thenlper/gte-small ./gte-small-flax          # from the Hugging Face Hub (or its cache)
  gte-jax convert ./my-finetuned-model ./my-model-flax         # from a local Hugging Face model directory
  gte-jax convert "$(gte-jax demo --print-model-dir)" ./minilm-flax   # offline: the bundled all-MiniLM-L6-v2

torch: a source whose only weights are pytorch_model.bin, and the check against the PyTorch model, need torch
and transformers (pip install ".[torch]" from the gte-jax checkout); without them a safetensors source still
converts, and the check compares the written checkpoint with the source through gte_jax only.
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="write a Flax checkpoint directory that loads without torch",
        description="Converts a Hugging Face BERT checkpoint (safetensors or pytorch_model.bin) into a directory "
        "with gte_jax.safetensors (NNX parameter paths, float32) and the config, tokenizer and pooling files, "
        "which GTEEncoder.from_pretrained loads without torch. OUT_DIR is written in a temporary folder and "
        "renamed into place, so it appears complete or not at all; an existing non-empty OUT_DIR is refused. "
        "After writing, the new checkpoint is embedded and compared with the source (and with the PyTorch model "
        "where torch is installed).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC", help="hub id (thenlper/gte-small) or a local Hugging Face model directory")
    p.add_argument("out_dir", metavar="OUT_DIR", help="new directory to write (missing or empty)")
    p.add_argument("--no-verify", action="store_true", help="skip the parity check after writing")
    p.set_defaults(func=_main)


def _main(args) -> int:
    convert(args.src, args.out_dir, verify=not args.no_verify)  # a UserError: `gte-jax` prints it and exits 2
    return 0
