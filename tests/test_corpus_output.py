"""`gte-jax embed`'s output directory: locked per process, only its own files touched, damage named, full disks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from gte_jax.cli import main

from corpus_data import child_env, embed, embed_cmd, read_result, texts, tmp_files, write_jsonl, write_txt


def run_cmd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(embed_cmd(*args), env=child_env(), capture_output=True, text=True, timeout=300)


def finished_job(tmp_path, minilm_dir, n: int = 10) -> tuple[list, object]:
    """A finished 3-shard job: ``(args to rerun it, output directory)``."""
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts(n))])
    out = tmp_path / "out"
    args = [corpus, "--model", minilm_dir, "--output", out, "--shard-size", 4]
    assert embed(*args) == 0
    return args, out


@pytest.mark.slow
def test_second_job_on_a_locked_output_is_refused_and_a_killed_holder_blocks_nothing(tmp_path, minilm_dir):
    n = 600
    corpus = write_txt(tmp_path / "corpus.txt", texts(n))
    out = tmp_path / "out"
    args = [corpus, "--model", minilm_dir, "--output", str(out), "--shard-size", "64", "--quiet"]
    first = subprocess.Popen(embed_cmd(*args), env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "_manifest.json"
    try:
        deadline = time.monotonic() + 120
        while not (manifest.exists() and json.loads(manifest.read_text())["status"] == "running"):
            assert first.poll() is None and time.monotonic() < deadline, "the first job ended before it started"
            time.sleep(0.005)
        first.send_signal(signal.SIGSTOP)  # stopped, it still holds the lock: a deterministic "still running"
        # The same job, and one that differs only by a setting (the race that once left a mixed manifest).
        for extra in ([], ["--no-normalize"]):
            second = run_cmd(*args, *extra)
            assert second.returncode == 2, second.stderr
            assert "is in use by another gte-jax embed" in second.stderr, second.stderr
            assert f"pid {first.pid} on host " in second.stderr, second.stderr
        held = json.loads(manifest.read_text())
        assert held["status"] == "running" and held["settings"]["normalize"] is True
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (out / ".gte-jax.process-00000.lock").exists()  # left by the killed job: it must not block the rerun

    rerun = run_cmd(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert read_result(out)[0] == list(range(n))
    assert json.loads(manifest.read_text())["status"] == "complete"
    assert tmp_files(out) == []  # the killed job's temporary shard and the lock are gone


@pytest.mark.slow
def test_file_size_limit_stops_the_shard_cleanly(tmp_path, minilm_dir):
    corpus = write_txt(tmp_path / "corpus.txt", texts(100))
    out = tmp_path / "out"
    args = [corpus, "--model", minilm_dir, "--output", str(out), "--shard-size", "64", "--quiet"]
    # 64 KiB: room for the manifest, not for a shard (64 x 384 floats). Python ignores SIGXFSZ, so writes fail
    # with EFBIG, and so does closing the half-written file in the abort path.
    limited = subprocess.run(
        ["bash", "-c", 'ulimit -f 64 && exec "$@"', "bash", *embed_cmd(*args)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert limited.returncode == 2, limited.stderr
    assert f"cannot write {out / 'part-00000.parquet'} (File too large)" in limited.stderr, limited.stderr
    assert "Traceback" not in limited.stderr
    assert sorted(os.listdir(out)) == ["_manifest.json"]  # no temporary shard, no lock
    stopped = json.loads((out / "_manifest.json").read_text())
    assert stopped["status"] == "stopped" and "File too large" in stopped["error"]

    rerun = run_cmd(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert read_result(out)[0] == list(range(100))


def test_users_manifest_backup_is_kept_and_not_read(tmp_path, minilm_dir):
    args, out = finished_job(tmp_path, minilm_dir)
    shutil.copyfile(out / "_manifest.json", out / "_manifest.backup.json")
    (out / "_manifest.old.json").write_text('{"format_version": 1, "settings": {"other": "job"}}')
    (out / "_manifest.notes.json").write_text("not JSON at all")
    users = [".notes.tmp", ".part-00000.parquet.backup.tmp", ".gte-jax.notes"]
    for name in users + [".part-00001.parquet.4242.tmp", "._manifest.json.4242.tmp"]:  # the last two: a killed run's
        (out / name).write_bytes(b"partial")
    assert embed(*args) == 0
    assert (out / "_manifest.backup.json").exists() and (out / "_manifest.old.json").exists()
    assert (out / "_manifest.notes.json").exists()
    assert sorted(n for n in os.listdir(out) if n.startswith(".")) == sorted(users)


def test_output_path_that_is_a_file(tmp_path, minilm_dir, capsys):
    corpus = write_txt(tmp_path / "corpus.txt", texts(3))
    target = tmp_path / "taken.txt"
    target.write_text("a user's file\n")
    assert embed(corpus, "--model", minilm_dir, "--output", target) == 2
    assert f"--output {target} is a file, not a directory" in capsys.readouterr().err
    assert embed(corpus, "--model", minilm_dir, "--output", target / "sub") == 2
    assert f"cannot create the output directory {target / 'sub'} (Not a directory)" in capsys.readouterr().err
    assert target.read_text() == "a user's file\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only (0o555) directory regardless")
def test_output_directory_not_writable(tmp_path, minilm_dir, capsys):
    corpus = write_txt(tmp_path / "corpus.txt", texts(3))
    out = tmp_path / "readonly"
    out.mkdir(mode=0o555)
    assert embed(corpus, "--model", minilm_dir, "--output", out) == 2
    assert f"cannot write in the output directory {out}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, problem",
    [
        # truncated after its first field: a cut at a fixed place (half the text can land inside a string, whose
        # error says "Unterminated string" instead, and the manifest's length varies with the temporary paths)
        (lambda text: text[: text.index(",") + 1], "is corrupt (Expecting"),
        (lambda text: "[1, 2]\n", "is corrupt (a JSON list, not an object)"),
    ],
    ids=["truncated", "not an object"],
)
def test_corrupt_manifest_is_named(tmp_path, minilm_dir, capsys, content, problem):
    args, out = finished_job(tmp_path, minilm_dir)
    manifest = out / "_manifest.json"
    manifest.write_text(content(manifest.read_text()))
    capsys.readouterr()
    assert embed(*args) == 2
    assert f"{manifest} {problem}" in capsys.readouterr().err


def test_corrupt_shard_is_named_and_the_manifest_stays_complete(tmp_path, minilm_dir, capsys):
    args, out = finished_job(tmp_path, minilm_dir)
    shard = out / "part-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:200])
    before = (out / "_manifest.json").read_text()
    capsys.readouterr()
    assert embed(*args) == 2
    err = capsys.readouterr().err
    assert f"{shard} is not a whole shard written by gte-jax" in err and "delete it and rerun" in err, err
    assert (out / "_manifest.json").read_text() == before  # still "complete", untouched
    shard.unlink()
    assert embed(*args) == 0  # as the message says: the shard is redone
    assert read_result(out)[0] == list(range(10))


@pytest.mark.parametrize("target", ["part-00001.parquet", "part-00007.parquet"], ids=["over another", "past the end"])
def test_copied_shard_is_refused(tmp_path, minilm_dir, capsys, target):
    args, out = finished_job(tmp_path, minilm_dir)
    manifest = json.loads((out / "_manifest.json").read_text())
    for record in manifest["shards"]:  # every shard's range and checksum are recorded
        data = (out / record["file"]).read_bytes()
        assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["bytes"] == len(data)
        assert record["first_row"] == 4 * record["shard"]
    assert [r["rows"] for r in manifest["shards"]] == [4, 4, 2]

    shutil.copyfile(out / "part-00000.parquet", out / target)
    capsys.readouterr()
    assert embed(*args) == 2
    err = capsys.readouterr().err
    k = int(target[5:10])
    assert f"{out / target} is not shard {k} of this job (it records shard 0 (expected {k})" in err, err
    assert json.loads((out / "_manifest.json").read_text())["status"] == "complete"


def test_rerun_of_a_finished_job_says_so(tmp_path, minilm_dir, capsys):
    corpus = write_txt(tmp_path / "corpus.txt", texts(6))
    args = ["embed", corpus, "--model", minilm_dir, "--output", str(tmp_path / "out"), "--shard-size", "4"]
    assert main(args) == 0
    assert "6 rows embedded into 2 shard(s)" in capsys.readouterr().err
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "was already complete: 6 rows in 2 shard(s); nothing to do" in err and "rows embedded" not in err, err


def test_input_error_prints_no_empty_progress_bar_twice(tmp_path, minilm_dir, capsys):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": 42}\n')
    assert main(["embed", str(path), "--model", minilm_dir, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("0/2 [") <= 1, err
    assert f"\ngte-jax embed: error: {path} line 2: 'text' is a number" in err, err  # on a line of its own
