"""Microbenchmark of attention formulations on XLA:CPU, at the gte-small shape.

XLA:CPU's batched dot (the ``BNTS`` einsums of textbook attention) is far slower
than the same work done as a loop of 2-D matmuls; this script measures the
candidate formulations side by side, checks each against the einsum reference,
and prints a markdown table of median milliseconds.

    python bench/attention_cpu.py                       # B in {8,32}, T in {32,128,512}
    python bench/attention_cpu.py --batch 8 --tokens 512 --variants einsum,map_bn
    python bench/attention_cpu.py --torch               # adds PyTorch SDPA as a yardstick
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from gte_jax.kernels import attention as gte_attention

NEG = jnp.finfo(jnp.float32).min


def _masked_softmax(scores, mask):
    """float32 softmax over the last axis; ``mask`` broadcasts against ``scores``."""
    scores = jnp.where(mask, scores, NEG)
    return jax.nn.softmax(scores, axis=-1)


# --- Variants: each maps q, k, v [B, T, N, H] and mask [B, T] to [B, T, N, H]. ----------------------------------


def einsum_ref(q, k, v, mask):
    return gte_attention.attention(q, k, v, mask, impl="einsum")


def einsum_highest(q, k, v, mask):
    return gte_attention.attention(q, k, v, mask, impl="einsum", precision=jax.lax.Precision.HIGHEST)


def einsum_bnth(q, k, v, mask):
    """Transpose to BNTH first so both dots have canonical (batch, row, contract) layouts."""
    scale = 1.0 / np.sqrt(q.shape[-1])
    q, k, v = (jnp.transpose(x, (0, 2, 1, 3)) for x in (q, k, v))  # [B, N, T, H]
    s = jnp.einsum("BNTH,BNSH->BNTS", q, k, preferred_element_type=jnp.float32) * scale
    p = _masked_softmax(s, mask[:, None, None, :].astype(bool)).astype(v.dtype)
    o = jnp.einsum("BNTS,BNSH->BNTH", p, v)
    return jnp.transpose(o, (0, 2, 1, 3))


def dpa_xla(q, k, v, mask):
    m = mask[:, None, None, :].astype(bool)  # [B, 1, 1, S]
    return jax.nn.dot_product_attention(q, k, v, mask=m, implementation="xla")


def _head_2d(qh, kh, vh, mh, scale):
    """One (batch, head): 2-D matmuls. qh/kh/vh [T, H], mh [S]."""
    s = jnp.dot(qh, kh.T, preferred_element_type=jnp.float32) * scale  # [T, S]
    p = _masked_softmax(s, mh[None, :].astype(bool)).astype(vh.dtype)
    return jnp.dot(p, vh)  # [T, H]


def map_bn(q, k, v, mask):
    """lax.map over batch x heads; each step two 2-D matmuls on [T, H] slices."""
    B, T, N, H = q.shape
    scale = 1.0 / np.sqrt(H)
    qs, ks, vs = (jnp.transpose(x, (0, 2, 1, 3)).reshape(B * N, T, H) for x in (q, k, v))
    ms = jnp.repeat(mask, N, axis=0)  # [B*N, S]
    o = jax.lax.map(lambda a: _head_2d(*a, scale), (qs, ks, vs, ms))  # [B*N, T, H]
    return jnp.transpose(o.reshape(B, N, T, H), (0, 2, 1, 3))


def map_bn_notrans(q, k, v, mask):
    """As map_bn, but slicing [T, H] heads out of the BTNH arrays (strided) instead of transposing first."""
    B, T, N, H = q.shape
    scale = 1.0 / np.sqrt(H)

    def step(i):
        b, n = i // N, i % N
        sl = lambda x: jax.lax.dynamic_slice(x, (b, 0, n, 0), (1, T, 1, H)).reshape(T, H)  # noqa: E731
        m = jax.lax.dynamic_slice(mask, (b, 0), (1, T)).reshape(T)
        return _head_2d(sl(q), sl(k), sl(v), m, scale)

    o = jax.lax.map(step, jnp.arange(B * N))  # [B*N, T, H]
    return jnp.transpose(o.reshape(B, N, T, H), (0, 2, 1, 3))


def map_b(q, k, v, mask):
    """lax.map over batch; each step a head-batched einsum."""
    scale = 1.0 / np.sqrt(q.shape[-1])

    def step(a):
        qb, kb, vb, mb = a  # [T, N, H] x3, [S]
        s = jnp.einsum("TNH,SNH->NTS", qb, kb, preferred_element_type=jnp.float32) * scale
        p = _masked_softmax(s, mb[None, None, :].astype(bool)).astype(vb.dtype)
        return jnp.einsum("NTS,SNH->TNH", p, vb)

    return jax.lax.map(step, (q, k, v, mask))


def map_b_unroll_heads(q, k, v, mask):
    """lax.map over batch; the heads unrolled in Python as 2-D matmuls."""
    N = q.shape[2]
    scale = 1.0 / np.sqrt(q.shape[-1])

    def step(a):
        qb, kb, vb, mb = a  # [T, N, H] x3, [S]
        return jnp.stack([_head_2d(qb[:, n], kb[:, n], vb[:, n], mb, scale) for n in range(N)], axis=1)

    return jax.lax.map(step, (q, k, v, mask))


def map_bn_split(parts):
    """map_bn as ``parts`` independent lax.maps over slices of batch x heads (so they may run concurrently)."""

    def fn(q, k, v, mask):
        B, T, N, H = q.shape
        if (B * N) % parts:
            return map_bn(q, k, v, mask)
        scale = 1.0 / np.sqrt(H)
        qs, ks, vs = (jnp.transpose(x, (0, 2, 1, 3)).reshape(B * N, T, H) for x in (q, k, v))
        ms = jnp.repeat(mask, N, axis=0)
        step = (B * N) // parts
        outs = [
            jax.lax.map(lambda a: _head_2d(*a, scale), tuple(x[i * step : (i + 1) * step] for x in (qs, ks, vs, ms)))
            for i in range(parts)
        ]
        o = jnp.concatenate(outs, axis=0)
        return jnp.transpose(o.reshape(B, N, T, H), (0, 2, 1, 3))

    fn.__name__ = f"map_bn_split{parts}"
    return fn


def map_bn_chunk(chunk):
    """lax.map over batch x heads with ``batch_size=chunk`` (vmapped chunks: batched dots of ``chunk``)."""

    def fn(q, k, v, mask):
        B, T, N, H = q.shape
        scale = 1.0 / np.sqrt(H)
        qs, ks, vs = (jnp.transpose(x, (0, 2, 1, 3)).reshape(B * N, T, H) for x in (q, k, v))
        ms = jnp.repeat(mask, N, axis=0)
        o = jax.lax.map(lambda a: _head_2d(*a, scale), (qs, ks, vs, ms), batch_size=chunk)
        return jnp.transpose(o.reshape(B, N, T, H), (0, 2, 1, 3))

    fn.__name__ = f"map_bn_chunk{chunk}"
    return fn


def query_blocked(block):
    """lax.map over query blocks of ``block`` tokens; each block a full batched einsum (smaller score tensors)."""

    def fn(q, k, v, mask):
        B, T, N, H = q.shape
        if T <= block or T % block:
            return einsum_ref(q, k, v, mask)
        qb = jnp.moveaxis(q.reshape(B, T // block, block, N, H), 1, 0)  # [T/b, B, b, N, H]

        def step(qc):
            return einsum_ref(qc, k, v, mask)  # mask is over keys: unchanged per query block

        o = jax.lax.map(step, qb)  # [T/b, B, b, N, H]
        return jnp.moveaxis(o, 0, 1).reshape(B, T, N, H)

    fn.__name__ = f"query_blocked{block}"
    return fn


def flat_scores_pv_2d(q, k, v, mask):
    """Per head (unrolled), the batched dot over B, heads as separate programs: N batched dots of [B, T, H]."""
    N = q.shape[2]
    scale = 1.0 / np.sqrt(q.shape[-1])
    outs = []
    for n in range(N):
        s = jnp.einsum("BTH,BSH->BTS", q[:, :, n], k[:, :, n], preferred_element_type=jnp.float32) * scale
        p = _masked_softmax(s, mask[:, None, :].astype(bool)).astype(v.dtype)
        outs.append(jnp.einsum("BTS,BSH->BTH", p, v[:, :, n]))
    return jnp.stack(outs, axis=2)


def fori_bn(unroll=1, k_transposed=False):
    """fori_loop over batch x heads writing into a preallocated output (what lax.map lowers to, by hand)."""

    def fn(q, k, v, mask):
        B, T, N, H = q.shape
        scale = 1.0 / np.sqrt(H)
        qs, ks, vs = (jnp.transpose(x, (0, 2, 1, 3)).reshape(B * N, T, H) for x in (q, k, v))
        if k_transposed:
            ks = jnp.transpose(k, (0, 2, 3, 1)).reshape(B * N, H, T)  # [B*N, H, S]
        ms = jnp.repeat(mask, N, axis=0)

        def body(i, out):
            if k_transposed:
                s = jnp.dot(qs[i], ks[i], preferred_element_type=jnp.float32) * scale
                p = _masked_softmax(s, ms[i][None, :].astype(bool)).astype(v.dtype)
                o = jnp.dot(p, vs[i])
            else:
                o = _head_2d(qs[i], ks[i], vs[i], ms[i], scale)
            return jax.lax.dynamic_update_index_in_dim(out, o, i, 0)

        o = jax.lax.fori_loop(0, B * N, body, jnp.zeros_like(qs), unroll=unroll)
        return jnp.transpose(o.reshape(B, N, T, H), (0, 2, 1, 3))

    fn.__name__ = f"fori_bn_u{unroll}" + ("_kt" if k_transposed else "")
    return fn


def _library_impl(name):
    def fn(q, k, v, mask):
        return gte_attention.attention(q, k, v, mask, impl=name)

    fn.__name__ = f"lib:{name}"
    return fn


VARIANTS = {
    "einsum": einsum_ref,
    "einsum_highest": einsum_highest,
    "einsum_bnth": einsum_bnth,
    "dpa_xla": dpa_xla,
    "per_head_bdot": flat_scores_pv_2d,
    "map_b": map_b,
    "map_b_unroll_heads": map_b_unroll_heads,
    "map_bn": map_bn,
    "map_bn_notrans": map_bn_notrans,
    "fori_bn": fori_bn(),
    "fori_bn_u2": fori_bn(unroll=2),
    "fori_bn_u4": fori_bn(unroll=4),
    "fori_bn_kt": fori_bn(k_transposed=True),
    "map_bn_split2": map_bn_split(2),
    "map_bn_chunk4": map_bn_chunk(4),
    "query_blocked128": query_blocked(128),
}
for _name in gte_attention.ATTENTION_IMPLS:
    VARIANTS.setdefault(f"lib:{_name}", _library_impl(_name))


def make_inputs(B, T, N, H, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.standard_normal((B, T, N, H)), dtype) for _ in range(3))
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0] = T
    mask = jnp.asarray(np.arange(T)[None, :] < lengths[:, None], jnp.int32)
    return q, k, v, mask


def time_interleaved(fns, args, rounds):
    """Per function: (min, median) seconds over ``rounds`` rounds, calling every function once per round.

    Interleaving spreads any background load on a shared machine evenly over the variants.
    """
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - t0)
    return {name: (min(t), statistics.median(t)) for name, t in times.items()}


def torch_sdpa_time(B, T, N, H, repeats, threads):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, N, T, H, generator=g) for _ in range(3))
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = (torch.arange(T)[None, :] < lengths[:, None])[:, None, None, :]
    with torch.inference_mode():
        for _ in range(2):
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", default="8,32", help="comma-separated batch sizes")
    p.add_argument("--tokens", default="32,128,512", help="comma-separated sequence lengths")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {list(VARIANTS)}")
    p.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds")
    p.add_argument("--torch", action="store_true", help="also time torch SDPA (BNTH layout) as a yardstick")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (XLA uses every core)")
    args = p.parse_args(argv)

    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    shapes = [(int(b), int(t)) for b in args.batch.split(",") for t in args.tokens.split(",")]
    N, H = args.heads, args.head_dim
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} cores; N={N} H={H} float32")

    table = {}  # (variant, shape) -> (min ms, median ms)
    for B, T in shapes:
        q, k, v, mask = make_inputs(B, T, N, H)
        ref = np.asarray(jax.jit(einsum_ref)(q, k, v, mask))
        fns = {}
        for name in names:
            fn = jax.jit(VARIANTS[name])
            t0 = time.perf_counter()
            out = np.asarray(fn(q, k, v, mask))
            first = time.perf_counter() - t0
            err = float(np.max(np.abs(out - ref)))
            print(f"B={B:3d} T={T:4d} {name:20s} compile+first {first:5.2f} s  max|diff|={err:.1e}")
            fns[name] = fn
        for name, (lo, med) in time_interleaved(fns, (q, k, v, mask), args.repeats).items():
            table[name, (B, T)] = (lo * 1e3, med * 1e3)
            print(f"B={B:3d} T={T:4d} {name:20s} min {lo * 1e3:9.2f} ms  median {med * 1e3:9.2f} ms")
        if args.torch:
            sec = torch_sdpa_time(B, T, N, H, args.repeats, args.threads)
            table["torch_sdpa", (B, T)] = (sec[0] * 1e3, sec[1] * 1e3)
            lo, med = table["torch_sdpa", (B, T)]
            print(f"B={B:3d} T={T:4d} {'torch_sdpa':20s} min {lo:9.2f} ms  median {med:9.2f} ms")
        sys.stdout.flush()

    rows = names + (["torch_sdpa"] if args.torch else [])
    print("\nms per call, min / median over interleaved rounds")
    print("\n| variant | " + " | ".join(f"B={b} T={t}" for b, t in shapes) + " |")
    print("|---|" + "---:|" * len(shapes))
    for name in rows:
        print(f"| {name} | " + " | ".join("{:.2f} / {:.2f}".format(*table[name, s]) for s in shapes) + " |")


if __name__ == "__main__":
    main()
