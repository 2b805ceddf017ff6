"""`gte-jax embed` on inputs and options it must refuse clearly, and a model whose embeddings are not finite."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from gte_jax.cli import main

from checkpoints import TINY, torch_bert, write_checkpoint
from corpus_data import embed, read_result, texts, tmp_files, write_jsonl, write_txt


@pytest.fixture(scope="module")
def nan_model_dir(tmp_path_factory, minilm_dir) -> str:
    """A tiny checkpoint whose word embedding for ``music`` is NaN: texts with that word embed to NaN."""
    with open(os.path.join(minilm_dir, "vocab.txt"), encoding="utf-8") as f:
        music = f.read().split("\n").index("music")
    model = torch_bert(TINY, seed=1)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[music] = float("nan")
    return write_checkpoint(model, str(tmp_path_factory.mktemp("nan-model")), minilm_dir)


def test_non_finite_embeddings_fail_the_shard(tmp_path, nan_model_dir, capsys):
    lines = [f"line {i} about rivers" for i in range(10)]
    lines[5] = lines[6] = "a line about music"  # rows 5 and 6: lines 6 and 7, in shard 1
    corpus = write_txt(tmp_path / "corpus.txt", lines)
    out = tmp_path / "out"
    for extra in ([], ["--skip-invalid"]):  # not an input problem: skipping rows does not hide it
        assert embed(corpus, "--model", nan_model_dir, "--output", out, "--shard-size", 4, *extra) == 2
        err = capsys.readouterr().err
        assert f"NaN or infinite embeddings for {corpus} line 6, {corpus} line 7; nothing of shard 1" in err, err
    assert sorted(os.listdir(out)) == ["_manifest.json", "part-00000.parquet"]
    assert read_result(out)[0] == [0, 1, 2, 3]
    assert json.loads((out / "_manifest.json").read_text())["status"] == "stopped"


def test_parquet_uint64_id_above_int64(tmp_path, minilm_dir, capsys):
    path = tmp_path / "corpus.parquet"
    ids = pa.array([1, 2**63, 3], pa.uint64())
    pq.write_table(pa.table({"id": ids, "text": texts(3)}), path)
    out = tmp_path / "out"
    assert embed(path, "--model", minilm_dir, "--output", out) == 2
    err = capsys.readouterr().err
    assert f"{path} row 1: the id 'id' is {2**63}, outside the int64 range" in err and "--skip-invalid" in err, err
    assert embed(path, "--model", minilm_dir, "--output", out, "--skip-invalid") == 0
    assert read_result(out)[0] == [1, 3]


def test_jsonl_id_with_a_lone_surrogate(tmp_path, minilm_dir, capsys):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"id": "a", "text": "x"}\n{"id": "\\udc80", "text": "y"}\n{"id": "c", "text": "z"}\n')
    out = tmp_path / "out"
    assert embed(path, "--model", minilm_dir, "--output", out) == 2
    err = capsys.readouterr().err
    assert f"{path} line 2: the id 'id' holds a lone surrogate escape" in err and "--skip-invalid" in err, err
    assert embed(path, "--model", minilm_dir, "--output", out, "--skip-invalid") == 0
    assert read_result(out)[0] == ["a", "c"]


def test_id_field_same_as_text_field(tmp_path, minilm_dir, capsys):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts(3))])
    assert embed(corpus, "--model", minilm_dir, "--output", tmp_path / "out", "--id-field", "text") == 2
    assert "--id-field and --text-field both name 'text'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything was created

    # With --text-field id and no --id-field, the texts are not also taken as ids: rows are numbered.
    corpus = write_jsonl(tmp_path / "d.jsonl", [{"id": t} for t in texts(3)])
    assert embed(corpus, "--model", minilm_dir, "--output", tmp_path / "out2", "--text-field", "id") == 0
    assert read_result(tmp_path / "out2")[0] == [0, 1, 2]


@pytest.mark.parametrize(
    "option, value",
    [("--batch-size", "0"), ("--batch-size", "-5"), ("--shard-size", "0"), ("--max-length", "0")],
)
def test_sizes_must_be_positive(tmp_path, minilm_dir, capsys, option, value):
    corpus = write_txt(tmp_path / "corpus.txt", texts(3))
    with pytest.raises(SystemExit) as exit_:
        main(["embed", corpus, "--model", minilm_dir, "--output", str(tmp_path / "out"), option, value])
    assert exit_.value.code == 2
    assert f"argument {option}: must be a positive integer, got {value}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_max_length_beyond_the_model(tmp_path, minilm_dir, capsys):
    corpus = write_txt(tmp_path / "corpus.txt", texts(3))
    assert embed(corpus, "--model", minilm_dir, "--output", tmp_path / "out", "--max-length", 1000) == 2
    assert "max_length 1000 is out of range" in capsys.readouterr().err


def test_same_size_edit_in_the_middle_of_a_big_input_is_a_settings_change(tmp_path, minilm_dir, capsys):
    pad = "p" * 800_000  # 4 records of 800 KB: the file is over 3 MiB, the texts are short
    corpus = tmp_path / "corpus.jsonl"
    write_jsonl(corpus, [{"text": t, "pad": pad} for t in texts(4)])
    out = tmp_path / "out"
    assert embed(corpus, "--model", minilm_dir, "--output", out) == 0
    data = bytearray(corpus.read_bytes())
    middle = data.index(b"pppp", len(data) // 2)
    assert len(data) > 3 << 20 and (1 << 20) < middle < len(data) - (1 << 20)
    data[middle] = ord("q")
    corpus.write_bytes(bytes(data))  # same size, same first and last MiB
    capsys.readouterr()
    assert embed(corpus, "--model", minilm_dir, "--output", out) == 2
    err = capsys.readouterr().err
    assert "holds embeddings made with different settings" in err and "'sha256'" in err, err
    assert tmp_files(out) == []
