"""``gte-jax serve`` under load: N concurrent clients over a mixed workload, against offline ``encode``.

The workload is a fixed (seeded) list of requests, each of 1-32 texts: STS-B sentences, and now
and then a 300-512-token document (truncated at the model's limit). Each client posts one request
at a time to the OpenAI route (``encoding_format: base64``, as the ``openai`` client asks), the
next as soon as the last one is answered, until the list is done. Reported per server:
texts/s over the whole run (first send to last answer), p50/p99 request latency, and the ratio to
offline ``GTEEncoder.encode`` of the same texts in one call in one process (a fresh child), plus
the max abs difference of every vector against that offline run.

    python bench/serve_load.py                                  # bundled MiniLM, 16 clients, 200 requests
    python bench/serve_load.py --infinity /tmp/infvenv/bin/infinity_emb   # also infinity-emb, same weights
    python bench/serve_load.py --infinity /tmp/infvenv/bin/infinity_emb --infinity-threads default,1
    python bench/serve_load.py --model DIR --clients 32 --requests 400

Each server starts as a user would start it (``gte-jax serve`` warms up every batch shape first;
infinity warms up itself), gets an untimed warm-up pass over a tenth of the requests, then
``--passes`` timed passes, of which the best is kept, as for the offline side. The compilation
cache (``JAX_COMPILATION_CACHE_DIR``, under the bench cache) makes later runs start faster.
Appends (or replaces) its section of bench/RESULTS.md (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SECTION = "## gte-jax serve under load"
JAX_CACHE = os.path.join(common.CACHE_DIR, "jax-cache")


def workload(model_dir: str, requests: int, long_share: float, seed: int = 0) -> list[list[str]]:
    """``requests`` lists of 1-32 texts: STS-B sentences, a ``long_share`` of them 300-512-token documents."""
    sentences = common.sts_sentences("test")
    docs = common.long_documents(sentences, model_dir, n=64, seed=seed)
    rng = random.Random(seed)
    return [
        [rng.choice(docs) if rng.random() < long_share else rng.choice(sentences) for _ in range(rng.randint(1, 32))]
        for _ in range(requests)
    ]


def _offline_child(args: argparse.Namespace) -> None:
    """In a fresh process: ``encode`` every text in one call, best of ``--passes`` after a first (compiling) one."""
    from gte_jax import GTEEncoder
    from gte_jax.engine import sharding

    with open(args.texts) as f:
        texts = json.load(f)
    enc = GTEEncoder.from_pretrained(args.model, mesh=sharding.local_mesh())
    vectors = enc.encode(texts)  # compiles this workload's shapes
    best = (float("inf"), 0.0)
    for _ in range(args.passes):
        began, cpu = time.perf_counter(), time.process_time()
        vectors = enc.encode(texts)
        best = min(best, (time.perf_counter() - began, time.process_time() - cpu))
    np.save(args.vectors, vectors)
    print(json.dumps({"seconds": best[0], "cpu_seconds": best[1], "texts": len(texts), "max_length": enc.max_length}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess on a free loopback port, its output in a log file."""

    def __init__(
        self, name: str, cmd: list[str], port: int, route: str, model_name: str, log_dir: str, env: dict[str, str]
    ):
        self.name, self.port, self.route, self.model_name = name, port, route, model_name
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = os.path.join(log_dir, f"{name.split()[0]}-{port}.log")
        env = {
            **os.environ,
            **env,
            "JAX_COMPILATION_CACHE_DIR": JAX_CACHE,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "HF_HUB_OFFLINE": "1",
            "INFINITY_ANONYMOUS_USAGE_STATS": "0",  # infinity phones home otherwise
            "DO_NOT_TRACK": "1",
        }
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, path: str, timeout: float) -> float:
        import httpx

        began = time.perf_counter()
        while time.perf_counter() - began < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: see {self.log_path}")
            try:
                if httpx.get(self.url + path, timeout=2.0).status_code == 200:
                    return time.perf_counter() - began
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} was not ready after {timeout:.0f} s: see {self.log_path}")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (Linux ``/proc``)."""
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


async def _load(server: Server, requests: list[list[str]], clients: int, dim: int) -> dict:
    """Closed-loop load: ``clients`` workers, each sending the next request as soon as its last one is answered."""
    import httpx

    latencies = [0.0] * len(requests)
    vectors: list[np.ndarray | None] = [None] * len(requests)
    todo = iter(range(len(requests)))
    failures: list[str] = []

    async def worker(client: httpx.AsyncClient) -> None:
        for i in todo:
            body = {"input": requests[i], "model": server.model_name, "encoding_format": "base64"}
            began = time.perf_counter()
            r = await client.post(server.url + server.route, json=body)
            latencies[i] = time.perf_counter() - began
            if r.status_code != 200:
                failures.append(f"{r.status_code} {r.text[:200]}")
                continue
            data = sorted(r.json()["data"], key=lambda d: d["index"])
            vectors[i] = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data])

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=600.0, limits=limits) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        seconds = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"{server.name}: {len(failures)} requests failed, first: {failures[0]}")
    return {
        "seconds": seconds,
        "p50_ms": 1000 * float(np.percentile(latencies, 50)),
        "p99_ms": 1000 * float(np.percentile(latencies, 99)),
        "vectors": np.concatenate([v for v in vectors if v is not None]).reshape(-1, dim),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model directory (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default: 16)")
    p.add_argument("--requests", type=int, default=200, help="requests of 1-32 texts each (default: 200)")
    p.add_argument("--long-share", type=float, default=0.03, help="share of texts that are documents (default 0.03)")
    p.add_argument("--passes", type=int, default=2, help="timed passes per side, the best kept (default: 2)")
    p.add_argument("--infinity", default=None, help="infinity_emb executable: also run infinity-emb (torch engine)")
    p.add_argument(
        "--infinity-threads",
        default="default",
        help="comma-separated OMP_NUM_THREADS settings to run infinity with, 'default' for unset (default: default)",
    )
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"))
    p.add_argument("--no-write", dest="write", action="store_false", help="print the section, leave RESULTS.md")
    p.add_argument("--child-offline", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--texts", help=argparse.SUPPRESS)
    p.add_argument("--vectors", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.model = args.model or common.tokenizer_source()
    if args.child_offline:
        return _offline_child(args)

    requests = workload(args.model, args.requests, args.long_share)
    texts = [t for r in requests for t in r]
    tmp = tempfile.mkdtemp(prefix="serve_load-")
    texts_path = os.path.join(tmp, "texts.json")
    with open(texts_path, "w") as f:
        json.dump(texts, f)
    vectors_path = os.path.join(tmp, "offline.npy")
    load_avg = [os.getloadavg()[0]]
    print(f"{len(requests)} requests, {len(texts)} texts; offline encode in a fresh process ...", file=sys.stderr)
    offline = common.run_child(
        os.path.abspath(__file__),
        ["--child-offline", "--model", args.model, "--texts", texts_path, "--vectors", vectors_path]
        + ["--passes", str(args.passes)],
        env={"JAX_COMPILATION_CACHE_DIR": JAX_CACHE, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"},
    )
    reference = np.load(vectors_path)
    dim = reference.shape[1]
    tokens = sum(common.token_counts(args.model, texts, max_length=offline["max_length"]))
    offline_rate = len(texts) / offline["seconds"]
    offline_per_cpu = len(texts) / offline["cpu_seconds"]
    offline_name = "offline `GTEEncoder.encode` (one call, one process)"
    rows = [(offline_name, offline_rate, None, None, offline["cpu_seconds"], 0.0, None)]

    gte_port = free_port()
    servers = [
        (
            f"gte-jax serve {_version('gte-jax')}",
            ["gte-jax", "serve", "--model", args.model, "--served-model-name", "bench", "--port", str(gte_port)],
            gte_port,
            "/v1/embeddings",
            "bench",
            "/health",
            {},
        )
    ]
    if args.infinity:
        python = os.path.join(os.path.dirname(args.infinity), "python")
        version = subprocess.run(
            [python, "-c", "import importlib.metadata as m; print(m.version('infinity_emb'))"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        for threads in args.infinity_threads.split(","):
            port = free_port()
            cmd = [args.infinity, "v2", "--model-id", args.model, "--served-model-name", "bench", "--engine", "torch"]
            cmd += ["--device", "cpu", "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port)]
            name = f"infinity-emb {version} (torch engine)"
            env = {}
            if threads != "default":
                name += f", OMP_NUM_THREADS={threads}"
                env = {"OMP_NUM_THREADS": threads}
            servers.append((name, cmd, port, "/embeddings", "bench", "/health", env))
    for name, cmd, port, route, model_name, health, env in servers:
        print(f"{name}: starting ...", file=sys.stderr)
        server = Server(name, cmd, port, route, model_name, tmp, env)
        try:
            ready = server.wait_ready(health, timeout=900)
            asyncio.run(_load(server, requests[: max(1, len(requests) // 10)], args.clients, dim))  # warm-up pass
            runs = []
            for _ in range(args.passes):
                load_avg.append(os.getloadavg()[0])
                cpu = server.cpu_seconds()
                runs.append(asyncio.run(_load(server, requests, args.clients, dim)))
                runs[-1]["cpu_seconds"] = server.cpu_seconds() - cpu
            load_avg.append(os.getloadavg()[0])
            run = min(runs, key=lambda r: r["seconds"])
        finally:
            server.stop()
        rate = len(texts) / run["seconds"]
        diff = float(np.max(np.abs(run["vectors"] - reference)))
        rows.append((name, rate, run["p50_ms"], run["p99_ms"], run["cpu_seconds"], diff, ready))
        summary = f"{rate:.1f} texts/s, p50 {run['p50_ms']:.0f} ms, p99 {run['p99_ms']:.0f} ms"
        print(f"{name}: {summary}, {run['cpu_seconds']:.1f} CPU s", file=sys.stderr)

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:.0f}"

    cores = len(os.sched_getaffinity(0))
    busy = max(load_avg) > cores
    lines = [
        SECTION,
        "",
        f"- machine: {_cpu_name()}, {cores} cores, {platform.system()}; 1-min load average during the run "
        f"{min(load_avg):.1f}-{max(load_avg):.1f}"
        + (" (above the core count: other jobs shared the machine, so wall-clock rates are rough)" if busy else ""),
        f"- model: `{os.path.basename(args.model.rstrip('/'))}` (float32, max {offline['max_length']} tokens), "
        "every server on the same weights and CPU, started with its defaults",
        f"- workload: {len(requests)} requests of 1-32 texts ({len(texts)} texts, {tokens} real tokens; "
        f"{args.long_share:.0%} of texts are 300-512-token documents, the rest STS-B sentences), "
        f"{args.clients} concurrent clients, closed loop, OpenAI route with `encoding_format: base64`; an untimed "
        f"warm-up pass over a tenth of the requests, then the best of {args.passes} timed passes (offline: the best "
        f"of {args.passes} `encode` calls after a first, compiling one)",
        f"- command: `python bench/serve_load.py {' '.join(sys.argv[1:])}`".replace("  ", " "),
        "",
        "| server | texts/s | p50 ms | p99 ms | texts/s / offline | CPU s | texts per CPU s / offline "
        "| max abs diff vs offline | ready after s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rate, p50, p99, cpu, diff, ready in rows:
        lines.append(
            f"| {name} | {rate:.1f} | {ms(p50)} | {ms(p99)} | {rate / offline_rate:.2f} | {cpu:.1f} | "
            f"{len(texts) / cpu / offline_per_cpu:.2f} | {diff:.1e} | {'-' if ready is None else f'{ready:.0f}'} |"
        )
    lines += [
        "",
        "texts/s is wall-clock throughput; on a machine shared with other jobs it moves with their load. CPU s is the "
        "CPU time (user + system, all threads) of the server process during the kept pass (offline: of the encoding "
        "process), so texts per CPU second compares the work each side does per text whatever the load.",
    ]
    if args.infinity:
        lines += [
            "",
            "infinity-emb runs in its own virtual environment (it pins numpy 1.26 and older transformers), with the "
            "same torch (CPU build) as the rest of this repository. Its torch engine uses OpenMP threads, one per "
            "core by default; when other jobs keep the cores busy those threads wait on each other at every "
            "operator, which is why a run with `OMP_NUM_THREADS=1` is listed too where it was asked for.",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        common.replace_section(args.out, text)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
