"""Reading a run back: which checkpoint ``last`` means, and the run record of a file or of a sharded folder."""

import os
from pathlib import Path

import pytest
import torch

from vzero.checkpoint import SHARDED_INDEX, SHARDED_METADATA, CheckpointError, VerifiedCheckpointIO
from vzero.cli.runs import read_record, resolve_checkpoint


def sharded(folder: Path, run_id: str, when: float) -> Path:
    """A sharded checkpoint folder whose ``meta.pt`` holds the record of ``run_id``, written at time ``when``."""
    folder.mkdir(parents=True)
    (folder / SHARDED_INDEX).write_bytes(b"index")
    torch.save({"vzero": {"mlflow_run_id": run_id, "schedule_steps": 4}}, folder / SHARDED_METADATA)
    os.utime(folder / SHARDED_METADATA, (when, when))
    return folder


def test_a_sharded_folder_carries_its_run_record_as_a_file_does(tmp_path):
    folder = sharded(tmp_path / "run-a" / "last.ckpt", "abc", 1000.0)
    assert read_record(folder) == {"mlflow_run_id": "abc", "schedule_steps": 4}
    file = tmp_path / "run-b" / "last.ckpt"
    VerifiedCheckpointIO().save_checkpoint({"state_dict": {}, "vzero": {"mlflow_run_id": "def"}}, file)
    assert read_record(file) == {"mlflow_run_id": "def"}
    (folder / SHARDED_METADATA).unlink()
    with pytest.raises(CheckpointError, match="not a whole sharded checkpoint: it lacks meta.pt"):
        read_record(folder)


def test_last_is_the_newest_checkpoint_a_sharded_folder_by_its_metadata(tmp_path):
    old = sharded(tmp_path / "run-a" / "last.ckpt", "a", 1000.0)
    new = sharded(tmp_path / "run-b" / "last.ckpt", "b", 3000.0)
    for folder in (old, new):  # the folders' own times say the opposite: shards overwritten in place touch neither
        os.utime(folder, (5000.0 if folder == old else 2000.0,) * 2)
    assert resolve_checkpoint("last", tmp_path, None) == new
    assert resolve_checkpoint("last", tmp_path, "run-a") == old
    file = tmp_path / "run-c" / "last.ckpt"
    VerifiedCheckpointIO().save_checkpoint({"state_dict": {}}, file)
    os.utime(file, (4000.0, 4000.0))
    assert resolve_checkpoint("last", tmp_path, None) == file
