"""`gte-jax train`: data files and their errors, the output folder, and a resume after SIGKILL."""

from __future__ import annotations

import contextlib
import decimal
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from gte_jax import GTEEncoder
from gte_jax.cli import main
from gte_jax.train.data import DataError, epoch_batches, read_examples

from processes import cpu_env
from train_batches import read_sts


@pytest.fixture(scope="module")
def sts_jsonl(tmp_path_factory) -> str:
    """80 STS-B dev pairs with score/5 as the label."""
    s1, s2, scores = read_sts("dev")
    path = tmp_path_factory.mktemp("data") / "sts.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for a, b, s in list(zip(s1, s2, scores, strict=True))[:80]:
            f.write(json.dumps({"sentence1": a, "sentence2": b, "score": s / 5}) + "\n")
    return str(path)


def _write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_reads_jsonl_csv_tsv_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [("a cat", "a kitten", "a dog"), ("the sea", "the ocean", "a desert")]
    names = ("anchor", "positive", "negative")
    jsonl = _write(tmp_path / "t.jsonl", "".join(json.dumps(dict(zip(names, r, strict=True))) + "\n" for r in rows))
    csv = _write(tmp_path / "t.csv", 'sentence1,sentence2,score\n"a, cat",a kitten,0.9\nthe sea,the ocean,1\n')
    tsv = _write(tmp_path / "t.tsv", "sentence1\tsentence2\tlabel\na cat\ta kitten\t0.9\n")
    pq.write_table(pa.table({"anchor": ["a cat"], "positive": ["a kitten"]}), tmp_path / "t.parquet")
    assert read_examples(jsonl).columns == ("anchor", "positive", "negative")
    assert read_examples(jsonl).texts[2] == ["a dog", "a desert"] and read_examples(jsonl).labels is None
    c = read_examples(csv)
    assert c.texts[0] == ["a, cat", "the sea"] and c.labels.tolist() == pytest.approx([0.9, 1.0])
    assert read_examples(tsv).labels.tolist() == pytest.approx([0.9])
    assert len(read_examples(str(tmp_path / "t.parquet"))) == 1


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("bad.jsonl", '{"anchor": "a", "positive": "b"}\n{"anchor": "a"\n', "line 2: not valid JSON"),
        ("bad.jsonl", '{"anchor": "a", "positive": "b"}\n\n{"anchor": "a"}\n', "line 3: missing 'positive'"),
        ("bad.jsonl", '{"anchor": "a", "positive": 3}\n', "line 1: 'positive' is a int, not a string"),
        ("bad.jsonl", '["a", "b"]\n', "line 1: a JSON list, not an object"),
        ("bad.csv", "sentence1,sentence2,score\na,b,0.5\nc,d,high\n", "line 3: 'score' is 'high', not a number"),
        ("bad.csv", "sentence1,sentence2,score\na,b,0.5,9\n", "line 2: 4 fields, but the header names 3"),
        ("bad.jsonl", '{"sentence1": "a", "sentence2": "b", "score": NaN}\n', "line 1: 'score' is nan"),
    ],
)
def test_a_bad_row_stops_with_file_and_line(tmp_path, capsys, name, text, message):
    path = _write(tmp_path / name, text)
    with pytest.raises(DataError, match=f"^{path} {message}"):
        read_examples(path)
    code = main(["train", "--model", "unused", "--data", path, "--loss", "gte", "--output", str(tmp_path / "o")])
    assert code == 2
    assert capsys.readouterr().err.startswith(f"gte-jax train: error: {path} {message}")


def test_cosent_needs_a_score(tmp_path, capsys):
    path = _write(tmp_path / "pairs.jsonl", '{"anchor": "a", "positive": "b"}\n')
    code = main(["train", "--model", "unused", "--data", path, "--loss", "cosent", "--output", str(tmp_path / "o")])
    assert code == 2 and "cosent loss needs two text columns" in capsys.readouterr().err


def test_epoch_batches_keep_the_remainder_rounded_to_the_devices():
    assert epoch_batches(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert epoch_batches(11, 4, multiple_of=2) == [(0, 4), (4, 8), (8, 10)]
    assert epoch_batches(9, 4, multiple_of=2) == [(0, 4), (4, 8)]


def _train(model_dir, data, output, *extra) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "gte_jax.cli", "train", "--model", model_dir, "--data", data, "--loss", "cosent"]
    cmd += ["--output", output, "--batch-size", "8", "--epochs", "2", "--max-length", "16", "--save-steps", "3"]
    return subprocess.Popen(
        [*cmd, "--quiet", *extra], env=cpu_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return err


def _weights(folder) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(os.path.join(folder, "model.safetensors"))


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_the_uninterrupted_weights(tiny_dir, sts_jsonl, tmp_path, capsys):
    """20 steps (2 epochs of 10) with dropout on, checkpoints every 3 steps; one run is SIGKILLed as soon as a
    checkpoint exists, then resumed: its final weights equal the uninterrupted run's bit for bit."""
    whole = _train(tiny_dir, sts_jsonl, str(tmp_path / "whole"), "--eval", sts_jsonl)
    killed_dir = tmp_path / "killed"
    killed = _train(tiny_dir, sts_jsonl, str(killed_dir))
    checkpoints = tmp_path / "killed.checkpoints"
    deadline = time.monotonic() + 300
    while killed.poll() is None and time.monotonic() < deadline:
        if checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir()):
            killed.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed_dir / "model.safetensors").exists()

    resumed_err = _finish(_train(tiny_dir, sts_jsonl, str(killed_dir), "--resume"))
    assert "resuming from step" in resumed_err
    assert _finish(whole).count("spearman") == 2  # --eval reports each epoch
    expected, resumed = _weights(tmp_path / "whole"), _weights(killed_dir)
    assert expected.keys() == resumed.keys()
    for key in expected:
        np.testing.assert_array_equal(resumed[key], expected[key], err_msg=key)

    # The output is a model folder gte_jax loads; a fresh run over the same checkpoints is refused.
    assert GTEEncoder.from_pretrained(str(killed_dir)).encode("a test").shape == (32,)
    args = ["train", "--model", tiny_dir, "--data", sts_jsonl, "--loss", "cosent", "--output", str(killed_dir)]
    assert main(args) == 2
    assert "--resume continues that run" in capsys.readouterr().err


# Short runs in-process: a tiny random BERT, 8 scored pairs, batches of 4 (2 steps an epoch), no dropout.


def _pairs(folder, rows: int = 8) -> str:
    path = folder / "pairs.jsonl"
    lines = [{"sentence1": f"a cat {i}", "sentence2": f"a kitten {i % 3}", "score": (i % 5) / 4} for i in range(rows)]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return str(path)


def _args(model_dir, data, output, *extra) -> list[str]:
    args = ["train", "--model", model_dir, "--data", data, "--loss", "cosent", "--output", str(output)]
    return [*args, "--batch-size", "4", "--max-length", "16", "--no-dropout", "--quiet", *map(str, extra)]


def _steps(folder) -> list[int]:
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_save_steps_dividing_the_epoch_save_each_step_once(tiny_dir, tmp_path, capsys):
    """--save-steps 1 over 2 epochs: the periodic save and the epoch's end name the same step (it crashed with
    StepAlreadyExistsError). The checkpoints go beside the model, which gets the usual permissions."""
    out = tmp_path / "model"
    with _umask(0o022):
        assert main(_args(tiny_dir, _pairs(tmp_path), out, "--epochs", 2, "--save-steps", 1)) == 0, capsys.readouterr()
    checkpoints = tmp_path / "model.checkpoints"
    assert _steps(checkpoints) == [3, 4]  # the two newest kept
    assert not (out / "checkpoints").exists()
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*")}
    assert modes == {name: 0o755 if (out / name).is_dir() else 0o644 for name in modes}
    assert {"model.safetensors", "config.json", "1_Pooling", "1_Pooling/config.json"} <= set(modes)
    first = _weights(out)

    # A resume from step 3 saves step 4 again (epoch 2's end), replacing its own checkpoint, and ends the same.
    shutil.rmtree(checkpoints / "4")
    capsys.readouterr()
    assert main(_args(tiny_dir, _pairs(tmp_path), out, "--epochs", 2, "--save-steps", 1, "--resume")) == 0
    assert "resuming from step 3" in capsys.readouterr().err
    assert _steps(checkpoints) == [3, 4]
    for key, value in _weights(out).items():
        np.testing.assert_array_equal(value, first[key], err_msg=key)

    # A fresh run over them is refused, saying what each way out does.
    assert main(_args(tiny_dir, _pairs(tmp_path), out, "--epochs", 2, "--save-steps", 1)) == 2
    err = capsys.readouterr().err
    assert f"--resume continues that run from step 4 and writes its model into {out}" in err
    assert "pass another --output" in err and "the new model then replaces the one in the output folder" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--lr", "1e30"), "training diverged at step 2 of 4 (the loss is nan)"),
        (("--lr", "1e38", "--weight-decay", "10"), "training diverged at step 1 of 4 (the weights hold NaN"),
    ],
)
def test_a_diverging_run_stops_before_saving_or_exporting_nan(tiny_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "model"
    args = _args(tiny_dir, _pairs(tmp_path), out, "--epochs", 2, "--save-steps", 1, "--max-grad-norm", 0)
    assert main([*args, "--warmup-ratio", "0", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gte-jax train: error: {message}") and err.count("\n") == 1, err
    assert "lower --lr" in err
    assert not (out / "model.safetensors").exists()
    diverged = int(message.split("step ")[1].split()[0])
    assert all(step < diverged for step in _steps(tmp_path / "model.checkpoints"))


def test_resume_never_takes_or_deletes_a_folder_it_did_not_write(tiny_dir, tmp_path, capsys):
    """User folders named like steps in the checkpoint folder: --resume restored from them (a traceback) and
    rotation deleted them; now the run is refused and they stay."""
    checkpoints = tmp_path / "ck"
    for name in ("1", "3", "12"):
        (checkpoints / name).mkdir(parents=True)
    (checkpoints / "1" / "data.txt").write_text("precious")
    args = _args(tiny_dir, _pairs(tmp_path), tmp_path / "model", "--checkpoint-dir", checkpoints, "--save-steps", 1)
    assert main([*args, "--resume"]) == 2
    assert f"{checkpoints / '1'} is not a checkpoint of gte-jax train" in capsys.readouterr().err
    assert (checkpoints / "1" / "data.txt").read_text() == "precious" and _steps(checkpoints) == [1, 3, 12]
    assert not (tmp_path / "model" / "model.safetensors").exists()


@pytest.fixture(scope="module")
def two_checkpoints(tiny_dir, tmp_path_factory) -> tuple[str, list[str]]:
    """A finished run's checkpoint folder (steps 1 and 2), and the arguments that resume it."""
    folder = tmp_path_factory.mktemp("run")
    args = _args(tiny_dir, _pairs(folder), folder / "model", "--save-steps", 1)
    assert main(args) == 0
    return str(folder / "model.checkpoints"), args


def _cut(path) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


CORRUPTIONS = {
    "a truncated data file": (lambda ck: _cut(max(_files(ck / "2"), key=os.path.getsize)), "2"),
    "no _METADATA": (lambda ck: next(p for p in _files(ck / "2") if p.name == "_METADATA").unlink(), "2"),
    "a garbage manifest.ocdbt": (
        lambda ck: next(p for p in _files(ck / "2") if p.name == "manifest.ocdbt").write_bytes(b"garbage" * 40),
        "2",
    ),
    "a corrupt train_args.json": (lambda ck: (ck / "train_args.json").write_text('{"model": '), "train_args.json"),
}


def _files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_corrupt_checkpoint_is_named_with_what_to_do(two_checkpoints, tmp_path, capsys, case):
    source, args = two_checkpoints
    corrupt, named = CORRUPTIONS[case]
    checkpoints = tmp_path / "ck"
    shutil.copytree(source, checkpoints)
    corrupt(checkpoints)
    assert main([*args, "--checkpoint-dir", str(checkpoints), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gte-jax train: error: ") and err.count("\n") == 1, err
    assert str(checkpoints / named) in err and "corrupt" in err
    assert ("delete that folder to resume from step 1" if named == "2" else "delete it to resume") in err


# Data files


def test_a_bad_utf8_byte_is_reported_on_its_own_line(tmp_path):
    good = json.dumps({"anchor": "a cat sat", "positive": "a kitten"}) + "\n"
    for bad_line in (2, 1501):
        path = tmp_path / f"bad{bad_line}.jsonl"
        path.write_bytes(good.encode() * (bad_line - 1) + b'{"anchor": "\xff", "positive": "b"}\n' + good.encode())
        with pytest.raises(DataError, match=f"line {bad_line}: not UTF-8 text"):
            read_examples(str(path))
        csv_path = tmp_path / f"bad{bad_line}.csv"
        csv_path.write_bytes(b"anchor,positive\n" + b"a,b\n" * (bad_line - 2) + b"\xff,b\na,b\n")
        with pytest.raises(DataError, match=f"line {bad_line}: not UTF-8 text"):
            read_examples(str(csv_path))


def test_a_utf8_bom_is_not_part_of_the_data(tmp_path):
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + json.dumps({"anchor": "a", "positive": "b"}).encode() + b"\n")
    assert read_examples(str(jsonl)).columns == ("anchor", "positive")
    csv_path = tmp_path / "bom.csv"
    csv_path.write_bytes(b"\xef\xbb\xbfsentence1,sentence2,score\na,b,0.5\n")
    examples = read_examples(str(csv_path))
    assert examples.columns == ("sentence1", "sentence2") and examples.labels.tolist() == [0.5]


def test_parquet_decimal_scores_are_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    scores = pa.array([decimal.Decimal("1.50"), decimal.Decimal("0.25")], pa.decimal128(5, 2))
    pq.write_table(
        pa.table({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "score": scores}), tmp_path / "d.parquet"
    )
    assert read_examples(str(tmp_path / "d.parquet")).labels.tolist() == [1.5, 0.25]


def test_an_undefined_spearman_says_why():
    from gte_jax.train.evaluate import describe

    assert describe("spearman", 0.81234) == "spearman 0.8123"
    assert "undefined" in describe("spearman", float("nan")) and "nan" not in describe("spearman", float("nan"))
