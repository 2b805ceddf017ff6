"""`gte-jax embed` with the encode options: --precision (one set of int8/uint8 ranges per output),
--calibration, --truncate-dim and --prompt-name, on the real MiniLM weights, in this process."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gte_jax.corpus.job import load_encoder
from gte_jax.engine.quantization import quantize_embeddings

from corpus_data import embed, texts, write_jsonl, write_txt

SHARD = 64


@pytest.fixture(scope="module")
def enc(minilm_dir):
    """The encoder the job itself uses (GTEEncoder.shared), so programs compile once for the module."""
    return load_encoder(minilm_dir, dtype="float32", max_length=None)


def read(out) -> tuple[pa.Schema, np.ndarray]:
    table = pq.read_table(str(out))
    ids = np.asarray(table.column("id"))
    width = table.schema.field("embedding").type.list_size
    vectors = np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(len(ids), width)
    return table.schema, vectors[np.argsort(ids)]


def manifest(out) -> dict:
    return json.loads((out / "_manifest.json").read_text())


def assert_at_most_one_step(ours: np.ndarray, expected: np.ndarray) -> None:
    """Equal but where a float sits on a step boundary (the job's batches differ from one encode call's)."""
    steps = np.abs(ours.astype(np.int16) - expected.astype(np.int16))
    assert steps.max() <= 1 and (steps > 0).mean() <= 0.005


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_one_set_of_ranges_for_every_shard(tmp_path, minilm_dir, enc, precision):
    lines = texts(100)
    corpus = write_txt(tmp_path / "corpus.txt", lines)
    out = tmp_path / "out"
    assert embed(corpus, "--model", minilm_dir, "-o", out, "--shard-size", SHARD, "--precision", precision) == 0

    record = manifest(out)
    assert record["settings"]["precision"] == precision and record["settings"]["dimension"] == 384
    quantization = record["quantization"]
    assert quantization["precision"] == precision and "first 64 texts" in quantization["from"]
    ranges = np.asarray(quantization["ranges"], dtype=np.float32)
    assert ranges.shape == (2, 384)
    floats = enc.encode(lines)
    first_shard = floats[:SHARD]  # the ranges come from shard 0; shard 1 is quantised with them too
    np.testing.assert_allclose(ranges, [first_shard.min(axis=0), first_shard.max(axis=0)], atol=1e-6)

    schema, stored = read(out)
    assert schema.field("embedding").type == pa.list_(pa.int8() if precision == "int8" else pa.uint8(), 384)
    assert_at_most_one_step(stored, quantize_embeddings(floats, precision, ranges=ranges))

    # a resumed run reuses the manifest's ranges: the redone shard is the one it replaces
    os.remove(out / "part-00001.parquet")
    assert embed(corpus, "--model", minilm_dir, "-o", out, "--shard-size", SHARD, "--precision", precision) == 0
    np.testing.assert_array_equal(read(out)[1], stored)
    assert manifest(out)["quantization"] == quantization


def test_another_precision_is_refused_on_rerun(tmp_path, minilm_dir, capsys):
    corpus = write_txt(tmp_path / "corpus.txt", texts(10))
    out = tmp_path / "out"
    assert embed(corpus, "--model", minilm_dir, "-o", out, "--precision", "int8") == 0
    capsys.readouterr()
    for extra in (["--precision", "binary"], ["--precision", "int8", "--truncate-dim", "64"], []):
        assert embed(corpus, "--model", minilm_dir, "-o", out, *extra) == 2
        assert "holds embeddings made with different settings" in capsys.readouterr().err


@pytest.mark.parametrize(("precision", "value_type"), [("binary", pa.int8()), ("ubinary", pa.uint8())])
def test_binary_schema_is_packed_bits(tmp_path, minilm_dir, enc, precision, value_type):
    lines = texts(20)
    corpus = write_txt(tmp_path / "corpus.txt", lines)
    for dim, width in ((None, 48), (100, 13)):
        out = tmp_path / f"out-{dim}"
        extra = ["--truncate-dim", dim] if dim else []
        assert embed(corpus, "--model", minilm_dir, "-o", out, "--precision", precision, *extra) == 0
        schema, stored = read(out)
        assert schema.field("embedding").type == pa.list_(value_type, width)
        floats = enc.encode(lines, truncate_dim=dim)
        expected = quantize_embeddings(floats, precision)
        flipped = np.unpackbits(stored.view(np.uint8), axis=1) != np.unpackbits(expected.view(np.uint8), axis=1)
        assert np.all(np.abs(floats[flipped[:, : floats.shape[1]]]) < 1e-5)  # a sign flip only at about zero
        assert manifest(out)["settings"]["dimension"] == (dim or 384) and "quantization" not in manifest(out)


def test_calibration_files(tmp_path, minilm_dir, enc):
    lines = texts(30)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"id": i, "body": t} for i, t in enumerate(lines)])
    calibration = [f"calibration text number {i} about music and rain" for i in range(12)]
    # texts to embed: the ranges are theirs
    path = write_jsonl(tmp_path / "calibration.jsonl", [{"body": t} for t in calibration])
    out = tmp_path / "from-texts"
    assert embed(corpus, "--model", minilm_dir, "-o", out, "--text-field", "body", "--precision", "int8",
                 "--calibration", path, "--truncate-dim", 128) == 0  # fmt: skip
    floats = enc.encode(calibration, truncate_dim=128)
    ranges = np.asarray(manifest(out)["quantization"]["ranges"])
    np.testing.assert_allclose(ranges, [floats.min(axis=0), floats.max(axis=0)], atol=1e-6)
    assert manifest(out)["quantization"]["from"] == f"12 texts of {path}"
    assert manifest(out)["settings"]["calibration"]["path"] == os.path.abspath(path)
    # ranges themselves, from a .npy
    fixed = np.vstack([np.full(384, -0.2), np.full(384, 0.2)]).astype(np.float32)
    np.save(tmp_path / "ranges.npy", fixed)
    out = tmp_path / "from-npy"
    assert embed(corpus, "--model", minilm_dir, "-o", out, "--text-field", "body", "--precision", "uint8",
                 "--calibration", tmp_path / "ranges.npy") == 0  # fmt: skip
    np.testing.assert_array_equal(manifest(out)["quantization"]["ranges"], fixed)
    assert_at_most_one_step(read(out)[1], quantize_embeddings(enc.encode(lines), "uint8", ranges=fixed))


def test_prompt_name(tmp_path, minilm_with_prompts, capsys):
    model = minilm_with_prompts({"query": "query: "})
    lines = texts(10)
    corpus = write_txt(tmp_path / "corpus.txt", lines)
    out = tmp_path / "out"
    assert embed(corpus, "--model", model, "-o", out, "--prompt-name", "query") == 0
    enc = load_encoder(model, dtype="float32", max_length=None)
    np.testing.assert_allclose(read(out)[1], enc.encode(lines, prompt_name="query"), atol=1e-5)
    assert manifest(out)["settings"]["prompt"] == "query: "
    assert manifest(out)["settings"]["prompt_name"] == "query"
    capsys.readouterr()
    assert embed(corpus, "--model", model, "-o", tmp_path / "o2", "--prompt-name", "passage") == 2
    assert "--prompt-name: prompt_name 'passage' is not one of this model's prompts" in capsys.readouterr().err


def test_quick_mode_options(minilm_dir, enc, capsys, monkeypatch, tmp_path):
    args = ["--model", minilm_dir, "--text", "what is a tensor?", "--text", "a pair of shoes"]
    assert embed(*args, "--precision", "ubinary", "--truncate-dim", 64) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = quantize_embeddings(enc.encode(["what is a tensor?", "a pair of shoes"], truncate_dim=64), "ubinary")
    assert [r["embedding"] for r in rows] == expected.tolist()
    fixed = np.vstack([np.full(384, -0.2), np.full(384, 0.2)]).astype(np.float32)
    np.save(tmp_path / "ranges.npy", fixed)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"what is a tensor?\n")))
    assert embed("-", "--model", minilm_dir, "--precision", "int8", "--calibration", tmp_path / "ranges.npy") == 0
    row = json.loads(capsys.readouterr().out)
    assert row["id"] == 0 and len(row["embedding"]) == 384 and all(-128 <= v <= 127 for v in row["embedding"])


def _ranges(low: float, high: float) -> np.ndarray:
    return np.vstack([np.full(384, low), np.full(384, high)]).astype(np.float32)


DEGENERATE = {
    # name: (the --calibration file's content, what the message says); all used to give identical vectors, exit 0
    "100 identical texts": ("same line\n" * 100, "ranges of 100 texts of"),
    "blank lines": ("\n" * 20, "ranges of 20 texts of"),
    "min == max": (_ranges(0.1, 0.1), "have no usable width"),
    "a denormal width": (_ranges(0, 1e-45), "have no usable width"),
    "NaN": (_ranges(np.nan, 1), "hold NaN or infinity"),
    "overflowing width": (_ranges(-3e38, 3e38), "too wide for float32"),
}


@pytest.mark.parametrize("case", DEGENERATE)
def test_degenerate_calibration_is_refused_before_the_output_exists(tmp_path, minilm_dir, capsys, case):
    content, fragment = DEGENERATE[case]
    corpus = write_txt(tmp_path / "corpus.txt", texts(50))
    if isinstance(content, str):
        path = write_txt(tmp_path / "calibration.txt", content.split("\n")[:-1])
    else:
        path = str(tmp_path / "calibration.npy")
        np.save(path, content)
    out = tmp_path / "out"
    assert embed(corpus, "--model", minilm_dir, "-o", out, "--precision", "uint8", "--calibration", path) == 2
    err = capsys.readouterr().err
    assert fragment in err and path in err and "dimension 0 and 383 more" in err, err
    assert not out.exists()  # refused before anything was created


def test_ranges_far_too_wide_are_refused_at_the_first_piece(tmp_path, minilm_dir, capsys):
    corpus = write_txt(tmp_path / "corpus.txt", texts(50))
    path = str(tmp_path / "wide.npy")
    np.save(path, _ranges(-1e38, 1e38))  # finite width, but every vector of the corpus gets the same codes
    out = tmp_path / "out"
    assert embed(corpus, "--model", minilm_dir, "-o", out, "--precision", "int8", "--calibration", path) == 2
    err = capsys.readouterr().err
    assert f"the int8/uint8 ranges of {path} cannot be used" in err and "far too wide" in err, err
    assert not [n for n in os.listdir(out) if n.endswith(".parquet")]  # no shard of identical vectors
    assert embed("--text", "a cat", "--text", "a tensor", "--model", minilm_dir, "--precision", "int8",
                 "--calibration", path) == 2  # fmt: skip
    assert "far too wide" in capsys.readouterr().err


def test_damaged_manifest_ranges_are_named(tmp_path, minilm_dir, capsys):
    corpus = write_txt(tmp_path / "corpus.txt", texts(10))
    out = tmp_path / "out"
    args = [corpus, "--model", minilm_dir, "-o", out, "--precision", "int8", "--shard-size", 4]
    assert embed(*args) == 0
    record = manifest(out)
    record["quantization"]["ranges"] = "abc"  # hand-edited
    (out / "_manifest.json").write_text(json.dumps(record))
    os.remove(out / "part-00002.parquet")
    capsys.readouterr()
    assert embed(*args) == 2
    err = capsys.readouterr().err
    assert f"{out / '_manifest.json'} is damaged: its quantization.ranges cannot be used" in err, err
    assert "not 'abc'" in err and "restore the manifest" in err and "Traceback" not in err


def test_rerun_compares_settings_as_the_vectors_differ(tmp_path, minilm_dir, capsys):
    corpus = write_txt(tmp_path / "corpus.txt", texts(10))
    out = tmp_path / "out"
    assert embed(corpus, "--model", minilm_dir, "-o", out, "--precision", "int8") == 0
    capsys.readouterr()
    assert embed(corpus, "--model", minilm_dir, "-o", out) == 2  # no --precision: float32, not None
    assert "precision 'int8' (now 'float32')" in capsys.readouterr().err
    # --truncate-dim 384 on a 384-dimensional model is no --truncate-dim: the same job, either way round
    assert embed(corpus, "--model", minilm_dir, "-o", out, "--precision", "int8", "--truncate-dim", 384) == 0
    assert "truncate_dim" not in manifest(out)["settings"]
    full = tmp_path / "full"
    assert embed(corpus, "--model", minilm_dir, "-o", full, "--truncate-dim", 384, "--shard-size", 4) == 0
    os.remove(full / "part-00001.parquet")
    assert embed(corpus, "--model", minilm_dir, "-o", full, "--shard-size", 4) == 0
    assert sorted(n for n in os.listdir(full) if n.endswith(".parquet"))[1] == "part-00001.parquet"


def test_prompt_longer_than_max_length_is_refused(tmp_path, minilm_with_prompts, capsys):
    model = minilm_with_prompts({"long": "represent this sentence for retrieval " * 60})  # 300 tokens > 256
    corpus = write_txt(tmp_path / "corpus.txt", texts(10))
    out = tmp_path / "out"
    assert embed(corpus, "--model", model, "-o", out, "--prompt-name", "long") == 2
    err = capsys.readouterr().err
    assert "is 300 tokens, which with [CLS] and [SEP] fill max_length 256" in err, err
    assert "every text would get the same vector" in err and "--max-length" in err and err.count("\n") == 1
    assert not out.exists()
