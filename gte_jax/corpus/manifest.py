"""The manifests of an output directory: reading, checking and writing ``_manifest.json``.

Each process of a job writes its own manifest (``_manifest.json`` for one process,
``_manifest.process-K-of-N.json`` for several). It records the job's settings, which a rerun
must match, the int8/uint8 ranges of a quantised job, and every shard's rows and checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

from gte_jax.corpus import shards
from gte_jax.corpus.shards import OutputError

MANIFEST_VERSION = 2
MANIFEST_RE = re.compile(r"^_manifest(?:\.process-\d{5}-of-\d{5})?\.json$")  # ours only: never a user's backup


class JobConflict(Exception):
    """The output directory holds the shards of a different job, or another process is writing them."""


def manifest_path(out_dir: str, process: int, count: int) -> str:
    name = "_manifest.json" if count == 1 else f"_manifest.process-{process:05d}-of-{count:05d}.json"
    return os.path.join(out_dir, name)


def load_manifests(out_dir: str) -> dict[str, dict]:
    """Every manifest in ``out_dir`` (files named as :func:`manifest_path` names them), by path.

    Raises:
        OutputError: a manifest is not a JSON object; the message names it.
    """
    found = {}
    names = sorted(n for n in os.listdir(out_dir) if MANIFEST_RE.match(n)) if os.path.isdir(out_dir) else []
    for name in names:
        path = os.path.join(out_dir, name)
        try:
            with open(path, encoding="utf-8") as f:
                manifest = json.load(f)
        except FileNotFoundError:
            continue  # removed by process 0 after a change of process count
        except (OSError, ValueError) as e:
            raise OutputError(_corrupt_manifest(path, str(e))) from None
        if not isinstance(manifest, dict):
            raise OutputError(_corrupt_manifest(path, f"a JSON {type(manifest).__name__}, not an object"))
        found[path] = manifest
    return found


def _corrupt_manifest(path: str, detail: str) -> str:
    return (
        f"{path} is corrupt ({detail}), so the job's settings cannot be checked; restore it, or start over "
        "in a new --output directory."
    )


def check_settings(out_dir: str, settings: dict) -> dict[str, dict]:
    """Refuses an output directory that holds a different job's shards, or files that are not ours.

    Returns:
        The manifests, by path.

    Raises:
        JobConflict: the message names each differing setting.
        OutputError: a manifest is corrupt.
    """
    manifests = load_manifests(out_dir)
    for path, manifest in manifests.items():
        version = manifest.get("format_version")
        if version != MANIFEST_VERSION:
            raise JobConflict(
                f"{path} was written by another version of gte-jax (manifest format {version!r}, this one writes "
                f"{MANIFEST_VERSION}); finish that job with that version, or choose a new --output directory."
            )
        old = manifest.get("settings", {})
        if old != settings:
            diffs = [
                f"{key} {old.get(key)!r} (now {settings.get(key)!r})"
                for key in sorted(set(old) | set(settings))
                if old.get(key) != settings.get(key)
            ]
            raise JobConflict(
                f"{out_dir} holds embeddings made with different settings ({path} has {'; '.join(diffs)}); "
                "rerun with the same options to resume, or choose a new --output directory."
            )
    if not manifests:
        ours = ("_", ".")
        strangers = [n for n in os.listdir(out_dir) if not n.startswith(ours)] if os.path.isdir(out_dir) else []
        if strangers:
            raise JobConflict(
                f"{out_dir} is not empty and has no _manifest.json (it holds {strangers[0]!r}); "
                "choose a new or empty --output directory."
            )
    return manifests


def settings_digest(settings: dict) -> str:
    """A short digest of the settings, recorded in every shard so a rerun can tell its own shards."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def write_manifest(path: str, manifest: dict) -> None:
    """Writes ``manifest`` to ``path`` atomically.

    Raises:
        OutputError: it cannot be written (a full disk); the message says to rerun once there is space.
    """
    try:
        shards.write_json_atomic(path, manifest)
    except OSError as e:
        raise OutputError(f"cannot write {path} ({e.strerror}); free some space, then rerun to resume.") from None
