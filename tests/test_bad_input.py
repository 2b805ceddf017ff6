"""Every bad input of the encoder, the adapters and the CLI, with the error it must give: one table.

A row is ``(target, call, expected, fragment)``: ``call`` gets the target (an encoder, an adapter
object, or ``cli``: a function running ``gte-jax ARGS`` in-process that returns ``(exit code, stderr)``)
and must raise ``expected`` (an exception type), or, for the CLI, exit with code ``expected`` (an int);
the message must contain ``fragment``. Add a row here for each new mistake a user can make.
"""

from __future__ import annotations

import contextlib
import io

import pytest

from gte_jax.cli import main as cli_main


def _cli(tmp_path):
    def run(*args: str) -> tuple[int, str]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.chdir(tmp_path):
            try:
                code = cli_main([str(a) for a in args])
            except SystemExit as e:  # argparse
                code = e.code
        return code, err.getvalue()

    return run


def _file(name: str, content: str | bytes) -> str:
    """A file in the test's working directory (the CLI's tmp_path)."""
    mode = "wb" if isinstance(content, bytes) else "w"
    with open(name, mode) as f:
        f.write(content)
    return name


M = "MODEL"  # replaced by the MiniLM directory in CLI arguments

CASES = {
    # -- GTEEncoder.encode -------------------------------------------------------------------------
    "encode: a non-string item": ("encoder", lambda e: e.encode(["ok", 3]), TypeError, "texts[1] is int"),
    "encode: None": ("encoder", lambda e: e.encode(None), TypeError, "not NoneType"),
    "encode: bytes": ("encoder", lambda e: e.encode(b"abc"), TypeError, "decode it first"),
    "encode: a bytes item": ("encoder", lambda e: e.encode(["a", b"b"]), TypeError, "texts[1] is bytes"),
    "encode: a dict": ("encoder", lambda e: e.encode({"a": "x"}), TypeError, "mapping"),
    "encode: a lone surrogate": ("encoder", lambda e: e.encode(["ok", "bad \udc80"]), ValueError, "texts[1]"),
    "encode: batch_size 0": ("encoder", lambda e: e.encode(["a"], batch_size=0), ValueError, "batch_size"),
    "encode: batch_size -3": ("encoder", lambda e: e.encode(["a"], batch_size=-3), ValueError, "positive"),
    # -- the adapters --------------------------------------------------------------------------------
    "langchain: embed_documents(str)": ("langchain", lambda a: a.embed_documents("one"), TypeError, "embed_query"),
    "langchain: embed_query(list)": ("langchain", lambda a: a.embed_query(["a"]), TypeError, "takes a str"),
    "langchain: unknown keyword": ("langchain", lambda a: type(a)(batchsize=8), ValueError, "batchsize"),
    "langchain: a missing model": ("langchain", lambda a: type(a)(model_name="/no/dir"), FileNotFoundError, "/no/dir"),
    "langchain: set a missing model": (
        "langchain",
        lambda a: setattr(a, "model_name", "/no/dir"),
        FileNotFoundError,
        "/no/dir",
    ),
    "llama_index: a non-string": ("llama_index", lambda a: a.get_text_embedding(5), TypeError, "texts[0] is int"),
    "llama_index: batch_size=": ("llama_index", lambda a: type(a)(batch_size=8), ValueError, "batch_size"),
    "llama_index: misspelt name": ("llama_index", lambda a: type(a)(modle_name="x"), ValueError, "modle_name"),
    "llama_index: set a missing model": (
        "llama_index",
        lambda a: setattr(a, "model_name", "/no/dir"),
        FileNotFoundError,
        "/no/dir",
    ),
    # -- gte-jax embed -------------------------------------------------------------------------------
    "embed: no input": ("cli", lambda cli: cli("embed", "--model", M), 2, "give a corpus file"),
    "embed: no --output": ("cli", lambda cli: cli("embed", _file("c.txt", "a\n"), "--model", M), 2, "--output"),
    "embed: a missing model": (
        "cli",
        lambda cli: cli("embed", "--text", "a", "--model", "/no/such/model"),
        2,
        "/no/such/model",
    ),
    "embed: a missing input": ("cli", lambda cli: cli("embed", "nope.txt", "-o", "out", "--model", M), 2, "no such"),
    "embed: an unknown suffix": (
        "cli",
        lambda cli: cli("embed", _file("c.csv", "a\n"), "-o", "out", "--model", M),
        2,
        "--format",
    ),
    "embed: --batch-size -5": ("cli", lambda cli: cli("embed", "--text", "a", "--batch-size", "-5"), 2, "batch-size"),
    "embed: invalid UTF-8": (
        "cli",
        lambda cli: cli("embed", _file("c.txt", b"ok\n\xff\xfe\n"), "-o", "out", "--model", M),
        2,
        "c.txt line 2",
    ),
    # -- gte-jax convert -----------------------------------------------------------------------------
    "convert: a missing source": ("cli", lambda cli: cli("convert", "/no/such/model", "out"), 2, "/no/such/model"),
}


@pytest.fixture(scope="module")
def targets(minilm, minilm_dir):
    from llama_index.embeddings.gte_jax import GTEEmbedding

    from langchain_gte_jax import GTEEmbeddings

    return {
        "encoder": minilm,
        "langchain": GTEEmbeddings(model_name=minilm_dir),
        "llama_index": GTEEmbedding(model_name=minilm_dir),
    }


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_a_clear_error(case, targets, minilm_dir, tmp_path, monkeypatch):
    target, call, expected, fragment = CASES[case]
    if target == "cli":
        run = _cli(tmp_path)
        monkeypatch.chdir(tmp_path)  # _file writes here
        code, stderr = call(lambda *args: run(*(minilm_dir if a == M else a for a in args)))
        assert code == expected, stderr
        assert fragment in stderr, stderr
        assert "Traceback" not in stderr
    else:
        with pytest.raises(expected) as err:
            call(targets[target])
        assert fragment in str(err.value)
