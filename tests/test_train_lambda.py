"""Listwise cross-encoder fine-tuning (`--loss lambda`): one step's loss and gradients equal sentence-transformers'
cross-encoder LambdaLoss on a random-init BertForSequenceClassification for queries with different numbers of
documents, listwise files are checked row by row, and `gte-jax train --loss lambda` exports a folder CrossEncoder
loads."""

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
from gte_jax.train.data import DataError
from gte_jax.train.listwise import Listwise, read_listwise, tokenize_listwise
from gte_jax.train.step import StepOptions, Trainer, make_loss

from processes import cpu_env
from train_batches import LR, read_sts

DOCS_PER_QUERY = (3, 5, 1, 4)  # the single-document query adds no pair, only padding


def _lists(counts: tuple[int, ...] = DOCS_PER_QUERY) -> Listwise:
    """STS-B dev sentences: each query with the next sentences as documents, graded 0-5 by the rounded gold score
    of the document's own pair (ties included, as graded relevance has them)."""
    s1, s2, scores = read_sts("dev")
    queries, docs, labels = [], [], []
    start = 0
    for q, n in enumerate(counts):
        queries.append(s1[q])
        docs.append(s2[start : start + n])
        labels.append(np.round(np.asarray(scores[start : start + n], np.float32)))
        start += n
    return Listwise("sts-dev", queries, docs, labels)


def _flat(state: nnx.State) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}


@pytest.mark.slow
def test_lambda_gradients_equal_sentence_transformers(cross_encoder_dir):
    """Dropout off: the loss and every parameter's gradient (encoder, pooler, classifier) equal PyTorch's through
    sentence-transformers' CrossEncoder LambdaLoss (its defaults: NDCG-Loss2++, k=None, binary log), with the
    shorter lists padded to the batch's most documents."""
    import torch
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.losses import LambdaLoss

    lists = _lists()
    loaded = load(cross_encoder_dir, mesh=default_mesh(), num_labels=1)
    trainer = Trainer(
        loaded.model, make_loss("lambda"), optax.sgd(LR), options=StepOptions(dropout=False, cross_encoder=True)
    )
    batch = tokenize_listwise(lists, loaded.tokenizer).batch(np.arange(len(lists)))
    assert batch["input_ids"].shape[:2] == (4, 5) and np.isinf(batch["labels"]).sum() == 2 + 4 + 1
    loss, grads = trainer.grads(trainer.init(0), trainer.shard_batch(batch))
    grads = _flat(grads)

    ce = CrossEncoder(cross_encoder_dir, device="cpu")
    ce.eval()  # dropout off; gradients still flow
    reference = LambdaLoss(ce)([lists.queries, lists.docs], [torch.tensor(y) for y in lists.labels])
    reference.backward()
    assert reference.item() > 0
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


def _write_jsonl(path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_listwise_rows_with_a_label_per_document_are_required(tmp_path):
    good = {"query": "q", "docs": ["a", "b"], "labels": [1, 0]}
    path = _write_jsonl(tmp_path / "lists.jsonl", [good, {"query": "q", "docs": ["a", "b", "c"], "labels": [1, 0]}])
    with pytest.raises(DataError, match=r"lists.jsonl line 2: 'docs' holds 3 documents and 'labels' 2 labels"):
        read_listwise(path)
    path = _write_jsonl(tmp_path / "lists.jsonl", [good, {"query": "q", "docs": ["a", "b"], "labels": [1, "high"]}])
    with pytest.raises(DataError, match=r"lists.jsonl line 2: 'labels'\[1\] is 'high', not a number"):
        read_listwise(path)
    path = _write_jsonl(tmp_path / "lists.jsonl", [{"query": "q", "document": "a", "label": 1}])
    with pytest.raises(DataError, match=r"lists.jsonl line 1: missing 'docs', 'labels'; --loss lambda takes rows"):
        read_listwise(path)


def test_listwise_csv_holds_json_lists(tmp_path):
    path = tmp_path / "lists.csv"
    path.write_text('query,docs,labels\nq,"[""a"", ""b""]","[2, 0]"\nr,"[""c""]",1\n')
    with pytest.raises(DataError, match=r"lists.csv line 3: 'labels' is a int, not a list"):
        read_listwise(str(path))
    path.write_text('query,docs,labels\nq,"[""a"", ""b""]","[2, 0]"\n')
    lists = read_listwise(str(path))
    assert lists.docs == [["a", "b"]] and lists.labels[0].tolist() == [2.0, 0.0]


@pytest.mark.slow
def test_train_lambda_exports_a_cross_encoder_folder(cross_encoder_dir, tmp_path):
    """`gte-jax train --loss lambda` on listwise rows: the folder loads in CrossEncoder with gte_jax's scores, and
    training moved them."""
    from sentence_transformers import CrossEncoder

    from gte_jax import GTEReranker

    lists = _lists((2, 4, 3, 5, 1, 3, 2, 4))
    rows = [
        {"query": q, "docs": d, "labels": y.tolist()}
        for q, d, y in zip(lists.queries, lists.docs, lists.labels, strict=True)
    ]
    data = _write_jsonl(tmp_path / "lists.jsonl", rows)
    out = tmp_path / "trained"
    cmd = [sys.executable, "-m", "gte_jax.cli", "train", "--model", cross_encoder_dir, "--data", data]
    cmd += ["--loss", "lambda", "--output", str(out), "--batch-size", "4", "--lr", "1e-3", "--quiet"]
    done = subprocess.run(cmd, env=cpu_env(1), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and config["num_labels"] == 1
    pairs = [(lists.queries[1], d) for d in lists.docs[1]]
    ce = CrossEncoder(str(out), device="cpu")
    ours = GTEReranker.from_pretrained(str(out)).predict(pairs)
    np.testing.assert_allclose(ce.predict(pairs), ours, atol=1e-5)
    before = GTEReranker.from_pretrained(cross_encoder_dir).predict(pairs)
    assert np.abs(ours - before).max() > 1e-3
