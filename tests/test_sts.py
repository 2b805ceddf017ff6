"""STS Benchmark with real weights: the figure sentence-transformers and MTEB report."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr


def test_stsb_spearman_minilm(minilm, sts_test):
    s1, s2, gold = sts_test
    a, b = minilm.encode(s1), minilm.encode(s2)
    cosine = np.sum(a * b, axis=1)  # unit vectors
    rho = spearmanr(cosine, gold).statistic
    print(f"STS-B test Spearman (all-MiniLM-L6-v2 via gte_jax): {rho:.5f}")
    assert abs(rho - 0.82032) < 5e-5  # sentence-transformers and MTEB give 0.82032 for this checkpoint
