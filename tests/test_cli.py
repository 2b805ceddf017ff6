"""The `gte-jax` command's answers to user mistakes: one line and exit 2 from every subcommand (the UserError
funnel), the subcommand's own usage for a mistyped option, help that says what needs torch, and install lines
for missing extras that work from the checkout."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from gte_jax.checkpoints.hub import ModelNotFoundError
from gte_jax.cli import main
from gte_jax.corpus.calibration import CalibrationError
from gte_jax.corpus.job import EmbeddingError, JobConflict, OptionError
from gte_jax.corpus.shards import OutputError
from gte_jax.corpus.sources import InputError
from gte_jax.errors import CheckpointError, ConfigError, MissingExtraError, UserError
from gte_jax.serve.schemas import RequestError
from gte_jax.train.checkpoint import CheckpointMismatch
from gte_jax.train.data import DataError
from gte_jax_convert.cli import OutputExistsError, OutputNotADirectoryError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# command -> a user mistake in it, given a scratch directory and the MiniLM directory.
MISTAKES = {
    "demo": lambda tmp, model: ["demo", "--model", str(tmp / "nope")],
    "embed": lambda tmp, model: ["embed", str(tmp / "missing.jsonl"), "--model", model, "-o", str(tmp / "out")],
    "convert": lambda tmp, model: ["convert", str(tmp / "nope"), str(tmp / "out")],
    "train": lambda tmp, model: [
        "train",
        "--model",
        model,
        "--data",
        str(tmp / "missing.jsonl"),
        "--loss",
        "cosent",
        "-o",
        str(tmp / "o"),
    ],  # fmt: skip
    "serve": lambda tmp, model: ["serve", "--model", str(tmp / "nope"), "--port", str(_free_port())],
}


@pytest.mark.parametrize("command", list(MISTAKES))
def test_a_user_mistake_is_one_line_and_exit_2(command, tmp_path, minilm_dir, capsys):
    code = main(MISTAKES[command](tmp_path, minilm_dir))  # a UserError escaping here would be the bug
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"gte-jax {command}: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert str(tmp_path) in err  # names the file it is about


@pytest.mark.parametrize("model", ["./nope", "thenlper/gte-smal"])
def test_demo_with_a_wrong_model_exits_2_without_a_traceback(model, tmp_path, minilm_dir):
    env = {**os.environ, "HF_HOME": str(tmp_path)}  # offline (conftest), and nothing cached
    res = subprocess.run(
        [sys.executable, "-m", "gte_jax.cli", "demo", "--model", model], capture_output=True, text=True, env=env
    )
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"gte-jax demo: error: {model!r}") or line.startswith(
        f"gte-jax demo: error: Could not load model {model!r}"
    )
    if "/" in model and not model.startswith("."):  # a Hub id: the way out offline is the bundled model
        assert minilm_dir in line and "gte-jax demo --print-model-dir" in line


@pytest.mark.parametrize(
    ("error", "old_base"),
    [
        (ConfigError, ValueError),
        (CheckpointError, ValueError),
        (ModelNotFoundError, FileNotFoundError),
        (InputError, ValueError),
        (CalibrationError, ValueError),
        (OptionError, Exception),
        (JobConflict, Exception),
        (EmbeddingError, Exception),
        (OutputError, Exception),
        (DataError, ValueError),
        (CheckpointMismatch, ValueError),
        (RequestError, Exception),
        (OutputExistsError, FileExistsError),
        (OutputNotADirectoryError, NotADirectoryError),
        (MissingExtraError, ImportError),
    ],
)
def test_error_classes_share_the_user_error_base_and_keep_their_own(error, old_base):
    assert issubclass(error, UserError) and issubclass(error, old_base)
    assert str(error("what to fix")) == "what to fix"


def test_a_mistyped_option_prints_the_subcommands_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["embed", "--text", "x", "--modle=m"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("usage: gte-jax embed ") and "--text-field" in err  # embed's options, not the top level
    assert "gte-jax embed: error: unrecognized arguments: --modle=m" in err


def test_convert_help_describes_it_and_says_what_needs_torch(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["convert", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "gte_jax.safetensors" in out and "loads without torch" in out  # a description
    assert "examples:\n  gte-jax convert thenlper/gte-small " in out
    assert "pytorch_model.bin" in out and "need torch" in out and 'pip install ".[torch]"' in out


def test_prompt_name_error_speaks_in_command_line_terms(minilm_dir, capsys):
    code = main(["embed", "--model", minilm_dir, "--text", "x", "--prompt-name", "query"])
    err = capsys.readouterr().err
    assert code == 2
    assert "config_sentence_transformers.json" in err and "drop --prompt-name" in err
    assert "from_pretrained" not in err and "prompt=" not in err


def _run_without(module: str, code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh process where ``module`` cannot be imported (as if its extra were not installed)."""
    return subprocess.run(
        [sys.executable, "-c", f"import sys; sys.modules[{module!r}] = None\n{code}"], capture_output=True, text=True
    )


def test_train_without_its_extra_says_how_to_install_it(tmp_path):
    args = ["train", "--model", "m", "--data", "d.jsonl", "--loss", "cosent", "-o", str(tmp_path / "o")]
    res = _run_without("optax", f"from gte_jax.cli import main; raise SystemExit(main({args!r}))")
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("gte-jax train: error: fine-tuning needs optax from the train extra")
    assert 'pip install ".[train]" in the gte-jax checkout' in line


@pytest.mark.parametrize(("module", "extra"), [("ray", "ray"), ("mteb", "mteb")])
def test_optional_modules_name_the_install_line_from_the_checkout(module, extra):
    res = _run_without(module, f"import gte_jax.{module}")
    assert res.returncode == 1
    assert f"MissingExtraError: gte_jax.{module} " in res.stderr
    assert f'pip install ".[{extra}]" in the gte-jax checkout (gte-jax is not on PyPI)' in res.stderr
