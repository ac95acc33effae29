"""Reading a run back from its checkpoint: its record, its settings and its trained weights.

A checkpoint's ``hyper_parameters`` are the training module's arguments in plain types (the base model as the user
named it, the LoRA settings, the loss, the mode), enough to rebuild the trained model; its ``vzero`` entry is the
run record: vzero's version, the schedule's span and the MLflow run id, which a resumed run continues.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vzero.checkpoint import CheckpointError, VerifiedCheckpointIO

WEIGHTS_PREFIX = "net."
"""Trainable weights sit under ``net.`` in a checkpoint's ``state_dict`` (the module's attribute)."""


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint at ``path`` on the CPU, verified as training's loads are (:mod:`vzero.checkpoint`); a missing,
    empty, truncated, garbage or corrupt file is one :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint file: {path}")
    return VerifiedCheckpointIO().load_checkpoint(path, map_location="cpu", weights_only=True)


def read_record(path: str | Path) -> dict:
    """The run record (:meth:`VisionZeroModule.record`) of the checkpoint at ``path``; empty for checkpoints written
    before records existed."""
    record = load_checkpoint(path).get("vzero") or {}
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: its 'vzero' entry is a {type(record).__name__}, not a run record")
    return record


def trained_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The checkpoint's trainable tensors, named as in the model (``net.`` stripped)."""
    state = checkpoint.get("state_dict") or {}
    return {k[len(WEIGHTS_PREFIX) :]: v for k, v in state.items() if k.startswith(WEIGHTS_PREFIX)}
