"""The sharded path: FSDP2 (Lightning's ModelParallelStrategy) over 2 CPU processes with gloo, as on 8 GPUs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STRATEGY = """
trainer:
  strategy:
    class_path: lightning.pytorch.strategies.ModelParallelStrategy
    init_args:
      data_parallel_size: 2
      tensor_parallel_size: 1
  devices: 2
"""


@pytest.mark.slow
def test_fsdp2_on_two_processes_trains_evaluates_and_checkpoints(tiny_random_path, tmp_path):
    (tmp_path / "fsdp.yaml").write_text(STRATEGY)
    command = [
        sys.executable,
        "-m",
        "vzero",
        "fit",
        "--config",
        str(ROOT / "configs/tiny.yaml"),
        "--config",
        "fsdp.yaml",
        "--model.model.name_or_path",
        "tiny-random",
        "--trainer.max_steps",
        "2",
        "--data.games_per_step",
        "2",
        "--eval.games",
        "4",
        "--eval.every_n_steps",
        "0",
        "--trainer.enable_progress_bar",
        "false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting with 2 processes" in done.stderr + done.stdout
    assert (tmp_path / "checkpoints/tiny/last.ckpt").is_dir()  # a sharded (distributed) checkpoint
    assert "win rate vs reference at step 2" in done.stderr + done.stdout
