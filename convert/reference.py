"""Reference embeddings from transformers' PyTorch ``BertModel``: what gte_jax must reproduce."""

from __future__ import annotations

import numpy as np


def torch_embeddings(
    model_dir: str, texts: list[str], *, max_length: int, pooling: str = "mean", normalize: bool = True
) -> np.ndarray:
    """Embeds ``texts`` with transformers' tokenizer and ``BertModel`` in float32.

    Masked mean (or CLS) pooling over the last hidden states, then L2
    normalisation, as sentence-transformers does for GTE.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    if pooling == "cls":
        vectors = hidden[:, 0]
    else:
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if normalize:
        vectors = torch.nn.functional.normalize(vectors, p=2, dim=-1)
    return vectors.numpy().astype(np.float32)


def torch_token_ids(model_dir: str, texts: list[str], *, max_length: int) -> list[list[int]]:
    """transformers' token ids per text (truncated, unpadded)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
