"""Fine-tuning the rotary families: one step's loss and gradients equal PyTorch's on random-init GTE (transformers'
``GteModel``) and ModernBERT checkpoints, and ``gte-jax train`` exports a folder sentence-transformers loads
natively."""

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
from gte_jax.models import family_of
from gte_jax.train.losses import GTE_DIRECTIONS
from gte_jax.train.step import StepOptions, Trainer, attention_impl, make_loss

from family_checkpoints import GTE_TINY, torch_gte, write_gte
from modernbert_checkpoints import BIASED_HF, torch_modernbert, write_tokenizer
from modernbert_checkpoints import write_checkpoint as write_modernbert
from processes import cpu_env
from train_batches import LR, ROWS, read_sts, train_batch, train_examples


def _gte(out: str, layout: str) -> str:
    write_gte(torch_gte(GTE_TINY, seed=2), GTE_TINY, out, layout)
    write_tokenizer(out)  # a byte-level BPE of 400 pieces: every id inside GTE_TINY's 1,000
    return out


def _modernbert(out: str) -> str:
    return write_modernbert(torch_modernbert(BIASED_HF, seed=2), out)  # biases on: every tensor gets a gradient


MAKERS = {"gte": lambda out: _gte(out, "native"), "gte-hub": lambda out: _gte(out, "hub"), "modernbert": _modernbert}


@pytest.fixture(scope="module", params=["gte", "modernbert"])
def family_dir(request, tmp_path_factory) -> tuple[str, str]:
    return request.param, MAKERS[request.param](str(tmp_path_factory.mktemp(request.param)))


def _flat(state: nnx.State) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}


def _reference(model_dir: str, pooling: str):
    """sentence-transformers over transformers' own class of the checkpoint (eager attention, no remote code)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    body = Transformer(model_dir, model_kwargs={"attn_implementation": "eager"})
    st = SentenceTransformer(modules=[body, Pooling(body.get_embedding_dimension(), pooling)], device="cpu")
    return st.eval()  # dropout off; gradients still flow


@pytest.mark.slow
def test_gradients_equal_sentence_transformers(family_dir):
    """GTE's four-direction loss with a hard negative, dropout off: every parameter's gradient equals PyTorch's,
    mapped onto NNX paths by the family's own conversion rules."""
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    name, model_dir = family_dir
    loaded = load(model_dir, mesh=default_mesh())
    trainer = Trainer(
        loaded.model, make_loss("gte"), optax.sgd(LR), options=StepOptions(pooling=loaded.pooling, dropout=False)
    )
    loss, grads = trainer.grads(trainer.init(0), trainer.shard_batch(train_batch(loaded.tokenizer)))
    grads = _flat(grads)

    st = _reference(model_dir, loaded.pooling)
    features = [st.tokenize(column) for column in train_examples().texts]
    ours = train_batch(loaded.tokenizer)
    for c, f in enumerate(features):  # the same token ids on both sides (padding aside)
        T = f["input_ids"].shape[1]
        np.testing.assert_array_equal(
            ours["input_ids"][:, c, :T] * ours["attention_mask"][:, c, :T],
            f["input_ids"].numpy() * f["attention_mask"].numpy(),
        )
    reference = MultipleNegativesRankingLoss(st, directions=GTE_DIRECTIONS)(features, torch.zeros(ROWS))
    reference.backward()
    assert abs(float(loss) - reference.item()) <= 1e-5 * abs(reference.item()), name

    conversion = family_of(loaded.model.config).conversion
    expected: dict[str, np.ndarray] = {}
    for key, param in st[0].auto_model.named_parameters():
        if param.grad is not None:
            expected.update(conversion.to_nnx(key, param.grad.numpy(), loaded.model.config) or {})
    assert expected.keys() == grads.keys()
    # As for BERT: relative to the tensor's gradient, or to a thousandth of the whole for (mathematically) zero ones.
    floor = 1e-3 * np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in expected.values()))
    errors = {k: np.linalg.norm(grads[k] - e) / max(np.linalg.norm(e), floor) for k, e in expected.items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-4, (name, worst, errors[worst])


def test_bfloat16_step_rebuilds_the_family_with_its_attention(family_dir):
    """Mixed precision rebuilds the module in bf16 with the loaded model's attention kernel, whatever the family
    keeps it on (GTE and ModernBERT: the attention modules, not the model)."""
    _, model_dir = family_dir
    loaded = load(model_dir, mesh=default_mesh())
    impl = attention_impl(loaded.model)
    trainer = Trainer(
        loaded.model,
        make_loss("infonce"),
        optax.sgd(LR),
        options=StepOptions(pooling=loaded.pooling, dropout=False, compute_dtype="bfloat16"),
    )
    batch = trainer.shard_batch(train_batch(loaded.tokenizer, rows=4))
    loss, grads = trainer.grads(trainer.init(0), batch)
    assert np.isfinite(float(loss))
    assert all(g.dtype == np.float32 for g in _flat(grads).values())
    assert attention_impl(nnx.merge(trainer.eval_graphdef, nnx.state(loaded.model))) == impl


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gte-hub", "modernbert"])
def test_train_exports_what_sentence_transformers_loads_natively(name, tmp_path):
    """`gte-jax train` on a hub-layout GTE (``NewModel``) or a ModernBERT: the folder is transformers' native
    class (no ``auto_map``, no remote code) and sentence-transformers gives gte_jax's vectors for it."""
    from sentence_transformers import SentenceTransformer

    from gte_jax import GTEEncoder

    source = MAKERS[name](str(tmp_path / "source"))
    s1, s2, scores = read_sts("dev")
    data = tmp_path / "sts.jsonl"
    data.write_text(
        "".join(
            json.dumps({"sentence1": a, "sentence2": b, "score": s}) + "\n"
            for a, b, s in list(zip(s1, s2, scores, strict=True))[:16]
        )
    )
    out = tmp_path / "trained"
    cmd = [
        sys.executable,
        "-m",
        "gte_jax.cli",
        "train",
        "--model",
        source,
        "--data",
        str(data),
        "--loss",
        "cosent",
        "--output",
        str(out),
        "--batch-size",
        "8",
        "--lr",
        "1e-3",
        "--quiet",
    ]
    done = subprocess.run(cmd, env=cpu_env(1), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config and config["model_type"] in ("gte", "modernbert")
    st = SentenceTransformer(str(out), device="cpu")  # trust_remote_code off (its default)
    assert type(st[0].auto_model).__name__ in ("GteModel", "ModernBertModel")
    ours = GTEEncoder.from_pretrained(str(out))
    texts = s1[:6]
    np.testing.assert_allclose(st.encode(texts, normalize_embeddings=True), ours.encode(texts), atol=1e-5)
    before = GTEEncoder.from_pretrained(source).encode(texts)
    assert np.abs(ours.encode(texts) - before).max() > 1e-3  # the step changed the weights that were written
