"""The train step: gradients equal sentence-transformers' on real weights, dropout only in training, GradCache and
remat equal the plain step, and 8 devices or 2 processes equal 1 device on the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import optax
import pytest
from flax import nnx

from gte_jax import GTEEncoder
from gte_jax.engine.loading import load
from gte_jax.engine.sharding import default_mesh
from gte_jax.models.bert import FAMILY as BERT
from gte_jax.train.losses import GTE_DIRECTIONS
from gte_jax.train.step import StepOptions, Trainer, make_loss

from processes import cpu_env, free_port
from train_batches import LR, ROWS, train_batch, train_examples

WORKER = os.path.join(os.path.dirname(__file__), "train_worker.py")


def _flat(state: nnx.State) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load(tiny_dir, mesh=default_mesh(), max_length=32)


def _grads(loaded, **options) -> tuple[float, dict[str, np.ndarray]]:
    trainer = Trainer(loaded.model, make_loss("gte"), optax.sgd(LR), options=StepOptions(**options))
    loss, grads = trainer.grads(trainer.init(0), trainer.shard_batch(train_batch(loaded.tokenizer)))
    return float(loss), _flat(grads)


@pytest.fixture(scope="module")
def tiny_plain(tiny):
    return _grads(tiny, dropout=False)


@pytest.mark.slow
def test_gradients_equal_sentence_transformers(minilm: GTEEncoder, minilm_dir):
    """GTE's four-direction loss with a hard negative, dropout off: every parameter's gradient on
    all-MiniLM-L6-v2 equals the one PyTorch computes through sentence-transformers."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    trainer = Trainer(minilm.model, make_loss("gte"), optax.sgd(LR), options=StepOptions(dropout=False))
    loss, grads = trainer.grads(trainer.init(0), trainer.shard_batch(train_batch(minilm.tokenizer)))
    grads = _flat(grads)

    st = SentenceTransformer(minilm_dir, device="cpu")
    st.eval()  # dropout off; gradients still flow
    examples = train_examples()
    features = [st.tokenize(column) for column in examples.texts]
    reference = MultipleNegativesRankingLoss(st, directions=GTE_DIRECTIONS)(features, torch.zeros(ROWS))
    reference.backward()
    assert abs(float(loss) - reference.item()) <= 1e-5 * abs(reference.item())
    expected = {}
    for name, param in st[0].auto_model.named_parameters():
        mapped = BERT.conversion.to_nnx(name, param.grad.numpy(), minilm.config) if param.grad is not None else None
        if mapped is not None:  # the pooler: no gradient, no NNX parameter
            expected.update(mapped)
    assert expected.keys() == grads.keys()
    # Relative to the tensor's gradient, or to a thousandth of the whole gradient for tensors whose gradient is
    # (mathematically) zero: the key biases shift every score of a softmax row alike, so both sides give noise.
    floor = 1e-3 * np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in expected.values()))
    errors = {k: np.linalg.norm(grads[k] - e) / max(np.linalg.norm(e), floor) for k, e in expected.items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-4, (worst, errors[worst])


def test_dropout_changes_gradients_not_eval_outputs(tiny, tiny_plain):
    before = np.asarray(tiny.model(*_ids(tiny)))
    loss, grads = _grads(tiny, dropout=True)
    assert loss != tiny_plain[0]
    assert max(_rel(grads[k], tiny_plain[1][k]) for k in grads) > 1e-2
    assert tiny.model.deterministic  # the trainer leaves the model in eval mode
    tiny.model.train()
    tiny.model.eval()
    after = np.asarray(tiny.model(*_ids(tiny)))
    np.testing.assert_array_equal(after, before)


def _ids(loaded):
    batch = train_batch(loaded.tokenizer)
    B, C, T = batch["input_ids"].shape
    return batch["input_ids"].reshape(B * C, T), batch["attention_mask"].reshape(B * C, T)


@pytest.mark.parametrize("options", [{"mini_batch_size": 4}, {"remat": True}], ids=["gradcache", "remat"])
def test_memory_savers_equal_plain_step(tiny, tiny_plain, options):
    loss, grads = _grads(tiny, dropout=False, **options)
    assert abs(loss - tiny_plain[0]) <= 1e-5 * abs(tiny_plain[0])
    for k in grads:
        assert np.abs(grads[k] - tiny_plain[1][k]).max() <= 1e-5 * max(np.abs(tiny_plain[1][k]).max(), 1e-3), k


@pytest.fixture(scope="module")
def one_device_step(tiny):
    trainer = Trainer(tiny.model, make_loss("gte"), optax.sgd(LR), options=StepOptions(dropout=False))
    state, metrics = trainer.step(trainer.init(0), trainer.shard_batch(train_batch(tiny.tokenizer)))
    return float(metrics["loss"]), _flat(state.params)


def _run_worker(tiny_dir, out, devices, *options) -> subprocess.Popen:
    cmd = [sys.executable, WORKER, tiny_dir, str(out), *map(str, options)]
    return subprocess.Popen(cmd, env=cpu_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _check_same_step(out, one_device_step, prefix: str = "") -> None:
    saved = np.load(out)
    loss, params = one_device_step
    assert abs(float(saved[prefix + "loss"]) - loss) <= 1e-6 * max(abs(loss), 1.0)
    for k, v in params.items():
        assert np.abs(saved[prefix + k] - v).max() <= 1e-5, prefix + k


@pytest.mark.slow
def test_eight_devices_equal_one(tiny_dir, one_device_step, tmp_path):
    """The batch split 8 ways, every query scored against all 48 candidates: the 1-device step, also in GradCache
    mode with 2 chunks of 8 examples (one per device each)."""
    proc = _run_worker(tiny_dir, tmp_path / "step.npz", 8, "--mini-batch-size", 8)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert '"devices": 8' in out and '"data": 8' in out
    _check_same_step(tmp_path / "step.npz", one_device_step)
    _check_same_step(tmp_path / "step.npz", one_device_step, "cached/")


@pytest.mark.slow
def test_two_processes_equal_one(tiny_dir, one_device_step, tmp_path):
    port = free_port()
    procs = [
        _run_worker(tiny_dir, tmp_path / "step.npz", 2, "--process-id", i, "--num-processes", 2, "--port", port)
        for i in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        assert '"devices": 4' in out and '"data": 4' in out
    _check_same_step(tmp_path / "step.npz", one_device_step)


def test_train_mode_needs_dropout_randomness(tiny):
    ids, mask = _ids(tiny)
    tiny.model.train()
    try:
        with pytest.raises(ValueError, match="rngs=nnx.Rngs"):
            tiny.model(ids, mask)
        first = tiny.model(ids, mask, rngs=nnx.Rngs(dropout=0))
        np.testing.assert_array_equal(tiny.model(ids, mask, rngs=nnx.Rngs(dropout=0)), first)  # same key, same mask
        assert not np.array_equal(tiny.model(ids, mask, rngs=nnx.Rngs(dropout=1)), first)
    finally:
        tiny.model.eval()


def test_bfloat16_compute_keeps_float32_parameters(tiny, tiny_plain):
    loss, grads = _grads(tiny, dropout=False, compute_dtype="bfloat16")
    assert abs(loss - tiny_plain[0]) <= 2e-2 * abs(tiny_plain[0])
    assert all(g.dtype == np.float32 for g in grads.values())
