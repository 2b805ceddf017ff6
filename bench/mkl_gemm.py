"""Would an XLA FFI custom call into Intel MKL's GEMMs beat XLA:CPU on a small BERT's linear layers?

    pip install mkl                                  # Intel oneMKL wheel (~300 MB of wheels, ~940 MB installed)
    python bench/mkl_gemm.py                         # 4 shapes, MKL and XLA forms, GFLOP/s table
    python bench/mkl_gemm.py --shapes 4096x384x1536 --rounds 9 --calls 20

MKL is called through ctypes on libmkl_rt (LP64 interface, so MKL_INT is int32), row-major, no transposes:

* ``cblas_sgemm``: float32 x float32 -> float32.
* ``cblas_gemm_bf16bf16f32``: bfloat16 x bfloat16 -> float32 (bfloat16 passed as uint16 arrays).
* ``cblas_gemm_s8u8s32``: C = (A + ao)(B + bo) + co. In row-major A is the *unsigned* operand (uint8
  activations with zero point 128, ao = -128) and B the signed one (int8 weights, bo = 0); int32 out.

XLA:CPU (jax) is timed on the forms the model can use: float32 dot at precision HIGHEST, bfloat16 x bfloat16
with preferred_element_type=float32, and int8 x int8 -> int32. Whether each compiled to a YNNPACK fusion
(``__ynn_fusion`` in the compiled HLO) is printed. Every result is checked first: float forms against a float64
numpy product of the same (rounded) inputs, the integer forms exactly. Then all (shape, form) pairs are timed in
interleaved rounds (the order rotates each round) and the minimum over rounds of the mean of ``--calls`` calls is
kept. MKL runs with ``--threads`` threads and KMP_BLOCKTIME=0, so its OpenMP workers do not spin on the cores
while XLA runs.

A child process repeats one call of each MKL routine with MKL_VERBOSE=1; its lines, and the MKL code-path
libraries that the call loaded (libmkl_def / libmkl_avx2 / libmkl_avx512 / libmkl_avx10, from /proc/self/maps),
say which kernels MKL dispatched to on this CPU. (On AMD CPUs MKL loads only libmkl_def, whatever AVX-512
features the CPU has; ``perf record`` shows its bf16 GEMM running the float32 Zen AVX2 kernel
mkl_blas_def_sgemm_kernel_0_zen and its s8u8s32 GEMM the float64 one, mkl_blas_def_dgemm_kernel_zen.)
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import importlib.metadata
import os
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

# CBLAS enum values (mkl_cblas.h)
ROW_MAJOR, NO_TRANS, FIX_OFFSET = 101, 111, 173
DEFAULT_SHAPES = "1024x384x1536,1024x1536x384,4096x384x1536,512x768x3072"
MKL_FORMS = ["MKL f32", "MKL bf16->f32", "MKL u8s8->s32"]
XLA_FORMS = ["XLA f32 HIGHEST", "XLA bf16->f32", "XLA s8s8->s32"]


def load_mkl(threads: int) -> ctypes.CDLL:
    """libmkl_rt from the pip ``mkl`` package, with the prototypes this script uses; exit if it is missing."""
    try:
        version = importlib.metadata.version("mkl")
    except importlib.metadata.PackageNotFoundError:
        sys.exit("bench/mkl_gemm.py needs Intel MKL, which is not installed: pip install mkl")
    libs = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))
    if not libs:
        sys.exit(f"the mkl {version} package is installed but no libmkl_rt.so* is in {sys.prefix}/lib")
    os.environ.setdefault("MKL_NUM_THREADS", str(threads))
    os.environ.setdefault("KMP_BLOCKTIME", "0")
    lib = ctypes.CDLL(libs[-1])
    i32, f32, p, enum = ctypes.c_int32, ctypes.c_float, ctypes.c_void_p, ctypes.c_int
    lib.MKL_Set_Num_Threads(threads)  # by value; lower-case mkl_set_num_threads is the Fortran (pointer) form
    lib.cblas_sgemm.argtypes = [enum] * 3 + [i32] * 3 + [f32, p, i32, p, i32, f32, p, i32]
    lib.cblas_gemm_bf16bf16f32.argtypes = [enum] * 3 + [i32] * 3 + [f32, p, i32, p, i32, f32, p, i32]
    lib.cblas_gemm_s8u8s32.argtypes = [enum] * 4 + [i32] * 3 + [f32, p, i32, ctypes.c_int8, p, i32, ctypes.c_int8]
    lib.cblas_gemm_s8u8s32.argtypes += [f32, p, i32, p]
    for fn in (lib.cblas_sgemm, lib.cblas_gemm_bf16bf16f32, lib.cblas_gemm_s8u8s32):
        fn.restype = None
    return lib


def mkl_version(lib: ctypes.CDLL) -> str:
    buf = ctypes.create_string_buffer(256)
    lib.MKL_Get_Version_String(buf, len(buf))
    return buf.value.decode()


class Operands:
    """One shape's inputs in every dtype, and the exact references to check against."""

    def __init__(self, m: int, k: int, n: int, seed: int = 0) -> None:
        import ml_dtypes

        rng = np.random.default_rng(seed)
        self.m, self.k, self.n = m, k, n
        self.a32 = rng.standard_normal((m, k)).astype(np.float32)
        self.b32 = rng.standard_normal((k, n)).astype(np.float32)
        self.a16 = self.a32.astype(ml_dtypes.bfloat16)
        self.b16 = self.b32.astype(ml_dtypes.bfloat16)
        # dynamic int8: activations per tensor, weights per output column
        sa, sb = np.abs(self.a32).max() / 127, np.abs(self.b32).max(axis=0) / 127
        self.a8 = np.clip(np.round(self.a32 / sa), -127, 127).astype(np.int8)
        self.b8 = np.clip(np.round(self.b32 / sb), -127, 127).astype(np.int8)
        self.au8 = (self.a8.astype(np.int16) + 128).astype(np.uint8)  # zero point 128
        self.ref32 = self.a32.astype(np.float64) @ self.b32.astype(np.float64)
        self.ref16 = self.a16.astype(np.float64) @ self.b16.astype(np.float64)
        self.ref8 = self.a8.astype(np.int64) @ self.b8.astype(np.int64)

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n


def mkl_forms(lib: ctypes.CDLL, x: Operands) -> dict[str, tuple[Callable[[], None], np.ndarray, np.ndarray]]:
    """Form -> (zero-argument call writing into a preallocated output, that output, its reference)."""
    m, k, n = x.m, x.k, x.n
    c32, c16, c8 = np.zeros((m, n), np.float32), np.zeros((m, n), np.float32), np.zeros((m, n), np.int32)
    a16, b16 = x.a16.view(np.uint16), x.b16.view(np.uint16)
    co = np.zeros(1, np.int32)

    def ptr(arr: np.ndarray) -> int:
        return arr.ctypes.data

    def sgemm() -> None:
        lib.cblas_sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, m, n, k, 1.0, ptr(x.a32), k, ptr(x.b32), n, 0.0, ptr(c32), n)

    def bf16() -> None:
        lib.cblas_gemm_bf16bf16f32(
            ROW_MAJOR, NO_TRANS, NO_TRANS, m, n, k, 1.0, ptr(a16), k, ptr(b16), n, 0.0, ptr(c16), n
        )

    def s8u8() -> None:  # (A_u8 - 128) @ (B_s8 + 0)
        lib.cblas_gemm_s8u8s32(
            ROW_MAJOR, NO_TRANS, NO_TRANS, FIX_OFFSET, m, n, k, 1.0, ptr(x.au8), k, -128, ptr(x.b8), n, 0, 0.0,
            ptr(c8), n, ptr(co),
        )  # fmt: skip

    return {
        "MKL f32": (sgemm, c32, x.ref32),
        "MKL bf16->f32": (bf16, c16, x.ref16),
        "MKL u8s8->s32": (s8u8, c8, x.ref8),
    }


def xla_forms(x: Operands) -> tuple[dict[str, tuple[Callable[[], object], np.ndarray]], dict[str, bool]]:
    """Form -> (zero-argument call returning the result, its reference); and form -> compiled to YNNPACK."""
    import jax
    import jax.numpy as jnp

    hi = jax.lax.Precision.HIGHEST
    fns = {
        "XLA f32 HIGHEST": (lambda a, b: jnp.dot(a, b, precision=hi), x.a32, x.b32, x.ref32),
        "XLA bf16->f32": (lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32), x.a16, x.b16, x.ref16),
        "XLA s8s8->s32": (lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.int32), x.a8, x.b8, x.ref8),
    }
    calls, ynn = {}, {}
    for name, (fn, a, b, ref) in fns.items():
        da, db = jax.device_put(a), jax.device_put(b)
        compiled = jax.jit(fn).lower(da, db).compile()
        ynn[name] = "__ynn_fusion" in compiled.as_text()
        calls[name] = ((lambda c=compiled, da=da, db=db: c(da, db).block_until_ready()), ref)
    return calls, ynn


def check(name: str, got: np.ndarray, ref: np.ndarray) -> str:
    """'exact' for the integer forms (or exit), else the max error relative to max |ref|."""
    if np.issubdtype(ref.dtype, np.integer):
        if not np.array_equal(got.astype(np.int64), ref):
            sys.exit(f"{name}: wrong integer result (max error {np.abs(got.astype(np.int64) - ref).max()})")
        return "exact"
    err = float(np.abs(got.astype(np.float64) - ref).max() / np.abs(ref).max())
    if err > 1e-4:
        sys.exit(f"{name}: relative error {err:.1e} is too large")
    return f"{err:.1e}"


def verbose_probe(threads: int) -> None:
    """Child mode: one small call of each MKL routine (MKL_VERBOSE=1 set by the parent), then the loaded code paths."""
    lib = load_mkl(threads)
    x = Operands(256, 384, 512)
    for call, _, _ in mkl_forms(lib, x).values():
        call()
    with open("/proc/self/maps", encoding="utf-8") as f:
        libs = sorted({line.split()[-1].rsplit("/", 1)[-1] for line in f if "libmkl_" in line})
    print("MKL libraries loaded:", " ".join(libs), flush=True)


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    shapes = []
    for item in text.split(","):
        m, k, n = (int(d) for d in item.lower().split("x"))
        shapes.append((m, k, n))
    return shapes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma-separated MxKxN (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds; the minimum is kept")
    p.add_argument("--calls", type=int, default=10, help="calls per round")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="MKL threads")
    p.add_argument("--no-verbose", action="store_true", help="skip the MKL_VERBOSE child process")
    p.add_argument("--verbose-probe", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.verbose_probe:
        verbose_probe(args.threads)
        return

    lib = load_mkl(args.threads)
    import jax

    load_before = os.getloadavg()[0]
    print(f"{mkl_version(lib)} (pip mkl {importlib.metadata.version('mkl')}), {args.threads} MKL threads")
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {len(os.sched_getaffinity(0))} cores")
    if not args.no_verbose:
        env = dict(os.environ, MKL_VERBOSE="1")
        cmd = [sys.executable, os.path.abspath(__file__), "--verbose-probe", "--threads", str(args.threads)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        print("\n".join(line for line in out.splitlines() if line.startswith(("MKL_VERBOSE", "MKL libraries"))))

    shapes = parse_shapes(args.shapes)
    calls: dict[tuple[tuple[int, int, int], str], Callable[[], object]] = {}
    print("\nchecks (max |error| / max |ref|; integer forms exact), YNNPACK = compiled HLO has __ynn_fusion")
    for shape in shapes:
        x = Operands(*shape)
        notes = []
        for name, (call, out, ref) in mkl_forms(lib, x).items():
            call()
            notes.append(f"{name} {check(name, out, ref)}")
            calls[shape, name] = call
        xla, ynn = xla_forms(x)
        for name, (call, ref) in xla.items():
            notes.append(f"{name} {check(name, np.asarray(call()), ref)} ({'YNNPACK' if ynn[name] else 'no YNNPACK'})")
            calls[shape, name] = call
        print(f"  {'x'.join(map(str, shape))}: " + "; ".join(notes))

    keys = list(calls)
    best = dict.fromkeys(keys, float("inf"))
    for r in range(args.rounds):
        shift = r * len(keys) // args.rounds
        for key in keys[shift:] + keys[:shift]:
            call = calls[key]
            start = time.perf_counter()
            for _ in range(args.calls):
                call()
            best[key] = min(best[key], (time.perf_counter() - start) / args.calls)
    load_after = os.getloadavg()[0]

    forms = MKL_FORMS + XLA_FORMS
    print(f"\nGFLOP/s (GOP/s for integer forms), best of {args.rounds} rounds x {args.calls} calls\n")
    print("| M x K x N | " + " | ".join(forms) + " | best MKL low-precision / best XLA low-precision |")
    print("|---|" + "---:|" * (len(forms) + 1))
    for shape in shapes:
        gflops = {f: 2 * np.prod(shape) / best[shape, f] / 1e9 for f in forms}
        mkl_lp = max(gflops["MKL bf16->f32"], gflops["MKL u8s8->s32"])
        xla_lp = max(gflops["XLA bf16->f32"], gflops["XLA s8s8->s32"])
        cells = " | ".join(f"{gflops[f]:.1f}" for f in forms)
        print(f"| {'x'.join(map(str, shape))} | {cells} | {mkl_lp / xla_lp:.2f}x |")
    print(f"\n1-minute load average: {load_before:.2f} before, {load_after:.2f} after ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
