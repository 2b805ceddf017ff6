"""Texts that exercise tokenisation and padding: short, empty, accented, CJK, emoji, very long."""

VARIED_TEXTS = [
    "what is a tensor?",
    "A tensor is a multi-dimensional array of numbers, generalising vectors and matrices.",
    "",
    "   \t\n ",
    "Café, naïve façade — Ünïcödé àccents, ÆØÅ and ß.",
    "日本語のテキストと中文文本。",
    "emoji 🙂🚀 and symbols ©®™ <html>&amp;</html>",
    "UPPER lower MiXeD CaSe don't can't won't 3.14159 1,000,000",
    " ".join(["a long text about embeddings and retrieval"] * 120),  # past 512 tokens
]
