"""Finding and reading a run back: its checkpoint folder, which checkpoint a resume means, and the checkpoint's
record and trained weights.

A checkpoint's ``hyper_parameters`` are the training module's arguments in plain types (the base model as the user
named it, the LoRA settings, the loss, the mode, the decoding settings), enough to rebuild the trained model (older
names are read by :func:`vzero.cli.renamed.upgrade_settings`); its ``vzero`` entry is the run record: vzero's version,
the schedule's span and the MLflow run id, which a resumed run continues. A sharded checkpoint (the folder FSDP2 writes)
holds them in its ``meta.pt`` (:func:`vzero.checkpoint.load_sharded_metadata`). A resume keeps the schedule's span
(:func:`vzero.rl.schedule.check_resumed_span`, checked here before anything starts).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from jsonargparse import Namespace

from vzero.checkpoint import (
    SHARDED_METADATA,
    CheckpointError,
    VerifiedCheckpointIO,
    load_sharded_metadata,
    trained_weights,
)
from vzero.rl.schedule import check_resumed_span


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint at ``path`` on the CPU, verified as training's loads are (:mod:`vzero.checkpoint`); a missing,
    empty, truncated, garbage or corrupt file is one :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint file: {path}")
    return VerifiedCheckpointIO().load_checkpoint(path, map_location="cpu", weights_only=True)


def read_record(path: str | Path) -> dict:
    """The run record (:meth:`VisionZeroModule.record`) of the checkpoint at ``path``, a file or a sharded checkpoint's
    folder; empty for checkpoints written before records existed."""
    path = Path(path)
    record = (load_sharded_metadata(path) if path.is_dir() else load_checkpoint(path)).get("vzero") or {}
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: its 'vzero' entry is a {type(record).__name__}, not a run record")
    return record


def load_trained_weights(net: torch.nn.Module, checkpoint: dict, path: str | Path) -> None:
    """Load the checkpoint's trained weights into ``net``, which must train exactly those tensors; otherwise one
    :class:`CheckpointError` naming ``path`` and what does not fit."""
    weights = trained_weights(checkpoint)
    expected = {n for n, p in net.named_parameters() if p.requires_grad}
    missing, unexpected = expected - set(weights), set(weights) - expected
    if missing or unexpected:
        example = sorted(missing or unexpected)[0]
        raise CheckpointError(
            f"{path} does not fit the model: {len(missing)} trained weights missing, {len(unexpected)} unexpected "
            f"(e.g. {example}); was it written with other model settings (model.vlm.lora, model.vlm.name_or_path)?"
        )
    net.load_state_dict(weights, strict=False)


def check_schedule(record: dict, cfg) -> None:
    """Refuse, before anything starts, a resume that would re-stretch the checkpoint's learning-rate schedule (the
    module checks the same when it loads the checkpoint; failing here leaves the run's MLflow record untouched)."""
    saved, schedule = record.get("schedule_steps"), cfg.model.get("schedule")
    if saved is None or schedule is None:
        return
    if isinstance(schedule, Namespace):
        explicit = schedule.get("init_args", Namespace()).get("steps")
    else:
        explicit = getattr(schedule, "steps", None)
    try:
        check_resumed_span(saved, explicit, cfg.trainer.max_steps)
    except ValueError as error:
        raise SystemExit(f"vzero fit: error: {error}") from None


def run_folder(root: str | os.PathLike, run_name: str, run_id: str | None) -> Path:
    """A run's own checkpoint folder: ``root/<run name>-<first 8 of the run id>`` (``root/<run name>`` unlogged)."""
    return Path(root) / (f"{run_name}-{run_id[:8]}" if run_id else run_name)


def resolve_checkpoint(ckpt_path: str, root: str | os.PathLike, run_name: str | None) -> Path:
    """``last`` is the newest ``last.ckpt`` (a file, or a sharded checkpoint's folder, as new as its ``meta.pt``) in the
    run folders under ``root`` (of ``run_name``'s runs when set); anything else must exist (a file, or the folder of a
    sharded checkpoint)."""
    if ckpt_path != "last":
        path = Path(ckpt_path)
        if not path.exists():
            raise SystemExit(f"vzero fit: error: ckpt_path: no such file: {path}")
        return path
    root = Path(root)
    pattern = f"{run_name}*/last.ckpt" if run_name else "*/last.ckpt"
    found = sorted([*root.glob(pattern), *root.glob("last.ckpt")], key=_written)
    if not found:
        raise SystemExit(f"vzero fit: error: ckpt_path=last, but no {pattern} under {root} (checkpoint.dirpath)")
    return found[-1]


def _written(path: Path) -> float:
    """When a checkpoint was last written: a file's time, or a sharded folder's ``meta.pt``'s (written after its shards;
    overwriting the shards of a folder need not touch the folder's own time)."""
    meta = path / SHARDED_METADATA
    return (meta if path.is_dir() and meta.exists() else path).stat().st_mtime
