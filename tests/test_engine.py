"""The engine's contracts: the backend's batching defaults, shared encoders and their release,
warm-up of a sample's buckets, and a CLI that answers --help without JAX."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref

import pytest

from gte_jax import GTEEncoder
from gte_jax.corpus.job import EmbedJob, run
from gte_jax.engine import batching

from compiles import CompileCounter


def test_cli_help_does_not_import_jax():
    code = (
        "import sys\n"
        "from gte_jax.cli import main\n"
        "for argv in (['--help'], ['embed', '--help'], ['convert', '--help'], ['demo', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'torch')), file=sys.stderr)\n"
    )
    run_ = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "usage: gte-jax embed" in run_.stdout
    assert run_.stderr.strip().splitlines()[-1] == "[]"


def test_encoder_defaults_to_the_backends_batching(minilm):
    assert (minilm.batch_size, minilm.max_batch_tokens) == batching.default_batching("cpu") == (64, 1024)
    assert batching.default_batching("gpu") == batching.default_batching("tpu") == (256, 65536)


def test_embed_job_leaves_the_step_size_to_the_encoder(minilm_dir, tmp_path, monkeypatch):
    corpus = tmp_path / "c.txt"
    corpus.write_text("one\ntwo\nthree\n")
    seen = []
    encode_tokens = GTEEncoder.encode_tokens
    monkeypatch.setattr(
        GTEEncoder, "encode_tokens", lambda self, ids, **kw: seen.append(kw) or encode_tokens(self, ids, **kw)
    )
    run(EmbedJob(input=str(corpus), output=str(tmp_path / "out"), model=minilm_dir, quiet=True))
    assert seen and all(kw.get("batch_size") is None for kw in seen)  # None: the encoder's backend default
    run(EmbedJob(input=str(corpus), output=str(tmp_path / "out8"), model=minilm_dir, quiet=True, batch_size=8))
    assert seen[-1]["batch_size"] == 8


def test_shared_encoders_are_released(minilm_dir):
    first = GTEEncoder.shared(minilm_dir, max_length=48)
    assert GTEEncoder.shared(minilm_dir + "/", max_length=48, dtype="float32") is first  # same key
    gone = weakref.ref(first)
    del first
    assert GTEEncoder.release(minilm_dir) >= 1
    gc.collect()
    assert gone() is None  # weights and programs freed once nothing else holds the encoder
    assert GTEEncoder.release(minilm_dir) == 0


@pytest.mark.slow
def test_warmup_of_a_sample_compiles_only_its_buckets(minilm_dir):
    enc = GTEEncoder.from_pretrained(minilm_dir, max_length=128)
    sample = ["a short query", "a somewhat longer passage about retrieval " * 4]
    with CompileCounter() as warm:
        n = enc.warmup(sample)
    assert 0 < n < len(enc.runner.shapes(enc.batch_size))
    assert warm.count >= n
    with CompileCounter() as after:
        enc.encode(sample * 20)
        enc.encode(sample[:1])
    assert after.count == 0


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_batch_settings_must_be_positive_integers(minilm, value):
    with pytest.raises(ValueError, match="positive integer"):
        minilm.encode(["x"], batch_size=value)
