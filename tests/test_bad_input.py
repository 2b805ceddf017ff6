"""Every bad input of the encoder, the adapters and the CLI, with the error it must give: one table.

A row is ``(call, expected, fragment)``. ``call`` gets a :class:`Ctx` (the MiniLM encoder,
both adapters, ``cli(*args)`` running ``gte-jax`` in-process, and builders of broken model
directories and inputs, all in the test's own folder) and must raise ``expected`` (an exception
type), or, for the CLI, return exit code ``expected`` (an int) with ``fragment`` in its one-line
message and no traceback. Add a row here for each new mistake a user can make; the regression
tests of each fix live beside the code's other tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import sys
from typing import Any
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gte_jax import GTEEncoder
from gte_jax.cli import main as cli_main
from gte_jax.errors import ConfigError

from checkpoints import TINY_VOCAB_1000, torch_bert, truncate, write_checkpoint


def _save_state(enc: GTEEncoder, c: Ctx) -> Any:
    from flax import nnx

    from gte_jax.checkpoints.export import save_pretrained

    return save_pretrained(nnx.state(enc.model), os.path.join(c.folder, "out"), config=enc.config, source_dir=c.model)


def _trainer(model: Any) -> Any:
    import optax

    from gte_jax.train.step import Trainer, make_loss

    return Trainer(model, make_loss("cosent"), optax.sgd(1e-3))


@dataclasses.dataclass
class Ctx:
    enc: GTEEncoder
    langchain: Any
    llama_index: Any
    model: str  # the MiniLM directory
    folder: str  # the test's own folder, also the CLI's working directory

    def cli(self, *args: Any) -> tuple[int, str]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.chdir(self.folder):
            try:
                code = cli_main([str(a) for a in args])
            except SystemExit as e:  # argparse
                code = e.code
        return code, err.getvalue()

    def file(self, name: str, content: str | bytes) -> str:
        path = os.path.join(self.folder, name)
        with open(path, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
        return path

    def model_with(self, config: dict | None = None, truncated: str | None = None) -> str:
        """A copy of MiniLM with ``config`` merged into config.json and/or the file ``truncated`` cut in half."""
        path = os.path.join(self.folder, "model")
        shutil.copytree(self.model, path)
        if config:
            with open(os.path.join(path, "config.json")) as f:
                merged = {**json.load(f), **config}
            self.file("model/config.json", json.dumps(merged))
        if truncated:
            truncate(os.path.join(path, truncated))
        return path

    def small_vocab_model(self) -> str:
        return write_checkpoint(torch_bert(TINY_VOCAB_1000), os.path.join(self.folder, "small"), self.model)

    def output_with(self, name: str, content: str) -> str:
        """An output directory holding one file."""
        os.makedirs(os.path.join(self.folder, "out"), exist_ok=True)
        self.file(f"out/{name}", content)
        return "out"

    def parquet(self, ids: list, type_: pa.DataType) -> str:
        table = pa.table({"id": pa.array(ids, type_), "text": [f"text {i}" for i in range(len(ids))]})
        pq.write_table(table, os.path.join(self.folder, "c.parquet"))
        return "c.parquet"


def _embed(c: Ctx, *args: Any) -> tuple[int, str]:
    return c.cli("embed", *args, "--model", c.model, "--quiet")


def _with_modules(c: Ctx, *extra: dict) -> str:
    """A copy of MiniLM whose modules.json adds ``extra`` modules after its own."""
    path = c.model_with()
    with open(os.path.join(path, "modules.json")) as f:
        modules = json.load(f)
    c.file("model/modules.json", json.dumps(modules + list(extra)))
    return path


def _serve(c: Ctx, *args: Any, env: dict[str, str] | None = None, missing: str | None = None) -> tuple[int, str]:
    """``gte-jax serve`` on a free port with ``env`` set (and the package ``missing`` not importable)."""
    from processes import free_port

    with mock.patch.dict(os.environ, env or {}), mock.patch.dict(sys.modules, {missing: None} if missing else {}):
        return c.cli("serve", "--model", c.model, "--port", free_port(), "--no-warmup", *args)


def _npy(c: Ctx, array: np.ndarray) -> str:
    path = os.path.join(c.folder, "ranges.npy")
    np.save(path, array)
    return path


DENSE = {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}


CASES: dict[str, tuple] = {
    # -- GTEEncoder.encode -------------------------------------------------------------------------
    "encode: a non-string item": (lambda c: c.enc.encode(["ok", 3]), TypeError, "texts[1] is int"),
    "encode: None": (lambda c: c.enc.encode(None), TypeError, "not NoneType"),
    "encode: bytes": (lambda c: c.enc.encode(b"abc"), TypeError, "decode it first"),
    "encode: a bytes item": (lambda c: c.enc.encode(["a", b"b"]), TypeError, "texts[1] is bytes"),
    "encode: a dict": (lambda c: c.enc.encode({"a": "x"}), TypeError, "mapping"),
    "encode: a lone surrogate": (lambda c: c.enc.encode(["ok", "bad \udc80"]), ValueError, "texts[1]"),
    "encode: batch_size 0": (lambda c: c.enc.encode(["a"], batch_size=0), ValueError, "batch_size"),
    "encode: batch_size -3": (lambda c: c.enc.encode(["a"], batch_size=-3), ValueError, "positive"),
    "encode: precision int4": (lambda c: c.enc.encode(["a"], precision="int4"), ValueError, "precision 'int4'"),
    "encode: truncate_dim 0": (lambda c: c.enc.encode(["a"], truncate_dim=0), ValueError, "truncate_dim must be"),
    "encode: truncate_dim past the dimension": (
        lambda c: c.enc.encode(["a"], truncate_dim=385),
        ValueError,
        "truncate_dim 385 is more than this model's 384",
    ),
    "encode: an unknown prompt_name": (
        lambda c: c.enc.encode(["a"], prompt_name="query"),
        ValueError,
        "prompt_name 'query' is not one of this model's prompts",
    ),
    "encode: a prompt that is not a string": (lambda c: c.enc.encode(["a"], prompt=3), TypeError, "prompt must be"),
    "encode: an unknown output_value": (
        lambda c: c.enc.encode(["a"], output_value="cls_token"),
        ValueError,
        "output_value 'cls_token'",
    ),
    "encode: ranges for float32": (
        lambda c: c.enc.encode(["a"], ranges=np.zeros((2, 384))),
        ValueError,
        "ranges applies to precision 'int8' or 'uint8'",
    ),
    "encode: int8 ranges from one text": (
        lambda c: c.enc.encode("a", precision="int8"),
        ValueError,
        "from a single embedding",
    ),
    "encode: ranges of the wrong shape": (
        lambda c: c.enc.encode(["a", "b"], precision="uint8", ranges=np.zeros((2, 10))),
        ValueError,
        "ranges must be a [2, 384] array",
    ),
    "encode: NaN ranges": (
        lambda c: c.enc.encode(["a", "b"], precision="int8", ranges=np.full((2, 384), np.nan)),
        ValueError,
        "ranges hold NaN or infinity in dimension 0 and 383 more",
    ),
    "encode: ranges far too wide": (
        lambda c: c.enc.encode(["a cat", "a tensor"], precision="int8", ranges=np.array([[-1e38] * 384, [1e38] * 384])),
        ValueError,
        "far too wide",
    ),
    "similarity: rows of different sizes": (
        lambda c: c.enc.similarity(np.ones((2, 384)), np.ones((2, 10))),
        ValueError,
        "384-dimensional embeddings with 10-dimensional",
    ),
    # -- GTEEncoder.from_pretrained ----------------------------------------------------------------
    "load: prompts a string": (
        lambda c: GTEEncoder.from_pretrained(c.model, prompts="query: "),
        TypeError,
        "prompts must be a dict of prompt name to prompt text",
    ),
    "load: a missing directory": (lambda c: GTEEncoder.from_pretrained("/no/dir"), FileNotFoundError, "/no/dir"),
    "load: hidden_size a string": (
        lambda c: GTEEncoder.from_pretrained(c.model_with({"hidden_size": "384"})),
        ValueError,
        "hidden_size is '384', not a positive integer",
    ),
    "load: no attention heads": (
        lambda c: GTEEncoder.from_pretrained(c.model_with({"num_attention_heads": 0})),
        ValueError,
        "num_attention_heads is 0",
    ),
    "load: truncated weights": (
        lambda c: GTEEncoder.from_pretrained(c.model_with(truncated="model.safetensors")),
        ValueError,
        "is corrupt or truncated",
    ),
    "load: ids past the embedding table": (
        lambda c: GTEEncoder.from_pretrained(c.small_vocab_model()),
        ValueError,
        "embedding table has 1000 rows",
    ),
    "load: max_length too long": (
        lambda c: GTEEncoder.from_pretrained(c.model, max_length=513),
        ValueError,
        "accepts 2 to 512 tokens",
    ),
    "load: an unknown dtype": (lambda c: GTEEncoder.from_pretrained(c.model, dtype="float16"), ValueError, "dtype"),
    "load: a numpy dtype instead of its name": (
        lambda c: GTEEncoder.from_pretrained(c.model, dtype=np.dtype("float32")),
        ValueError,
        "use one of the names",
    ),
    "save_pretrained: the state of an int8 model": (
        lambda c: _save_state(GTEEncoder.from_pretrained(c.model, dtype="int8"), c),
        ValueError,
        "save the model loaded with dtype='float32'",
    ),
    "save_pretrained: an int8 encoder": (
        lambda c: GTEEncoder.from_pretrained(c.model, dtype="int8").save_pretrained(os.path.join(c.folder, "out")),
        ValueError,
        "save the model loaded with dtype='float32'",
    ),
    "train: an int8 model": (
        lambda c: _trainer(GTEEncoder.from_pretrained(c.model, dtype="int8").model),
        ValueError,
        "train the model loaded with dtype='float32'",
    ),
    "embed: an unknown --dtype": (lambda c: c.cli("embed", "x.txt", "--dtype", "float16"), 2, "invalid choice"),
    "load: a Dense module in modules.json": (
        lambda c: GTEEncoder.from_pretrained(_with_modules(c, DENSE)),
        ConfigError,
        "module 3 is 'sentence_transformers.models.Dense' (folder '3_Dense')",
    ),
    "load: an unknown similarity_fn_name": (
        lambda c: GTEEncoder.from_pretrained(c.model, similarity_fn_name="maxsim"),
        ValueError,
        "similarity_fn_name 'maxsim'",
    ),
    "load: an unknown default_prompt_name": (
        lambda c: GTEEncoder.from_pretrained(c.model, default_prompt_name="query"),
        ValueError,
        "default_prompt_name 'query' is not one of the prompts",
    ),
    "load: truncate_dim past the dimension": (
        lambda c: GTEEncoder.from_pretrained(c.model, truncate_dim=1000),
        ValueError,
        "truncate_dim 1000 is more than",
    ),
    "load: a malformed config_sentence_transformers.json": (
        lambda c: GTEEncoder.from_pretrained(
            (c.model_with(), c.file("model/config_sentence_transformers.json", '{"prompts": ["query: "]}'))[0]
        ),
        ConfigError,
        "prompts must map prompt names to prompt strings",
    ),
    # -- the adapters --------------------------------------------------------------------------------
    "langchain: embed_documents(str)": (lambda c: c.langchain.embed_documents("one"), TypeError, "embed_query"),
    "langchain: embed_query(list)": (lambda c: c.langchain.embed_query(["a"]), TypeError, "takes a str"),
    "langchain: unknown keyword": (lambda c: type(c.langchain)(batchsize=8), ValueError, "batchsize"),
    "langchain: a missing model": (
        lambda c: type(c.langchain)(model_name="/no/dir"),
        FileNotFoundError,
        "/no/dir",
    ),
    "langchain: set a missing model": (
        lambda c: setattr(c.langchain, "model_name", "/no/dir"),
        FileNotFoundError,
        "/no/dir",
    ),
    "llama_index: a non-string": (lambda c: c.llama_index.get_text_embedding(5), TypeError, "texts[0] is int"),
    "llama_index: batch_size=": (lambda c: type(c.llama_index)(batch_size=8), ValueError, "batch_size"),
    "llama_index: misspelt name": (lambda c: type(c.llama_index)(modle_name="x"), ValueError, "modle_name"),
    "llama_index: a prompt and an instruction": (
        lambda c: type(c.llama_index)(model_name=c.model, query_prompt="q: ", query_instruction="q:"),
        ValueError,
        "give query_prompt or query_instruction, not both",
    ),
    "llama_index: set a missing model": (
        lambda c: setattr(c.llama_index, "model_name", "/no/dir"),
        FileNotFoundError,
        "/no/dir",
    ),
    # -- gte-jax embed -------------------------------------------------------------------------------
    "embed: no input": (lambda c: c.cli("embed", "--model", c.model), 2, "give a corpus file"),
    "embed: no --output": (lambda c: _embed(c, c.file("c.txt", "a\n")), 2, "--output"),
    "embed: a missing model": (lambda c: c.cli("embed", "--text", "a", "--model", "/no/model"), 2, "/no/model"),
    "embed: a broken config.json": (
        lambda c: c.cli("embed", "--text", "a", "--model", c.model_with({"layer_norm_eps": "tiny"})),
        2,
        "layer_norm_eps is 'tiny'",
    ),
    "embed: a missing input": (lambda c: _embed(c, "nope.txt", "-o", "out"), 2, "no such"),
    "embed: an unknown suffix": (lambda c: _embed(c, c.file("c.csv", "a\n"), "-o", "out"), 2, "--format"),
    "embed: --batch-size -5": (lambda c: c.cli("embed", "--text", "a", "--batch-size", "-5"), 2, "positive integer"),
    "embed: --shard-size 0": (lambda c: _embed(c, c.file("c.txt", "a\n"), "-o", "o", "--shard-size", 0), 2, "positive"),
    "embed: --max-length past the model": (
        lambda c: _embed(c, c.file("c.txt", "a\n"), "-o", "out", "--max-length", 1000),
        2,
        "max_length 1000 is out of range",
    ),
    "embed: invalid UTF-8": (lambda c: _embed(c, c.file("c.txt", b"ok\n\xff\xfe\n"), "-o", "out"), 2, "c.txt line 2"),
    "embed: id field = text field": (
        lambda c: _embed(c, c.file("c.jsonl", '{"text": "a"}\n'), "-o", "out", "--id-field", "text"),
        2,
        "both name 'text'",
    ),
    "embed: a lone surrogate id": (
        lambda c: _embed(c, c.file("c.jsonl", '{"id": "a", "text": "x"}\n{"id": "\\udc80", "text": "y"}\n'), "-o", "o"),
        2,
        "c.jsonl line 2",
    ),
    "embed: a uint64 id past int64": (
        lambda c: _embed(c, c.parquet([1, 2**63, 3], pa.uint64()), "-o", "out"),
        2,
        "outside the int64 range",
    ),
    "embed: --precision int4": (lambda c: c.cli("embed", "--text", "a", "--precision", "int4"), 2, "invalid choice"),
    "embed: --truncate-dim past the model": (
        lambda c: _embed(c, c.file("c.txt", "a\n"), "-o", "out", "--truncate-dim", 1000),
        2,
        "--truncate-dim 1000 is more than the model's 384 dimensions",
    ),
    "embed: an unknown --prompt-name": (
        lambda c: _embed(c, c.file("c.txt", "a\n"), "-o", "out", "--prompt-name", "query"),
        2,
        "--prompt-name: prompt_name 'query'",
    ),
    "embed: --calibration for float32": (
        lambda c: _embed(c, c.file("c.txt", "a\n"), "-o", "out", "--calibration", c.file("r.npy", b"")),
        2,
        "does not apply to --precision float32",
    ),
    "embed: int8 --text without --calibration": (
        lambda c: _embed(c, "--text", "a", "--precision", "int8"),
        2,
        "needs fixed ranges for --text or stdin",
    ),
    "embed: int8 ranges from one row": (
        lambda c: _embed(c, c.file("c.txt", "a\n"), "-o", "out", "--precision", "int8"),
        2,
        "cannot compute int8/uint8 ranges from 1 text(s)",
    ),
    "embed: a calibration .npy of the wrong shape": (
        lambda c: _embed(
            c, c.file("c.txt", "a\nb\n"), "-o", "out", "--precision", "uint8", "--calibration", _npy(c, np.zeros(384))
        ),
        2,
        "int8/uint8 ranges are a [2, 384] float array",
    ),
    "embed: a calibration of identical texts": (
        lambda c: _embed(
            c,
            c.file("c.txt", "a\nb\n"),
            "-o",
            "out",
            "--precision",
            "int8",
            "--calibration",
            c.file("s.txt", "x\n" * 5),
        ),
        2,
        "have no usable width",
    ),
    "embed: --text that is not UTF-8": (
        lambda c: _embed(c, "--text", os.fsdecode(b"caf\xe9")),
        2,
        "--text 1: invalid UTF-8 at byte 3",
    ),
    "embed: a calibration file of another kind": (
        lambda c: _embed(
            c, c.file("c.txt", "a\n"), "-o", "out", "--precision", "int8", "--calibration", c.file("r.csv", "x")
        ),
        2,
        "use a .npy of [2, dim] ranges, or a .txt, .jsonl or .parquet",
    ),
    "embed: output is a file": (lambda c: _embed(c, c.file("c.txt", "a\n"), "-o", c.file("f", "x")), 2, "is a file"),
    "embed: a manifest that is a list": (
        lambda c: _embed(c, c.file("c.txt", "a\n"), "-o", c.output_with("_manifest.json", "[1, 2]")),
        2,
        "_manifest.json is corrupt",
    ),
    "embed: a truncated manifest": (
        lambda c: _embed(c, c.file("c.txt", "a\n"), "-o", c.output_with("_manifest.json", '{"format_vers')),
        2,
        "_manifest.json is corrupt",
    ),
    "embed: a stranger's directory": (
        lambda c: _embed(c, c.file("c.txt", "a\n"), "-o", c.output_with("notes.txt", "mine")),
        2,
        "notes.txt",
    ),
    # -- gte-jax serve (refused before the model loads) ---------------------------------------------
    "serve: an empty --api-key": (lambda c: _serve(c, "--api-key", ""), 2, "--api-key is empty"),
    "serve: an empty $GTE_JAX_API_KEY": (
        lambda c: _serve(c, env={"GTE_JAX_API_KEY": ""}),
        2,
        "$GTE_JAX_API_KEY is empty",
    ),
    "serve: an --api-key with a trailing space": (lambda c: _serve(c, "--api-key", "k "), 2, "ends with whitespace"),
    "serve: a non-ASCII --api-key": (lambda c: _serve(c, "--api-key", "clé"), 2, "not a printable ASCII"),
    "serve: uvicorn missing": (lambda c: _serve(c, missing="uvicorn"), 2, 'pip install ".[serve]"'),
    "serve: --body-timeout 0": (lambda c: _serve(c, "--body-timeout", "0"), 2, "positive number of seconds"),
    # -- gte-jax convert -----------------------------------------------------------------------------
    "convert: a missing source": (lambda c: c.cli("convert", "/no/such/model", "out"), 2, "/no/such/model"),
    "convert: OUT is a file": (
        lambda c: c.cli("convert", c.model, c.file("taken", "x"), "--no-verify"),
        2,
        "exists and is not a directory",
    ),
    "convert: OUT is not empty": (
        lambda c: c.cli("convert", c.model, c.output_with("keep.txt", "x"), "--no-verify"),
        2,
        "exists and is not empty",
    ),
    "convert: truncated weights": (
        lambda c: c.cli("convert", c.model_with(truncated="model.safetensors"), "out", "--no-verify"),
        2,
        "is corrupt or truncated",
    ),
    "convert: a malformed config.json": (
        lambda c: c.cli("convert", c.model_with({"num_hidden_layers": -2}), "out", "--no-verify"),
        2,
        "num_hidden_layers is -2",
    ),
}


# -- gte-jax train: a table of its own (rows for other commands go in CASES above) ---------------------------


def _train(c: Ctx, data: str, *args: Any, loss: str = "cosent", model: str | None = None) -> tuple[int, str]:
    """``gte-jax train`` on ``data``; ``model`` None: a name that is never loaded (the check comes first)."""
    return c.cli("train", "--model", model or "never-loaded", "--data", data, "--loss", loss, "--output", "o", *args)


def _pairs(c: Ctx, *rows: str) -> str:
    return c.file("p.jsonl", "".join(r + "\n" for r in rows))


_PAIR = '{"sentence1": "a", "sentence2": "b", "score": 0.5}'
_OTHER = '{"sentence1": "c", "sentence2": "d", "score": 0.9}'

TRAIN_CASES: dict[str, tuple] = {
    "train: a lone surrogate": (
        lambda c: _train(c, _pairs(c, _PAIR, '{"sentence1": "a", "sentence2": "b \\udc80", "score": 1}')),
        2,
        "p.jsonl line 2: 'sentence2' holds a lone surrogate ('\\udc80' at character 2)",
    ),
    "train: a 400-digit score": (
        lambda c: _train(c, _pairs(c, '{"sentence1": "a", "sentence2": "b", "score": ' + "9" * 400 + "}")),
        2,
        "p.jsonl line 1: 'score' is '99999999999999999999... (400 characters)', not a finite number",
    ),
    "train: a score past float32": (
        lambda c: _train(c, _pairs(c, '{"sentence1": "a", "sentence2": "b", "score": 1e39}')),
        2,
        "'score' is 1e+39, not a finite number",
    ),
    "train: infonce on scored pairs": (
        lambda c: _train(c, _pairs(c, _PAIR), loss="infonce"),
        2,
        "the infonce loss takes every row as an anchor and its positive and has no use for the 'score' column",
    ),
    "train: an --eval file of one row": (
        lambda c: _train(c, _pairs(c, _PAIR, _OTHER), "--eval", c.file("e.jsonl", _PAIR + "\n")),
        2,
        "e.jsonl: every 'score' is 0.5 (1 rows), and Spearman's correlation with equal scores is undefined",
    ),
    "train: --max-length 1": (lambda c: _train(c, _pairs(c, _PAIR), "--max-length", 1), 2, "--max-length 1 leaves"),
    "train: --max-length past the model": (
        lambda c: _train(c, _pairs(c, _PAIR), "--max-length", 1000, model=c.model),
        2,
        "--max-length: max_length 1000 is out of range",
    ),
    "train: --seed -1": (lambda c: _train(c, _pairs(c, _PAIR), "--seed", -1), 2, "must be from 0 to 4294967295"),
    "train: --seed past 64 bits": (
        lambda c: _train(c, _pairs(c, _PAIR), "--seed", 2**64),
        2,
        "must be from 0 to 4294967295",
    ),
    "train: --lr inf": (lambda c: _train(c, _pairs(c, _PAIR), "--lr", "inf"), 2, "--lr: must be a finite number"),
    "train: --weight-decay inf": (
        lambda c: _train(c, _pairs(c, _PAIR), "--weight-decay", "inf"),
        2,
        "--weight-decay: must be a finite number",
    ),
    "train: --checkpoint-dir is a file": (
        lambda c: _train(c, _pairs(c, _PAIR), "--checkpoint-dir", c.file("ck", "x")),
        2,
        "ck is a file; name a folder",
    ),
    "train: --output holds gte_jax.safetensors": (
        lambda c: _train(c, _pairs(c, _PAIR), "--output", c.output_with("gte_jax.safetensors", "x")),
        2,
        "out already holds gte_jax.safetensors",
    ),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_bad_input_gives_a_clear_error(case, minilm_dir, tmp_path):
    call, expected, fragment = TRAIN_CASES[case]
    code, stderr = call(Ctx(None, None, None, model=minilm_dir, folder=str(tmp_path)))
    assert code == expected, stderr
    assert fragment in stderr, stderr
    assert "Traceback" not in stderr


@pytest.fixture(scope="module")
def adapters(minilm_dir):
    from llama_index.embeddings.gte_jax import GTEEmbedding

    from langchain_gte_jax import GTEEmbeddings

    return GTEEmbeddings(model_name=minilm_dir), GTEEmbedding(model_name=minilm_dir)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_a_clear_error(case, minilm, minilm_dir, adapters, tmp_path):
    call, expected, fragment = CASES[case]
    ctx = Ctx(minilm, *adapters, model=minilm_dir, folder=str(tmp_path))
    if isinstance(expected, int):
        code, stderr = call(ctx)
        assert code == expected, stderr
        assert fragment in stderr, stderr
        assert "Traceback" not in stderr
    else:
        with pytest.raises(expected) as err:
            call(ctx)
        assert fragment in str(err.value)
