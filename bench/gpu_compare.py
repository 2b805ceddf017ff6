"""gte_jax against sentence-transformers on one NVIDIA GPU, bf16, 512-token documents, with MFU.

Same protocol as ``bench/compare.py`` (fresh alternating subprocesses, same
weights: a random-init gte-base by default), but on the GPU in bfloat16:
gte_jax ``dtype="bfloat16"`` (attention: the backend default, cuDNN fused
attention where available), sentence-transformers ``model.to(torch.bfloat16)``
(``--st-dtype float16`` for ``model.half()``). Every document is exactly
``--tokens`` tokens, so no padding skews the count.

Model FLOPs utilisation counts matmul FLOPs only (biases, LayerNorm, softmax,
GELU ignored), per token of a sequence of T tokens through L layers of width D
with F intermediate units:

    FLOPs/token = L * (2 * (4*D*D + 2*D*F)  +  4*T*D)
                       Q,K,V,O + FFN matmuls    QK^T and PV

i.e. 2 x non-embedding matmul parameters, plus attention. gte-base at T=512:
12 * (14.16M + 1.57M) = 188.7 MFLOP/token. MFU = tokens/s * FLOPs/token /
peak; the peak defaults to 989 TFLOP/s (H100/H200 SXM, bf16 dense).

    python bench/gpu_compare.py                           # gte-base shape, 1024 docs x 512 tokens
    python bench/gpu_compare.py --model DIR --docs 4096 --batch-size 128 --peak-tflops 989
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def flops_per_token(hidden: int, layers: int, intermediate: int, tokens: int) -> float:
    """Matmul FLOPs per token of a BERT encoder (see the module docstring)."""
    return layers * (2 * (4 * hidden * hidden + 2 * hidden * intermediate) + 4 * tokens * hidden)


def _child(args) -> None:
    t0 = time.perf_counter()
    with open(args.texts) as f:
        texts = json.load(f)
    info = {}
    if args.child == "st":
        import torch
        from sentence_transformers import SentenceTransformer

        if not torch.cuda.is_available():
            raise SystemExit("torch sees no CUDA GPU; install a CUDA build of torch.")
        model = SentenceTransformer(args.model, device="cuda")
        model = model.half() if args.st_dtype == "float16" else model.to(torch.bfloat16)
        info["device"] = torch.cuda.get_device_name()

        def encode(batch):
            return model.encode(batch, batch_size=args.batch_size, normalize_embeddings=True)

        def peak_mem():
            return torch.cuda.max_memory_allocated() / 2**20
    else:
        import jax

        from gte_jax import GTEEncoder

        if jax.default_backend() != "gpu":
            raise SystemExit(f"jax runs on {jax.default_backend()!r}, not a GPU; pip install 'jax[cuda12]'.")
        kwargs = {"dtype": "bfloat16", "batch_size": args.batch_size, "max_batch_tokens": args.batch_size * args.tokens}
        if args.attention_impl:
            kwargs["attention_impl"] = args.attention_impl
        model = GTEEncoder.from_pretrained(args.model, **kwargs)
        info["device"] = jax.devices()[0].device_kind
        info["attention_impl"] = model.model.layer[0].attention.attention_impl
        encode = model.encode

        def peak_mem():
            stats = jax.devices()[0].memory_stats() or {}
            return stats.get("peak_bytes_in_use", 0) / 2**20

    encode([texts[0]])
    info["cold_s"] = time.perf_counter() - t0
    t = time.perf_counter()
    vectors = encode(texts)
    info["first_s"] = time.perf_counter() - t
    steady = []
    for _ in range(args.passes):
        t = time.perf_counter()
        encode(texts)
        steady.append(time.perf_counter() - t)
    info["steady_s"] = min(steady)
    info["peak_device_mb"] = peak_mem()
    info["head"] = vectors[:16].astype("float32").tolist()
    print(json.dumps(info))


def _check_gpu() -> None:
    """Fails early, with what to do, where there is no NVIDIA GPU (without starting CUDA in this process)."""
    smi = shutil.which("nvidia-smi")
    ok = smi is not None and subprocess.run([smi, "-L"], capture_output=True).returncode == 0
    if not ok:
        raise SystemExit(
            "bench/gpu_compare.py needs an NVIDIA GPU (nvidia-smi finds none); on CPU run bench/compare.py instead."
        )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="checkpoint folder (default: a random-init --shape model, made once and cached)")
    p.add_argument("--shape", default="gte-base", choices=sorted(common.SHAPES))
    p.add_argument("--docs", type=int, default=1024, help="documents to embed")
    p.add_argument("--tokens", type=int, default=512, help="tokens per document (truncation length)")
    p.add_argument("--batch-size", type=int, default=64, help="texts per step, both sides")
    p.add_argument("--rounds", type=int, default=2, help="fresh processes per side, alternating ST, JAX, ...")
    p.add_argument("--passes", type=int, default=3, help="timed passes after the first; the best counts")
    p.add_argument("--st-dtype", default="bfloat16", choices=("bfloat16", "float16"))
    p.add_argument("--attention-impl", default="", help="gte_jax attention kernel (default: the backend's)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU, for MFU")
    p.add_argument("--child", choices=("st", "jax"), help=argparse.SUPPRESS)
    p.add_argument("--texts", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args)
    _check_gpu()

    model = args.model or common.random_checkpoint(args.shape)
    with open(os.path.join(model, "config.json")) as f:
        cfg = json.load(f)
    per_token = flops_per_token(cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], args.tokens)
    sentences = common.sts_sentences()
    docs = common.long_documents(sentences, model, args.docs, lo=args.tokens + 20, hi=args.tokens + 80)
    lengths = common.token_counts(model, docs, max_length=args.tokens)
    assert min(lengths) == args.tokens, "every document should fill the truncation length"
    tokens = sum(lengths)
    print(f"model {model}: {args.docs} docs x {args.tokens} tokens, {per_token / 1e6:.1f} MFLOP/token")

    runs = {"st": [], "jax": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "texts.json")
        with open(path, "w") as f:
            json.dump(docs, f)
        forwarded = ["--model", model, "--texts", path, "--batch-size", str(args.batch_size)]
        forwarded += ["--passes", str(args.passes), "--st-dtype", args.st_dtype, "--tokens", str(args.tokens)]
        if args.attention_impl:
            forwarded += ["--attention-impl", args.attention_impl]
        for i in range(args.rounds):
            for side in ("st", "jax"):
                r = common.run_child(__file__, ["--child", side, *forwarded])
                runs[side].append(r)
                rate = tokens / r["steady_s"]
                print(
                    f"round {i + 1} {side:3s} on {r['device']}: {args.docs / r['steady_s']:.0f} texts/s, "
                    f"{rate:.0f} tokens/s, MFU {rate * per_token / (args.peak_tflops * 1e12):.1%}, "
                    f"first pass {r['first_s']:.1f} s, cold {r['cold_s']:.1f} s, peak {r['peak_device_mb']:.0f} MB"
                    + (f", attention {r['attention_impl']}" if "attention_impl" in r else "")
                )
                sys.stdout.flush()

    import numpy as np

    best = {side: min(r["steady_s"] for r in runs[side]) for side in runs}
    diff = np.abs(np.asarray(runs["st"][0]["head"]) - np.asarray(runs["jax"][0]["head"])).max()
    print(f"\nFLOPs/token = L*(2*(4*D^2 + 2*D*F) + 4*T*D) = {per_token / 1e6:.1f} M; peak {args.peak_tflops} TFLOP/s")
    print("| side | texts/s | tokens/s | MFU |\n|---|---:|---:|---:|")
    for side, label in (("st", f"sentence-transformers ({args.st_dtype})"), ("jax", "gte_jax (bfloat16)")):
        rate = tokens / best[side]
        mfu = rate * per_token / (args.peak_tflops * 1e12)
        print(f"| {label} | {args.docs / best[side]:.0f} | {rate:.0f} | {mfu:.1%} |")
    print(f"JAX / ST throughput: {best['st'] / best['jax']:.2f}; max abs embedding diff (bf16 both): {diff:.1e}")


if __name__ == "__main__":
    main()
