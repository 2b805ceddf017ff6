"""Encodes texts on simulated CPU devices; run by test_sharding.py in a fresh process.

usage: sharded_worker.py MODEL_DIR TEXTS.json OUT.npy MESH [PROCESS_ID NUM_PROCESSES PORT]
MESH is "data" (1-D over every device) or "data,model" (2 x model-parallel).
With a process id, jax.distributed joins the other processes and this one
encodes every NUM_PROCESSES-th text, starting at PROCESS_ID.
"""

import json
import sys

import jax

model_dir, texts_path, out_path, mesh_kind, *dist = sys.argv[1:]
if dist:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{dist[2]}", num_processes=int(dist[1]), process_id=int(dist[0])
    )

import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

from gte_jax import GTEEncoder  # noqa: E402

with open(texts_path, encoding="utf-8") as f:
    texts = json.load(f)
mesh = None
if mesh_kind == "data,model":
    mesh = Mesh(np.asarray(jax.devices()).reshape(-1, 2), ("data", "model"))
if dist:
    texts = texts[int(dist[0]) :: int(dist[1])]
    if dist[0] == "1":
        texts = texts[:40]  # processes with different amounts of work
enc = GTEEncoder.from_pretrained(model_dir, mesh=mesh, batch_size=16)
vectors = enc.encode(texts)
np.save(out_path, vectors)
print(f"devices={jax.device_count()} mesh={dict(enc.mesh.shape)} rows={len(vectors)}")
