"""The NNX module on its own, as research code uses it: split/merge, jit, eval_shape."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gte_jax import BertModel, GTEConfig, l2_normalize, mean_pool


def test_module_under_jit_matches_encoder(minilm):
    ids = minilm.tokenize(["research code calls the module directly"])[0]
    input_ids = jnp.asarray(ids)[None]
    mask = jnp.ones_like(input_ids)
    graphdef, state = nnx.split(minilm.model)

    @jax.jit
    def embed(state, input_ids, mask):
        hidden = nnx.merge(graphdef, state)(input_ids, mask)
        return l2_normalize(mean_pool(hidden, mask))

    hidden = minilm.model(input_ids, mask)
    assert hidden.shape == (1, len(ids), 384)
    np.testing.assert_allclose(
        np.asarray(embed(state, input_ids, mask))[0],
        minilm.encode("research code calls the module directly"),
        atol=1e-6,
    )


def test_eval_shape_allocates_nothing():
    model = nnx.eval_shape(lambda: BertModel(GTEConfig.gte_large(), rngs=nnx.Rngs(0)))
    ids = jax.ShapeDtypeStruct((2, 16), jnp.int32)
    graphdef, state = nnx.split(model)
    out = jax.eval_shape(lambda s, i, m: nnx.merge(graphdef, s)(i, m), state, ids, ids)
    assert out.shape == (2, 16, 1024)
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)  # shapes only, no buffers
    n_params = sum(x.size for x in leaves)
    assert 330e6 < n_params < 340e6  # gte-large's 335M, pooler excluded


def test_padding_rows_pool_to_zero_not_nan():
    hidden = jnp.ones((2, 4, 3))
    mask = jnp.array([[1, 1, 0, 0], [0, 0, 0, 0]])
    pooled = mean_pool(hidden, mask)
    np.testing.assert_array_equal(np.asarray(pooled), [[1, 1, 1], [0, 0, 0]])
    assert np.all(np.isfinite(np.asarray(l2_normalize(pooled))))


def test_gelu_is_pytorchs_exact_gelu():
    import torch

    from gte_jax.models.layers import gelu

    x = np.concatenate([np.linspace(-12, 12, 20001), np.random.default_rng(0).standard_normal(10000) * 3])
    x = x.astype(np.float32)
    want = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()  # approximate="none": the erf form
    got = np.asarray(gelu(jnp.asarray(x)))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1.5e-6)  # 1 ulp at |x| = 12
    np.testing.assert_allclose(got, np.asarray(jax.nn.gelu(jnp.asarray(x), approximate=False)), atol=1.5e-6)
