"""Checkpoints of the whole train state (parameters, optimiser moments, step, dropout key) with Orbax.

Each checkpoint is written to a temporary folder and renamed into place when complete, so a run
killed mid-save leaves the previous checkpoint as the latest; ``--resume`` continues from it.
The run's settings are kept beside them (``train_args.json``), and a resume with different
settings is refused: it would not end where the interrupted run would have.
"""

from __future__ import annotations

import json
import os
from typing import Any

import orbax.checkpoint as ocp

from gte_jax.errors import UserError
from gte_jax.train.step import TrainState

ARGS_FILE = "train_args.json"


class CheckpointMismatch(ValueError, UserError):
    """The checkpoint folder belongs to a run with other settings, or holds checkpoints a fresh run would mix with."""


class Checkpoints:
    """A folder of numbered train-state checkpoints (the ``max_to_keep`` most recent are kept).

    Args:
        directory: created if missing.
        max_to_keep: older checkpoints are deleted after each save.
    """

    def __init__(self, directory: str, *, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self.manager.latest_step()

    def save(self, state: TrainState) -> None:
        """Writes ``state`` under its step number (a collective under ``jax.distributed``)."""
        self.manager.save(int(state.step), args=ocp.args.StandardSave(state._asdict()), force=True)
        self.manager.wait_until_finished()

    def restore(self, abstract: TrainState, step: int | None = None) -> TrainState:
        """The state saved at ``step`` (the latest by default), placed as ``abstract``'s shardings say."""
        step = self.latest_step() if step is None else step
        restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract._asdict()))
        return TrainState(**restored)

    def check_args(self, args: dict[str, Any], *, resume: bool) -> None:
        """Records the run's settings, or checks them against the recorded ones when resuming.

        Raises:
            CheckpointMismatch: resuming with other settings, or starting afresh over existing checkpoints.
        """
        path = os.path.join(self.directory, ARGS_FILE)
        if self.latest_step() is not None:
            if not resume:
                raise CheckpointMismatch(
                    f"{self.directory} holds checkpoints of an earlier run; pass --resume to continue it, "
                    "or another --checkpoint-dir to start afresh."
                )
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    recorded = json.load(f)
                changed = sorted(k for k in set(args) | set(recorded) if args.get(k) != recorded.get(k))
                if changed:
                    details = ", ".join(f"{k}: {recorded.get(k)!r} then, {args.get(k)!r} now" for k in changed)
                    raise CheckpointMismatch(
                        f"{self.directory} was written by a run with other settings ({details}); resume with "
                        "the same options, or use another --checkpoint-dir."
                    )
            return
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(args, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
