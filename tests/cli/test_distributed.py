"""The sharded path: FSDP2 (Lightning's ModelParallelStrategy) over 2 CPU processes with gloo, as on 8 GPUs."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
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


def run(command: str, tmp_path: Path, *args: str) -> str:
    (tmp_path / "fsdp.yaml").write_text(STRATEGY)
    argv = [
        sys.executable,
        "-m",
        "vzero",
        command,
        "--config",
        str(ROOT / "configs/tiny.yaml"),
        "--config",
        "fsdp.yaml",
    ]
    argv += ["--trainer.enable_progress_bar", "false", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    out = done.stderr + done.stdout
    assert done.returncode == 0, out[-3000:]
    assert "Starting with 2 processes" in out
    return out


@pytest.mark.slow
def test_fsdp2_on_two_processes_trains_evaluates_and_checkpoints(tiny_random_path, tmp_path):
    # 8 evaluation games: 2 per rank and half, each half's turns one generate on every rank (no deadlock).
    args = ["--model.model.name_or_path", "tiny-random", "--trainer.max_steps", "2", "--data.games_per_step", "2"]
    out = run("fit", tmp_path, *args, "--eval.games", "8", "--eval.every_n_steps", "0")
    assert (tmp_path / "checkpoints/tiny/last.ckpt").is_dir()  # a sharded (distributed) checkpoint
    assert "win rate vs reference at step 2" in out and "over 8 games" in out


@pytest.mark.slow
def test_a_policy_against_itself_scores_one_half_on_two_processes(tiny_path, tmp_path):
    # 14 games: 7 pairs over 2 ranks (4 and 3 + 1 padding), sampled at T = 1, with the adapter at its initial value.
    out = run("validate", tmp_path, "--eval.games", "14", "--run_name", "self")
    assert "over 14 games" in out
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (run_,) = mlflow.search_runs(experiment_names=["vzero-tiny"], output_format="list")
    assert run_.data.metrics["eval/win_rate"] == 0.5
    assert run_.data.metrics["eval/games"] == 14
