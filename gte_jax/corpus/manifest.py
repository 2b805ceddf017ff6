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
from gte_jax.engine.quantization import check_ranges
from gte_jax.errors import UserError

MANIFEST_VERSION = 2
MANIFEST_RE = re.compile(r"^_manifest(?:\.process-\d{5}-of-\d{5})?\.json$")  # ours only: never a user's backup


class JobConflict(UserError):
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


# Settings a job records only when they are set (see job._JobRun), with the value their absence means.
OPTIONAL_SETTINGS = {
    "truncate_dim": None,
    "prompt_name": None,
    "prompt": "",
    "precision": "float32",
    "calibration": None,
}
# Settings that other settings already pin down: the vectors' dimension, and the prompt's text.
REDUNDANT_SETTINGS = ("truncate_dim", "prompt_name")


def comparable(settings: dict) -> dict:
    """``settings`` as a rerun compares them: the optional ones filled in with what their absence means, and
    the redundant ones left out, so that ``--truncate-dim 384`` on a 384-dimensional model is the same job as
    no ``--truncate-dim``."""
    full = {**OPTIONAL_SETTINGS, **settings}
    return {key: value for key, value in full.items() if key not in REDUNDANT_SETTINGS}


def check_settings(out_dir: str, settings: dict) -> tuple[dict[str, dict], dict]:
    """Refuses an output directory that holds a different job's shards, or files that are not ours.

    Settings bind an output only once it holds a shard: the manifest of a run that failed before its
    first shard (a wrong ``--text-field``, say) does not stop the corrected command.

    Returns:
        The manifests of this job, by path (those of failed runs of other settings left out), and the
        settings to run with: those recorded with the output's shards (equal to ``settings`` once
        compared as :func:`comparable` does), else ``settings``.

    Raises:
        JobConflict: the message names each differing setting.
        OutputError: a manifest is corrupt.
    """
    manifests = load_manifests(out_dir)
    has_shards = bool(shards.complete_shards(out_dir))  # a shard on disk binds every manifest: whose is it?
    ours, recorded = {}, settings
    for path, manifest in manifests.items():
        version = manifest.get("format_version")
        if version != MANIFEST_VERSION:
            raise JobConflict(
                f"{path} was written by another version of gte-jax (manifest format {version!r}, this one writes "
                f"{MANIFEST_VERSION}); finish that job with that version, or choose a new --output directory."
            )
        old = manifest.get("settings", {})
        old = old if isinstance(old, dict) else {}
        binds = has_shards or bool(manifest.get("shards"))
        if comparable(old) == comparable(settings):
            ours[path] = manifest
            recorded = old if binds else recorded
        elif binds:
            raise JobConflict(
                f"{out_dir} holds embeddings made with different settings ({path} has {_differences(old, settings)}); "
                "rerun with the same options to resume, or choose a new --output directory."
            )
    if not manifests:
        strangers = [n for n in os.listdir(out_dir) if not n.startswith(("_", "."))] if os.path.isdir(out_dir) else []
        if strangers:
            raise JobConflict(
                f"{out_dir} is not empty and has no _manifest.json (it holds {strangers[0]!r}); "
                "choose a new or empty --output directory."
            )
    return ours, recorded


def _differences(old: dict, new: dict) -> str:
    old, new = comparable(old), comparable(new)
    keys = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
    return "; ".join(f"{key} {old.get(key)!r} (now {new.get(key)!r})" for key in keys)


def recorded_quantization(manifests: dict[str, dict], out_dir: str, dim: int) -> dict | None:
    """The int8/uint8 ranges the manifests record (``{"precision", "ranges", "from"}``), or None.

    Raises:
        JobConflict: the manifests record different ranges.
        OutputError: the recorded ranges are damaged (hand-edited): the message names the manifest.
    """
    found = {}
    for path, manifest in manifests.items():
        if "quantization" in manifest:
            found[json.dumps(manifest["quantization"], sort_keys=True)] = (path, manifest["quantization"])
    if len(found) > 1:
        raise JobConflict(
            f"{out_dir} holds manifests with different int8/uint8 ranges; its shards are not comparable: "
            "choose a new --output directory."
        )
    if not found:
        return None
    path, record = next(iter(found.values()))
    ranges = record.get("ranges") if isinstance(record, dict) else None
    try:
        check_ranges(ranges, dim, advice="no shard was quantised with such ranges")
    except ValueError as e:
        raise OutputError(
            f"{path} is damaged: its quantization.ranges cannot be used ({str(e).rstrip('.')}); restore the manifest "
            "from a backup, or start over in a new --output directory."
        ) from None
    return record


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
