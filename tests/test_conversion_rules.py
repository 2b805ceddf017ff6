"""Each family's conversion table, read both ways: every rule round-trips, on every parameter of a model."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from gte_jax.models import families
from gte_jax.models.rules import Conversion, Rule, transpose

from checkpoints import TINY
from family_checkpoints import GTE_TINY
from modernbert_checkpoints import BIASED as MODERNBERT_BIASED

CONFIGS = {"bert": TINY, "new": GTE_TINY, "gte": GTE_TINY, "modernbert": MODERNBERT_BIASED}  # biases on: every rule


@pytest.mark.parametrize("name", sorted(families()))
def test_every_parameter_round_trips(name):
    family = families()[name]
    cfg = CONFIGS[name]
    model = nnx.eval_shape(
        lambda: family.build(cfg, dtype=np.float32, act_dtype=None, attention_impl="einsum", rngs=nnx.Rngs(0))
    )
    rng = np.random.default_rng(0)
    for keys, var in nnx.to_flat_state(nnx.state(model)):
        path = ".".join(map(str, keys))
        value = rng.standard_normal(var.shape).astype(np.float32)
        key, tensor = family.conversion.to_hf(path, value, cfg)
        [(back_path, back)] = family.conversion.to_nnx(key, tensor, cfg)
        assert back_path == path, (path, key, back_path)
        np.testing.assert_array_equal(back, value)


def test_side_alternatives_load_each_and_save_the_first():
    rule = Rule("layer.{i}.norm.[weight|gamma]", "layer.{i}.norm.scale")
    conversion = Conversion([rule], prefixes=("bert.",))
    assert conversion.nnx_path("bert.layer.3.norm.gamma") == ["layer.3.norm.scale"]
    assert conversion.nnx_path("layer.3.norm.weight") == ["layer.3.norm.scale"]
    assert conversion.to_hf("layer.3.norm.scale", np.zeros(2), None)[0] == "layer.3.norm.weight"
    assert conversion.nnx_path("layer.x.norm.weight") is None


def test_a_fused_tensor_splits_on_load_and_is_not_exported_fused():
    split = Rule(
        "qkv.weight",
        ("q.kernel", "k.kernel", "v.kernel"),
        lambda t, cfg: tuple(np.split(t.T, 3, axis=1)),
        load_only=True,
    )
    native = Rule("{p:q|k|v}_proj.weight", "{p}.kernel", transpose, transpose)
    conversion = Conversion([split, native])
    fused = np.arange(24.0).reshape(6, 4)
    parts = dict(conversion.to_nnx("qkv.weight", fused, None))
    assert sorted(parts) == ["k.kernel", "q.kernel", "v.kernel"]
    np.testing.assert_array_equal(parts["k.kernel"], fused[2:4].T)
    assert conversion.to_hf("k.kernel", parts["k.kernel"], None)[0] == "k_proj.weight"
