"""The lowest layer: attention kernels by backend (XLA einsums, chunked online softmax, cuDNN, splash)."""
