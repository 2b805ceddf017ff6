"""`gte-jax embed` in this process: input formats, the output layout, bad rows, refused reruns, quick mode."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gte_jax.cli import main
from gte_jax.corpus.job import load_encoder

from corpus_data import embed, read_result, texts, write_jsonl, write_txt

SHARD = 64


@pytest.fixture(scope="module")
def enc(minilm_dir):
    """The encoder the job itself uses (GTEEncoder.shared), so programs compile once for the module."""
    return load_encoder(minilm_dir, dtype="float32", max_length=None)


def test_txt_corpus(tmp_path, minilm_dir, enc):
    lines = texts(150)
    lines[5] = ""  # an empty text is embedded like any other
    corpus = write_txt(tmp_path / "corpus.txt", lines)
    out = tmp_path / "out"
    assert embed(corpus, "--model", minilm_dir, "--output", out, "--shard-size", SHARD) == 0

    assert sorted(os.listdir(out)) == ["_manifest.json"] + [f"part-0000{k}.parquet" for k in range(3)]
    table = pq.read_table(out)
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    assert [pq.read_metadata(out / f"part-0000{k}.parquet").num_rows for k in range(3)] == [64, 64, 22]
    ids, vectors = read_result(out)
    assert ids == list(range(150))  # 0-based line numbers
    np.testing.assert_allclose(vectors, enc.encode(lines), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["settings"]["dimension"] == 384 and manifest["settings"]["max_length"] == 256
    assert manifest["settings"]["dtype"] == "float32" and manifest["settings"]["normalize"] is True
    assert manifest["rows"] == {"input": 150, "embedded": 150, "invalid": 0, "blank": 0}
    assert [s["file"] for s in manifest["shards"]] == [f"part-0000{k}.parquet" for k in range(3)]


def test_jsonl_corpus_with_string_ids(tmp_path, minilm_dir, enc):
    docs = texts(70)
    path = tmp_path / "corpus.jsonl"
    write_jsonl(path, [{"doc": f"d{i:03d}", "body": t, "extra": [i]} for i, t in enumerate(docs)])
    with open(path, "a") as f:
        f.write("\n")  # a trailing blank line holds no record
    out = tmp_path / "out"
    code = embed(path, "--model", minilm_dir, "--output", out, "--shard-size", SHARD, "--text-field", "body",
                 "--id-field", "doc")  # fmt: skip
    assert code == 0
    ids, vectors = read_result(out)
    assert ids == [f"d{i:03d}" for i in range(70)]
    np.testing.assert_allclose(vectors, enc.encode(docs), atol=1e-5)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["settings"]["id_type"] == "string"
    assert manifest["rows"] == {"input": 71, "embedded": 70, "invalid": 0, "blank": 1}


def test_parquet_corpus_read_in_row_groups(tmp_path, minilm_dir, enc):
    docs = texts(100)
    path = tmp_path / "corpus.parquet"
    table = pa.table({"id": pa.array(range(1000, 1100), pa.int32()), "text": docs, "n": range(100)})
    pq.write_table(table, path, row_group_size=30)  # row groups straddle shard boundaries
    out = tmp_path / "out"
    assert embed(path, "--model", minilm_dir, "--output", out, "--shard-size", 40) == 0
    ids, vectors = read_result(out)
    assert ids == list(range(1000, 1100))
    np.testing.assert_allclose(vectors, enc.encode(docs), atol=1e-5)
    assert pq.read_schema(out / "part-00000.parquet").field("id").type == pa.int64()


BAD_LINES = {
    "malformed JSON": (b'{"id": 6, "text": "unterminated\n', "malformed JSON"),
    "missing text": (b'{"id": 6, "body": "no text field"}\n', "no 'text' field"),
    "non-string text": (b'{"id": 6, "text": 42}\n', "'text' is a number, not a string"),
    "invalid UTF-8": (b'{"id": 6, "text": "caf\xe9"}\n', "invalid UTF-8 at byte"),
    "id of another type": (b'{"id": "six", "text": "x"}\n', "the id 'id' is a string, not an integer like the first"),
}


@pytest.mark.parametrize("bad", BAD_LINES, ids=list(BAD_LINES))
def test_bad_row_stops_then_skip_invalid_resumes(tmp_path, minilm_dir, capsys, bad):
    line, reason = BAD_LINES[bad]
    path = tmp_path / "corpus.jsonl"
    records = [json.dumps({"id": i, "text": t}).encode() + b"\n" for i, t in enumerate(texts(10))]
    records[6] = line  # line 7, in the second shard
    path.write_bytes(b"".join(records))
    out = tmp_path / "out"
    args = [path, "--model", minilm_dir, "--output", out, "--shard-size", 4]

    assert embed(*args) == 2
    err = capsys.readouterr().err
    assert f"{path} line 7: {reason}" in err and "--skip-invalid" in err
    assert sorted(os.listdir(out)) == ["_manifest.json", "part-00000.parquet"]  # nothing half-written, even hidden
    assert read_result(out)[0] == [0, 1, 2, 3]
    assert json.loads((out / "_manifest.json").read_text())["status"] == "stopped"

    assert embed(*args, "--skip-invalid") == 0  # resumes: shard 0 is kept, shards 1-2 are written
    assert read_result(out)[0] == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["rows"]["invalid"] == 1
    assert manifest["invalid_examples"][0]["where"] == f"{path} line 7"


def test_bad_txt_line_and_parquet_null(tmp_path, minilm_dir, capsys):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"fine\nalso fine\n\xff\xfe broken\n")
    assert embed(path, "--model", minilm_dir, "--output", tmp_path / "a") == 2
    assert f"{path} line 3: invalid UTF-8 at byte 0" in capsys.readouterr().err

    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"text": ["fine", None, "fine"]}), path)
    assert embed(path, "--model", minilm_dir, "--output", tmp_path / "b") == 2
    assert f"{path} row 1: 'text' is null" in capsys.readouterr().err

    pq.write_table(pa.table({"text": [1, 2]}), path)
    assert embed(path, "--model", minilm_dir, "--output", tmp_path / "c") == 2
    assert "column 'text' is int64; texts must be strings" in capsys.readouterr().err


def test_rerun_with_other_settings_is_refused(tmp_path, minilm_dir, capsys):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": t, "title": t[:5]} for t in texts(6)])
    out = tmp_path / "out"
    base = [corpus, "--model", minilm_dir, "--output", out, "--shard-size", 4]
    assert embed(*base) == 0
    assert embed(*base) == 0  # the same job again: nothing left to do
    assert read_result(out)[0] == list(range(6))
    capsys.readouterr()

    for extra, setting in [
        (["--max-length", 128], "max_length 256 (now 128)"),
        (["--dtype", "bfloat16"], "dtype 'float32' (now 'bfloat16')"),
        (["--text-field", "title"], "text_field 'text' (now 'title')"),
        (["--no-normalize"], "normalize True (now False)"),
    ]:
        assert embed(*base, *extra) == 2
        err = capsys.readouterr().err
        assert setting in err and "choose a new --output directory" in err, err
    assert embed(corpus, "--model", minilm_dir, "--output", out, "--shard-size", 3) == 2
    assert "shard_size 4 (now 3)" in capsys.readouterr().err

    other = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts(7)])  # the input changed in place
    assert embed(other, "--model", minilm_dir, "--output", out, "--shard-size", 4) == 2
    assert "input" in capsys.readouterr().err
    assert read_result(out)[0] == list(range(6))  # untouched

    stranger = tmp_path / "photos"
    stranger.mkdir()
    (stranger / "cat.jpg").write_bytes(b"")
    assert embed(*base[:3], "--output", stranger) == 2
    assert "not empty and has no _manifest.json" in capsys.readouterr().err


def test_empty_corpus(tmp_path, minilm_dir):
    corpus = write_txt(tmp_path / "empty.txt", [])
    assert embed(corpus, "--model", minilm_dir, "--output", tmp_path / "out") == 0
    table = pq.read_table(tmp_path / "out")
    assert table.num_rows == 0 and table.schema.field("embedding").type == pa.list_(pa.float32(), 384)


def test_quick_texts_and_stdin(minilm_dir, enc, capsys, monkeypatch):
    assert main(["embed", "--model", minilm_dir, "--text", "what is a tensor?", "--text", ""]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == [0, 1]
    np.testing.assert_allclose([r["embedding"] for r in rows], enc.encode(["what is a tensor?", ""]), atol=1e-6)

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"first line\r\nsecond line\n")))
    assert main(["embed", "-", "--model", minilm_dir]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == [0, 1]
    np.testing.assert_allclose([r["embedding"] for r in rows], enc.encode(["first line", "second line"]), atol=1e-6)


def test_usage_errors(tmp_path, minilm_dir, capsys):
    assert main(["embed", "--model", minilm_dir, str(tmp_path / "x.txt")]) == 2
    assert "--output DIR is required" in capsys.readouterr().err
    assert embed(tmp_path / "missing.txt", "--model", minilm_dir, "--output", tmp_path / "o") == 2
    assert "missing.txt: no such file" in capsys.readouterr().err
    assert embed(write_txt(tmp_path / "c.csv", ["a"]), "--model", minilm_dir, "--output", tmp_path / "o") == 2
    assert "pass --format" in capsys.readouterr().err


def test_wrong_text_field_then_the_corrected_run(tmp_path, minilm_dir, capsys):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts(10))])
    out = tmp_path / "out"
    assert embed(corpus, "--model", minilm_dir, "--output", out, "--text-field", "body") == 2
    err = capsys.readouterr().err
    assert f"{corpus} line 1: no 'body' field (as do the 9 rows after it)" in err, err
    assert "--text-field 'body' is probably wrong: the records have 'id', 'text'" in err, err
    assert "--skip-invalid" not in err  # it would skip every row
    assert not [n for n in os.listdir(out) if n.endswith(".parquet")]
    # the failed run wrote no shard, so its settings do not bind the output: the corrected command runs
    assert embed(corpus, "--model", minilm_dir, "--output", out) == 0
    assert read_result(out)[0] == list(range(10))
    assert json.loads((out / "_manifest.json").read_text())["settings"]["text_field"] == "text"


def test_a_bad_row_later_on_still_suggests_skip_invalid(tmp_path, minilm_dir, capsys):
    records = [{"text": t} for t in texts(3)] + [{"body": "x"}]
    corpus = write_jsonl(tmp_path / "corpus.jsonl", records)
    assert embed(corpus, "--model", minilm_dir, "--output", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"{corpus} line 4: no 'text' field; fix it, or pass --skip-invalid" in err, err


@pytest.mark.parametrize(
    "options, fragment",
    [
        (["--model", "/no/such/model"], "/no/such/model"),
        (["--truncate-dim", "1000"], "--truncate-dim 1000 is more than"),
        (["--prompt-name", "query"], "--prompt-name: prompt_name 'query'"),
        (["--precision", "int8", "--calibration", "missing.npy"], "missing.npy"),
    ],
    ids=["bad model", "bad --truncate-dim", "bad --prompt-name", "missing --calibration"],
)
def test_failed_options_leave_no_output_directory(tmp_path, minilm_dir, capsys, options, fragment):
    corpus = write_txt(tmp_path / "corpus.txt", texts(3))
    out = tmp_path / "out"
    assert main(["embed", corpus, "--model", minilm_dir, "--output", str(out), "--quiet", *options]) == 2
    assert fragment in capsys.readouterr().err
    assert not out.exists()


def test_text_argument_that_is_not_utf8(minilm_dir, capsys):
    text = os.fsdecode(b"x\xed\xa0\x80")  # argv bytes that are not UTF-8: Python keeps them as lone surrogates
    assert main(["embed", "--model", minilm_dir, "--text", "fine", "--text", text]) == 2
    err = capsys.readouterr().err
    assert err == "gte-jax embed: error: --text 2: invalid UTF-8 at byte 1\n", err


def test_resume_says_what_was_done_and_counts_this_run(tmp_path, minilm_dir, capsys):
    corpus = write_txt(tmp_path / "corpus.txt", texts(10))
    out = tmp_path / "out"
    args = ["embed", corpus, "--model", minilm_dir, "--output", str(out), "--shard-size", "4"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "/10 [" in err and "10 rows embedded into 3 shard(s)" in err, err  # a .txt input's bar has a total
    os.remove(out / "part-00001.parquet")
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"resuming {out}: shards 0, 2 of 3 are done (6 rows); embedding the rest." in err, err
    assert "6/10 [" in err and "10/10 [" in err, err  # the bar starts at the rows already done
    assert f"4 rows embedded into 1 new shard(s); with the 2 done before, {out} holds 10 rows in 3 shard(s)" in err
    os.remove(out / "part-00000.parquet")
    os.remove(out / "part-00001.parquet")
    assert main(args) == 0
    assert "shard 2 of 3 is done (2 rows)" in capsys.readouterr().err
