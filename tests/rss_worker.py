"""Embeds one text of a given number of tokens and reports the peak resident memory it added; run by
test_families_e2e.py in a fresh process, so that the peak (``ru_maxrss``) is this text's alone.

usage: rss_worker.py MODEL_DIR TEXT.txt OUT.npy

Prints one JSON line: ``tokens``, ``baseline_mib`` (the resident memory after loading and embedding a one-word
text) and ``growth_mib`` (how far embedding TEXT raised the peak past it). The peak is reset after loading
(Linux's ``/proc/self/clear_refs``), so that loading's own peak does not hide a short text's growth. The peak is
read as ``VmHWM`` from ``/proc/self/status``, this process's own: ``getrusage``'s ``ru_maxrss`` also keeps the peak of
the process it was forked from (a pytest process of a gigabyte), which would hide everything here.
"""

import ctypes
import json
import sys

import numpy as np

from gte_jax import GTEEncoder


def peak_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


model_dir, text_path, out = sys.argv[1:4]
with open(text_path, encoding="utf-8") as f:
    text = f.read()
enc = GTEEncoder.from_pretrained(model_dir)
enc.encode(["warm"])  # the runtime, its threads and a first compile count in the baseline, not the growth
ctypes.CDLL("libc.so.6").malloc_trim(0)  # loading's freed buffers back to the system: work cannot hide in them
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) back to the resident memory now
baseline = peak_kib()
vectors = enc.encode([text])
growth = peak_kib() - baseline
np.save(out, vectors)
tokens = len(enc.tokenizer([text])[0])
print(json.dumps({"tokens": tokens, "baseline_mib": baseline / 1024, "growth_mib": growth / 1024}))
