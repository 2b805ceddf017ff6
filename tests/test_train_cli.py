"""`gte-jax train`: data files and their errors, the output folder, and a resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
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
    checkpoints = killed_dir / "checkpoints"
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
    assert "pass --resume to continue it" in capsys.readouterr().err
