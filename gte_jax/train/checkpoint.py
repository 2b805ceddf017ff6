"""Checkpoints of the whole train state (parameters, optimiser moments, step, dropout key) with Orbax.

A checkpoint is a folder ``DIR/<step>`` holding the Orbax state (``state/``) and a marker file
(:data:`MARKER`) saying this trainer wrote it. It is written under a hidden name and renamed into place
when complete, so a run killed mid-save leaves the previous checkpoint as the latest; ``--resume``
continues from it. Only folders with the marker count as checkpoints, and only they are ever deleted
(rotation keeps the ``max_to_keep`` newest): a user's folder that happens to be named ``1`` is never
taken for a checkpoint nor removed. The run's settings are kept beside them (``train_args.json``),
and a resume with different settings is refused: it would not end where the interrupted run would have.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from gte_jax.errors import UserError
from gte_jax.train.step import TrainState

ARGS_FILE = "train_args.json"
MARKER = "gte_jax_checkpoint.json"  # inside each checkpoint folder: {"step": N}
STATE = "state"  # the Orbax checkpoint inside it
_PARTIAL = ".partial-"  # a checkpoint being written
_OLD = ".replaced-"  # a checkpoint being replaced by one of the same step


class CheckpointMismatch(ValueError, UserError):
    """The checkpoint folder belongs to a run with other settings, holds checkpoints a fresh run would mix
    with, holds something that is not a checkpoint where one would go, or a checkpoint is corrupt."""


class Checkpoints:
    """A folder of numbered train-state checkpoints (the ``max_to_keep`` most recent are kept).

    Args:
        directory: created if missing.
        max_to_keep: older checkpoints (of this trainer) are deleted after each save.

    Raises:
        CheckpointMismatch: ``directory`` is a file, or cannot be created.
    """

    def __init__(self, directory: str, *, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self.max_to_keep = max_to_keep
        if os.path.lexists(self.directory) and not os.path.isdir(self.directory):
            raise CheckpointMismatch(f"--checkpoint-dir {directory} is a file; name a folder (it is created).")
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as e:
            raise CheckpointMismatch(f"cannot create the checkpoint folder {directory} ({e.strerror}).") from None
        self._checkpointer = ocp.Checkpointer(ocp.StandardCheckpointHandler())

    def path(self, step: int) -> str:
        """The folder of the checkpoint of ``step``."""
        return os.path.join(self.directory, str(step))

    def steps(self) -> list[int]:
        """The steps of the complete checkpoints of this trainer, oldest first."""
        return sorted(int(name) for name in os.listdir(self.directory) if name.isdigit() and self._ours(name))

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        steps = self.steps()
        return steps[-1] if steps else None

    def check_foreign(self) -> None:
        """Refuses a folder holding numbered entries this trainer did not write, where its checkpoints go.

        Raises:
            CheckpointMismatch: naming the first such entry.
        """
        foreign = sorted(n for n in os.listdir(self.directory) if n.isdigit() and not self._ours(n))
        if foreign:
            raise CheckpointMismatch(
                f"{os.path.join(self.directory, foreign[0])} is not a checkpoint of gte-jax train (it has no "
                f"{MARKER}), and checkpoints are written under such numbers in {self.directory}: move it elsewhere, "
                "or pass another --checkpoint-dir."
            )

    def _ours(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self.directory, name, MARKER))

    def save(self, state: TrainState) -> None:
        """Writes ``state`` under its step number (a collective under ``jax.distributed``), replacing this
        trainer's checkpoint of the same step, then deletes all but the ``max_to_keep`` newest.

        Raises:
            CheckpointMismatch: the step's folder exists and this trainer did not write it.
        """
        step = int(state.step)
        final = self.path(step)
        if os.path.lexists(final) and not self._ours(str(step)):
            raise CheckpointMismatch(
                f"{final} is not a checkpoint of gte-jax train (it has no {MARKER}); move it elsewhere and resume."
            )
        partial = os.path.join(self.directory, f"{_PARTIAL}{step}")
        os.makedirs(partial, exist_ok=True)
        # force: a partial folder of a run killed mid-save is replaced (the name is this module's own).
        self._checkpointer.save(os.path.join(partial, STATE), args=ocp.args.StandardSave(state._asdict()), force=True)
        if jax.process_index() == 0:
            marker = {"step": step, "written_by": "gte-jax train", "files": _inventory(os.path.join(partial, STATE))}
            with open(os.path.join(partial, MARKER), "w", encoding="utf-8") as f:
                json.dump(marker, f)
            if os.path.lexists(final):  # ours (checked above): the same step again, e.g. after a resume
                old = os.path.join(self.directory, f"{_OLD}{step}")
                if os.path.isfile(os.path.join(old, MARKER)):  # left by a run killed while replacing
                    shutil.rmtree(old)
                os.replace(final, old)
                os.replace(partial, final)
                shutil.rmtree(old)
            else:
                os.replace(partial, final)
            for old_step in self.steps()[: -self.max_to_keep]:
                shutil.rmtree(self.path(old_step))
        _sync(f"gte_jax checkpoint {step}")

    def restore(self, abstract: TrainState, step: int | None = None) -> TrainState:
        """The state saved at ``step`` (the latest by default), placed as ``abstract``'s shardings say.

        Raises:
            CheckpointMismatch: the checkpoint is corrupt or incomplete (the message names it and what to do).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointMismatch(f"{self.directory} holds no checkpoint to restore.")
        path = self.path(step)
        earlier = [s for s in self.steps() if s < step]
        then = f"to resume from step {earlier[-1]}" if earlier else "to start from step 0"
        # Checked before Orbax reads: its reader fails on damage with threads left behind that print tracebacks.
        damage = _damage(path)
        if damage:
            raise CheckpointMismatch(f"the checkpoint {path} is corrupt: {damage}; delete that folder {then}.")
        try:
            restored = self._checkpointer.restore(
                os.path.join(path, STATE), args=ocp.args.StandardRestore(abstract._asdict())
            )
        except Exception as e:  # Orbax and TensorStore raise many kinds for damaged files
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            reason = reason if len(reason) <= 200 else reason[:200] + "..."
            raise CheckpointMismatch(
                f"the checkpoint {path} is corrupt or incomplete ({reason}); delete that folder {then}."
            ) from None
        return TrainState(**restored)

    def check_args(self, args: dict[str, Any], *, resume: bool, output: str | None = None) -> None:
        """Records the run's settings, or checks them against the recorded ones when resuming.

        Args:
            args: the settings that decide the final weights.
            resume: whether the run continues the checkpoints.
            output: the model folder, for messages.

        Raises:
            CheckpointMismatch: resuming with other settings, or starting afresh over existing checkpoints,
                or an unreadable ``train_args.json``.
        """
        path = os.path.join(self.directory, ARGS_FILE)
        latest = self.latest_step()
        if latest is not None:
            if not resume:
                model = f" into {output}" if output else ""
                raise CheckpointMismatch(
                    f"{self.directory} holds checkpoints of an earlier run (up to step {latest}). --resume "
                    f"continues that run from step {latest} and writes its model{model}; for a new run, pass another "
                    "--output (a new model folder, with its own checkpoints), or delete that checkpoint folder "
                    "(the new model then replaces the one in the output folder)."
                )
            if os.path.isfile(path):
                recorded = _read_args(path)
                changed = sorted(k for k in set(args) | set(recorded) if args.get(k) != recorded.get(k))
                if changed:
                    details = ", ".join(f"{k}: {recorded.get(k)!r} then, {args.get(k)!r} now" for k in changed)
                    raise CheckpointMismatch(
                        f"{self.directory} was written by a run with other settings ({details}); resume with "
                        "the same options, or use another --checkpoint-dir."
                    )
            return
        if jax.process_index() == 0:
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(args, f, indent=2, sort_keys=True)
            os.replace(tmp, path)


_HASHED = 1 << 20  # files up to this size (Orbax's metadata and manifests) are hashed; larger ones sized


def _inventory(state_dir: str) -> dict[str, list[Any]]:
    """``relative path -> [size, sha256 or None]`` of every file of a written checkpoint."""
    files: dict[str, list[Any]] = {}
    for root, _, names in os.walk(state_dir):
        for name in names:
            path = os.path.join(root, name)
            size = os.path.getsize(path)
            files[os.path.relpath(path, state_dir)] = [size, _sha256(path) if size <= _HASHED else None]
    return files


def _damage(path: str) -> str | None:
    """What differs from the inventory in the checkpoint's marker (a missing, cut or changed file), or None."""
    try:
        with open(os.path.join(path, MARKER), encoding="utf-8") as f:
            files = {str(name): (int(size), digest) for name, (size, digest) in json.load(f)["files"].items()}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return f"its {MARKER} is unreadable"
    state = os.path.join(path, STATE)
    for name, (size, digest) in sorted(files.items()):
        file = os.path.join(state, name)
        if not os.path.isfile(file):
            return f"{STATE}/{name} is missing"
        now = os.path.getsize(file)
        if now != size:
            return f"{STATE}/{name} has {now} bytes, {size} when written"
        if digest is not None and _sha256(file) != digest:
            return f"{STATE}/{name} has changed since it was written"
    return None


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_args(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            recorded = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointMismatch(
            f"{path} is corrupt ({e}); it records the settings of the run to resume: restore it, or delete it to "
            "resume without that check (with the very same options)."
        ) from None
    if not isinstance(recorded, dict):
        raise CheckpointMismatch(
            f"{path} is corrupt (a JSON {type(recorded).__name__}, not an object); restore it, or delete it to "
            "resume without that check (with the very same options)."
        )
    return recorded


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
