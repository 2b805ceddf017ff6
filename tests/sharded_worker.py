"""Encodes texts on simulated CPU devices; run by test_sharding.py in a fresh process.

usage: sharded_worker.py MODEL_DIR TEXTS.json OUT.npy [--mesh data|data,model] [--max-length N]
       [--warmup] [--process-id K --num-processes N --port P [--take M]]

With a process id, jax.distributed joins the other processes and this one encodes
every N-th text starting at K (process 1: only the first M of them, with --take). Prints one JSON
line: devices, mesh shape, rows, and the compiles during encode (after --warmup).
"""

import argparse
import json

import jax

parser = argparse.ArgumentParser()
parser.add_argument("model_dir")
parser.add_argument("texts")
parser.add_argument("out")
parser.add_argument("--mesh", default="data")
parser.add_argument("--max-length", type=int)
parser.add_argument("--batch-size", type=int, default=16)
parser.add_argument("--warmup", action="store_true")
parser.add_argument("--process-id", type=int)
parser.add_argument("--num-processes", type=int)
parser.add_argument("--port", type=int)
parser.add_argument("--take", type=int)
args = parser.parse_args()
if args.process_id is not None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{args.port}", num_processes=args.num_processes, process_id=args.process_id
    )

import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

from gte_jax import GTEEncoder  # noqa: E402

from compiles import CompileCounter  # noqa: E402

with open(args.texts, encoding="utf-8") as f:
    texts = json.load(f)
mesh = None
if args.mesh == "data,model":
    mesh = Mesh(np.asarray(jax.devices()).reshape(-1, 2), ("data", "model"))
if args.process_id is not None:
    texts = texts[args.process_id :: args.num_processes]
    if args.process_id == 1:
        texts = texts[: args.take]  # processes with different amounts of work
enc = GTEEncoder.from_pretrained(args.model_dir, mesh=mesh, batch_size=args.batch_size, max_length=args.max_length)
warmed = enc.warmup() if args.warmup else 0
with CompileCounter() as compiles:
    vectors = enc.encode(texts)
np.save(args.out, vectors)
report = {"devices": jax.device_count(), "mesh": dict(enc.mesh.shape), "rows": len(vectors)}
print(json.dumps({**report, "warmed": warmed, "compiles": compiles.count}))
