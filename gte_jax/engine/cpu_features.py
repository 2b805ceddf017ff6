"""What the host CPU offers for low-precision matmuls, and a warning where a dtype would be slow.

XLA:CPU runs ``dtype="bfloat16"`` and ``dtype="int8"`` faster than float32 only on CPUs with
the matching dot instructions (``bench/README.md``, "Low precision on CPU", has the numbers):
AVX512-BF16 or AMX-BF16 (x86), BF16 (Arm) for bfloat16; AVX512-VNNI, AVX-VNNI or AMX-INT8
(x86), I8MM or the dot-product extension (Arm) for int8. Elsewhere the same program runs, on
emulated or widened instructions, and can be slower than float32.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings

# dtype -> CPU flags (as /proc/cpuinfo spells them, x86 and Arm) that give it a fast dot.
FAST_FLAGS = {
    "bfloat16": ("avx512_bf16", "amx_bf16", "bf16"),
    "int8": ("avx512_vnni", "avx_vnni", "amx_int8", "i8mm", "asimddp"),
}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (``flags`` on x86, ``Features`` on Arm);
    empty where the file is missing (not Linux) or names none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def fast_flags(dtype: str, flags: frozenset[str] | None = None) -> tuple[str, ...]:
    """The flags among ``flags`` (the host's by default) that give ``dtype`` a fast dot on CPU."""
    flags = cpu_flags() if flags is None else flags
    return tuple(f for f in FAST_FLAGS.get(dtype, ()) if f in flags)


def slow_dtype_message(dtype: str, flags: frozenset[str] | None = None) -> str | None:
    """Why ``dtype`` is likely slower than float32 on this CPU, or None (float32, a CPU with the
    instructions, or a CPU whose flags cannot be read)."""
    flags = cpu_flags() if flags is None else flags
    if dtype not in FAST_FLAGS or not flags or fast_flags(dtype, flags):
        return None
    wanted = ", ".join(FAST_FLAGS[dtype])
    return (
        f'dtype="{dtype}" on this CPU: it has none of {wanted}, so XLA:CPU runs the {dtype} matmuls '
        f'without fast instructions and it is likely slower than dtype="float32" (the default). '
        f"See the README's CPU precision table."
    )


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _outside_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside gte_jax, for :func:`warnings.warn` called here."""
    level, frame = 1, sys._getframe(1)  # the function calling warnings.warn
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level


@functools.cache
def warn_if_slow(dtype: str) -> None:
    """Warns once per dtype per process, pointing at the user's call, when ``dtype`` is likely slower than
    float32 on this CPU."""
    message = slow_dtype_message(dtype)
    if message is not None:
        warnings.warn(message, RuntimeWarning, stacklevel=_outside_stacklevel())
