"""One train step on simulated CPU devices; run by test_train_step.py in a fresh process.

usage: train_worker.py MODEL_DIR OUT.npz [--mini-batch-size M] [--process-id K --num-processes N --port P]

Builds the same global batch as ``train_batch`` (train_batches.py; every process builds all of it), takes
one SGD step with the GTE loss (anchor, positive, hard negative) and saves the loss and every parameter
after the step; with --mini-batch-size, also the same step in GradCache mode (keys prefixed ``cached/``).
Prints one JSON line with the devices and the mesh.
"""

import argparse
import json

import jax

parser = argparse.ArgumentParser()
parser.add_argument("model_dir")
parser.add_argument("out")
parser.add_argument("--mini-batch-size", type=int)
parser.add_argument("--process-id", type=int)
parser.add_argument("--num-processes", type=int)
parser.add_argument("--port", type=int)
args = parser.parse_args()
if args.process_id is not None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{args.port}", num_processes=args.num_processes, process_id=args.process_id
    )

import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from gte_jax.engine import sharding  # noqa: E402
from gte_jax.engine.loading import load  # noqa: E402
from gte_jax.train.step import StepOptions, Trainer, make_loss  # noqa: E402

from train_batches import LR, train_batch  # noqa: E402

mesh = sharding.default_mesh()
loaded = load(args.model_dir, mesh=mesh, max_length=32)
saved = {}
for prefix, mini_batch_size in [("", None)] + ([("cached/", args.mini_batch_size)] if args.mini_batch_size else []):
    options = StepOptions(dropout=False, mini_batch_size=mini_batch_size)
    trainer = Trainer(loaded.model, make_loss("gte"), optax.sgd(LR), mesh=mesh, options=options)
    state, metrics = trainer.step(trainer.init(0), trainer.shard_batch(train_batch(loaded.tokenizer)))
    saved[prefix + "loss"] = np.asarray(metrics["loss"].addressable_data(0))
    for path, var in nnx.to_flat_state(state.params):  # replicated: any shard is all of it
        saved[prefix + ".".join(map(str, path))] = np.asarray(var.get_value().addressable_data(0))
if jax.process_index() == 0:
    np.savez(args.out, **saved)
print(json.dumps({"devices": jax.device_count(), "mesh": dict(mesh.shape), "process": jax.process_index()}))
