"""Checkpoints: finding a model's files (local or Hub), reading and converting their tensors with the family's
rules, the sentence-transformers settings, and exporting back to the Hugging Face layout."""
