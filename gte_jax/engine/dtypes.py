"""The ``dtype`` names the encoder, the CLIs and the adapters take (no imports: the CLIs' parsers use it)."""

from __future__ import annotations

# float32: PyTorch's numbers. bfloat16: bf16 weights and matmul operands, float32 accumulation and
# float32 LayerNorm/softmax/pooling. int8: a float32 model whose dense layers are dynamically
# quantised (gte_jax.models.int8).
DTYPES = ("float32", "bfloat16", "int8")

HELP = (
    "compute dtype: float32 (matches PyTorch), bfloat16 (bf16 matmuls, float32 accumulation) or int8 "
    "(dynamic int8 dense layers); on CPU the low-precision ones pay off where the CPU has AVX512-BF16/AMX or VNNI"
)
