"""Cross-encoder fine-tuning: one step's BCE loss and gradients equal sentence-transformers' CrossEncoder loss on a
random-init BertForSequenceClassification, and `gte-jax train --loss bce` exports a folder CrossEncoder loads with
gte_jax's scores."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import optax
import pytest
from flax import nnx

from gte_jax.engine.loading import load
from gte_jax.engine.sharding import default_mesh
from gte_jax.models.bert import FAMILY as BERT
from gte_jax.models.heads import cross_encoder_conversion
from gte_jax.train.data import DataError, Examples, check_for_loss, tokenize_pairs
from gte_jax.train.step import StepOptions, Trainer, make_loss

from processes import cpu_env
from train_batches import LR, read_sts

ROWS = 16


def _pairs(rows: int = ROWS) -> tuple[list[str], list[str], np.ndarray]:
    """STS-B dev pairs; labels hard (0/1) for half the rows and soft (score / 5) for the rest."""
    s1, s2, scores = read_sts("dev")
    soft = np.asarray(scores[:rows], np.float32) / 5
    labels = np.where(np.arange(rows) % 2 == 0, (soft > 0.5).astype(np.float32), soft)
    return s1[:rows], s2[:rows], labels


def _flat(state: nnx.State) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}


@pytest.mark.slow
def test_bce_gradients_equal_sentence_transformers(cross_encoder_dir):
    """Dropout off: the loss and every parameter's gradient (encoder, pooler, classifier) equal PyTorch's through
    sentence-transformers' CrossEncoder BinaryCrossEntropyLoss, on pairs tokenised as one sequence each."""
    import torch
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    first, second, labels = _pairs()
    loaded = load(cross_encoder_dir, mesh=default_mesh(), num_labels=1)
    trainer = Trainer(
        loaded.model, make_loss("bce"), optax.sgd(LR), options=StepOptions(dropout=False, cross_encoder=True)
    )
    examples = Examples("sts-dev", ("query", "document"), (first, second), labels, "label")
    batch = tokenize_pairs(examples, loaded.tokenizer).batch(np.arange(ROWS))
    loss, grads = trainer.grads(trainer.init(0), trainer.shard_batch(batch))
    grads = _flat(grads)

    ce = CrossEncoder(cross_encoder_dir, device="cpu")
    ce.eval()  # dropout off; gradients still flow
    reference = BinaryCrossEntropyLoss(ce)([first, second], torch.tensor(labels))
    reference.backward()
    assert abs(float(loss) - reference.item()) <= 1e-5 * abs(reference.item())

    conversion = cross_encoder_conversion(BERT.conversion, BERT.head)
    expected: dict[str, np.ndarray] = {}
    for key, param in ce.transformers_model.named_parameters():
        if param.grad is not None:
            expected.update(conversion.to_nnx(key, param.grad.numpy(), loaded.model.config) or {})
    assert expected.keys() == grads.keys()
    assert any(k.startswith("head.classifier") for k in grads) and any(k.startswith("head.pooler") for k in grads)
    floor = 1e-3 * np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in expected.values()))
    errors = {k: np.linalg.norm(grads[k] - e) / max(np.linalg.norm(e), floor) for k, e in expected.items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-4, (worst, errors[worst])


def test_trainer_refuses_a_cross_encoder_without_the_option(cross_encoder_dir):
    loaded = load(cross_encoder_dir, mesh=default_mesh(), num_labels=1)
    with pytest.raises(ValueError, match="cross_encoder=False"):
        Trainer(loaded.model, make_loss("bce"), optax.sgd(LR))


def test_bce_labels_outside_0_1_name_the_row(tmp_path):
    examples = Examples(
        "pairs.jsonl", ("query", "document"), (["a", "b"], ["c", "d"]), np.asarray([1, 4], np.float32), "score"
    )
    with pytest.raises(DataError, match=r"pairs.jsonl row 2: 'score' is 4; the bce loss takes labels from 0 to 1"):
        check_for_loss(examples, "bce")


@pytest.mark.slow
def test_train_bce_exports_a_cross_encoder_folder(cross_encoder_dir, tmp_path):
    """`gte-jax train --loss bce` on a *ForSequenceClassification checkpoint (found from config.json): the folder
    loads in CrossEncoder (labels, activation) and in GTEReranker with the same scores, and training moved them."""
    from sentence_transformers import CrossEncoder

    from gte_jax import GTEReranker

    first, second, labels = _pairs(32)
    data = tmp_path / "pairs.jsonl"
    rows = zip(first, second, labels.tolist(), strict=True)
    data.write_text("".join(json.dumps({"query": a, "document": b, "label": y}) + "\n" for a, b, y in rows))
    out = tmp_path / "trained"
    cmd = [sys.executable, "-m", "gte_jax.cli", "train", "--model", cross_encoder_dir, "--data", str(data)]
    cmd += ["--loss", "bce", "--output", str(out), "--batch-size", "16", "--lr", "1e-3", "--quiet"]
    done = subprocess.run(cmd, env=cpu_env(1), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and config["num_labels"] == 1
    assert config["sentence_transformers"]["activation_fn"].endswith("Sigmoid")
    pairs = list(zip(first[:8], second[:8], strict=True))
    ce = CrossEncoder(str(out), device="cpu")
    ours = GTEReranker.from_pretrained(str(out)).predict(pairs)
    np.testing.assert_allclose(ce.predict(pairs), ours, atol=1e-5)
    before = GTEReranker.from_pretrained(cross_encoder_dir).predict(pairs)
    assert np.abs(ours - before).max() > 1e-3


def test_train_bce_on_an_embedding_model_says_what_to_do(minilm_dir, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"query": "a", "document": "b", "label": 1}) + "\n")
    cmd = [sys.executable, "-m", "gte_jax.cli", "train", "--model", minilm_dir, "--data", str(data), "--loss", "bce"]
    done = subprocess.run([*cmd, "--output", str(tmp_path / "o")], env=cpu_env(1), capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and "--cross-encoder" in done.stderr


def test_bfloat16_cross_encoder_step_stays_close_to_float32(cross_encoder_dir):
    """Mixed precision rebuilds the encoder and its head in bf16; the loss stays near float32's."""
    first, second, labels = _pairs(8)
    loaded = load(cross_encoder_dir, mesh=default_mesh(), num_labels=1)
    examples = Examples("sts-dev", ("query", "document"), (first, second), labels, "label")
    losses = []
    for dtype in (None, "bfloat16"):
        options = StepOptions(dropout=False, cross_encoder=True, compute_dtype=dtype)
        trainer = Trainer(loaded.model, make_loss("bce"), optax.sgd(LR), options=options)
        batch = trainer.shard_batch(tokenize_pairs(examples, loaded.tokenizer).batch(np.arange(8)))
        loss, grads = trainer.grads(trainer.init(0), batch)
        assert all(g.dtype == np.float32 for g in _flat(grads).values())
        losses.append(float(loss))
    assert abs(losses[1] - losses[0]) <= 2e-2 * abs(losses[0])
