"""Which matmul forms reach a fast kernel on XLA:CPU: GFLOP/s per (operand, accumulation) dtype.

    python bench/dot_cpu.py                         # gte-small FFN shape, 4096 x 384 x 1536
    python bench/dot_cpu.py --m 4096 --k 4096 --n 4096 --torch
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python bench/dot_cpu.py   # YNNPACK off: XLA's own dots

Each form is jitted, compiled, checked against a float64 numpy product, then all forms are
timed in interleaved rounds (min over rounds). The last column says which library XLA:CPU
handed the dot to (from the compiled HLO: ``__ynn_fusion`` is YNNPACK). The CPU's
low-precision features (from /proc/cpuinfo) are printed first: avx512_bf16 and amx_bf16
for bf16, avx512_vnni / amx_int8 for int8.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def forms(a32: np.ndarray, b32: np.ndarray) -> dict[str, tuple[Callable, tuple]]:
    """Name -> (jitted function, its inputs): the ways a linear layer can be written."""
    a16, b16 = jnp.asarray(a32, jnp.bfloat16), jnp.asarray(b32, jnp.bfloat16)
    sa, sb = np.abs(a32).max() / 127, np.abs(b32).max(axis=0) / 127
    a8 = jnp.asarray(np.round(a32 / sa), jnp.int8)
    b8 = jnp.asarray(np.round(b32 / sb), jnp.int8)
    hi = jax.lax.Precision.HIGHEST
    return {
        "f32 x f32 -> f32 (HIGHEST)": (jax.jit(lambda a, b: jnp.dot(a, b, precision=hi)), (a32, b32)),
        "f32 x f32 -> f32 (DEFAULT)": (jax.jit(jnp.dot), (a32, b32)),
        "bf16 x bf16 -> bf16": (jax.jit(jnp.dot), (a16, b16)),
        "bf16 x bf16 -> f32 (preferred_element_type)": (
            jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32)),
            (a16, b16),
        ),
        "bf16 x bf16 -> f32 -> bf16": (
            jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32).astype(jnp.bfloat16)),
            (a16, b16),
        ),
        "int8 x int8 -> int32": (
            jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.int32)),
            (a8, b8),
        ),
        "int8 x int8 -> int32 -> f32 (dequantised)": (
            jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.int32).astype(jnp.float32) * (sa * sb)),
            (a8, b8),
        ),
        # VNNI's native form (unsigned activations, signed weights), as ONNX Runtime and MKL use it.
        "uint8 x int8 -> int32": (
            jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.int32)),
            (jnp.asarray(np.asarray(a8, np.int16) + 128, jnp.uint8), b8),
        ),
        # What dtype="int8" runs per dense layer: per-token quantisation, the int8 dot, rescale, bias.
        "gte_jax Int8Einsum (f32 in, f32 out)": _int8_layer(a32, b32),
    }


def _int8_layer(a32: np.ndarray, b32: np.ndarray) -> tuple[Callable, tuple]:
    from flax import nnx

    from gte_jax.models.int8 import Int8Einsum
    from gte_jax.models.layers import Einsum

    dense = Einsum("BTD,DF->BTF", b32.shape, (b32.shape[1],), dtype=jnp.float32, rngs=nnx.Rngs(0))
    dense.kernel.set_value(jnp.asarray(b32))
    layer = Int8Einsum.from_float(dense)
    graphdef, state = nnx.split(layer)
    return jax.jit(lambda state, a: nnx.merge(graphdef, state)(a[None])[0]), (state, a32)


def kernel_of(fn: Callable, inputs: tuple) -> str:
    """Which library XLA:CPU hands the dot to: YNNPACK (``__ynn_fusion``), oneDNN, or its own code."""
    if not hasattr(fn, "lower"):
        return "-"
    text = fn.lower(*inputs).compile().as_text()
    called = re.findall(r"%ynn_fusion[.\d]* = [^\n]*calls=%([\w.]+)", text)
    if called:
        operand_types = set()  # of every YNNPACK fusion's parameters
        for name in called:
            header = re.search(rf"\n%{re.escape(name)} \(([^\n]*)\) ->", text)
            operand_types |= set(re.findall(r": (\w+)\[", header.group(1))) if header else set()
        given = {str(x.dtype) for x in jax.tree_util.tree_leaves(inputs) if getattr(x, "ndim", 0) == 2}
        if operand_types == {"f32"} and given - {"float32"}:
            return "YNNPACK, on operands converted to f32 first"
        return "YNNPACK"
    if "onednn" in text.lower():
        return "oneDNN"
    return "XLA (own loops)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", type=int, default=4096, help="rows (tokens in a step)")
    p.add_argument("--k", type=int, default=384, help="inner dimension (hidden size)")
    p.add_argument("--n", type=int, default=1536, help="columns (FFN size)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5, help="calls per round")
    p.add_argument("--torch", action="store_true", help="add PyTorch float32 and bf16 as yardsticks")
    args = p.parse_args()

    features = " ".join(common.cpu_features()) or "-"
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, CPU features: {features}")
    rng = np.random.default_rng(0)
    a32 = rng.standard_normal((args.m, args.k)).astype(np.float32)
    b32 = rng.standard_normal((args.k, args.n)).astype(np.float32)
    ref = a32.astype(np.float64) @ b32.astype(np.float64)
    table = forms(a32, b32)
    if args.torch:
        import torch

        ta, tb = torch.from_numpy(a32), torch.from_numpy(b32)
        table["torch f32"] = (lambda a, b: torch.mm(a, b), (ta, tb))
        table["torch bf16"] = (lambda a, b: torch.mm(a, b), (ta.bfloat16(), tb.bfloat16()))

    def call(fn: Callable, inputs: tuple) -> object:
        out = fn(*inputs)
        return out.block_until_ready() if hasattr(out, "block_until_ready") else out

    errors = {}
    for name, (fn, inputs) in table.items():
        out = call(fn, inputs)  # compiles
        got = np.asarray(out.float() if hasattr(out, "float") else out, dtype=np.float64)
        if name.endswith("-> int32"):  # integer products of quantised inputs: no float reference
            continue
        errors[name] = float(np.abs(got - ref).max() / np.abs(ref).max())
    best = dict.fromkeys(table, float("inf"))
    for _ in range(args.rounds):
        for name, (fn, inputs) in table.items():
            start = time.perf_counter()
            for _ in range(args.repeats):
                call(fn, inputs)
            best[name] = min(best[name], (time.perf_counter() - start) / args.repeats)
    flops = 2 * args.m * args.k * args.n
    print(f"\n{args.m} x {args.k} x {args.n}, best of {args.rounds} rounds x {args.repeats} calls")
    print(f"{'form':46} {'ms':>8} {'GFLOP/s':>9} {'rel. error':>11}  kernel")
    for name, seconds in best.items():
        err = f"{errors[name]:.1e}" if name in errors else "-"
        kernel = kernel_of(*table[name])
        print(f"{name:46} {seconds * 1e3:8.2f} {flops / seconds / 1e9:9.1f} {err:>11}  {kernel}")


if __name__ == "__main__":
    main()
