"""Crash and resume, end to end: a ``vzero fit`` killed with SIGKILL at a random moment and resumed with
``--ckpt_path last`` ends with the same trainable weights and optimizer state, bit for bit, as a run never interrupted.
LoRA dropout is on, so the checkpointed random state is needed; one run is killed during its final evaluation, which
the resumed run must still do. The runs are tiny: 2 short games a step, 4 steps, a checkpoint each step. They use the
pretrained tiny model in ``both`` mode, because its votes name players, so rewards differ and the weights move (a
random-init model's votes never parse: every advantage is 0, the adapter never leaves its start, and any resume would
match).
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vzero.checkpoint import TMP_SUFFIX

ROOT = Path(__file__).resolve().parents[2]
FIT = [
    sys.executable,
    str(Path(__file__).with_name("announced_fit.py")),
    *("--config", str(ROOT / "configs" / "tiny.yaml")),
    *("--model.vlm.name_or_path", "tiny", "--model.mode", "both", "--model.vlm.lora.dropout", "0.1"),
    *("--data.games_per_step", "2", "--data.game.n_civilians", "2", "--data.game.clue_rounds", "1"),
    *("--data.sampling.clue.max_new_tokens", "8", "--data.sampling.decision.max_new_tokens", "48"),
    *("--eval.games", "4", "--eval.every_n_steps", "0", "--eval.at_start", "false"),
    *("--checkpoint.every_n_train_steps", "1", "--trainer.max_steps", "4"),
    *("--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"),
]
FINAL = "win rate vs reference at step 4"
FINAL_STARTS = "evaluation starts at step 4"  # printed by announced_fit.py
TIMEOUT = 300


def launch(cwd: Path, *extra: str) -> subprocess.Popen:
    # One thread, so that every run sums in the same order; its own session, so that the kill reaches all of it.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(cwd / "fit.log", "a") as log:  # the child keeps its own copy of the handle
        return subprocess.Popen(
            [*FIT, *extra], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def finish(cwd: Path, *extra: str) -> str:
    proc = launch(cwd, *extra)
    assert proc.wait(TIMEOUT) == 0, (cwd / "fit.log").read_text()[-3000:]
    return (cwd / "fit.log").read_text()


def wait_for(condition, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {TIMEOUT} s"
        time.sleep(0.05)


def last_checkpoint(cwd: Path) -> Path | None:
    found = sorted((cwd / "checkpoints").glob("**/last.ckpt"))
    return found[0] if found else None


def trained_state(path: Path) -> dict[str, torch.Tensor]:
    """The trainable weights and the optimizer's state tensors of a checkpoint."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = {f"weights/{k}": v for k, v in ckpt["state_dict"].items()}
    for i, s in ckpt["optimizer_states"][0]["state"].items():
        state.update({f"optimizer/{i}/{k}": v for k, v in s.items()})
    return {"step": torch.tensor(ckpt["global_step"]), **state}


def assert_same(resumed: dict, uninterrupted: dict, context: str) -> None:
    assert resumed.keys() == uninterrupted.keys(), context
    differ = [k for k in resumed if not torch.equal(resumed[k], uninterrupted[k])]
    assert not differ, f"{context}: {len(differ)} of {len(resumed)} tensors differ, e.g. {differ[:3]}"


def started(cwd: Path, marker: str):
    return lambda: marker in (cwd / "fit.log").read_text()


@pytest.fixture(scope="module")
def uninterrupted(tiny_path, tmp_path_factory) -> tuple[dict, float]:
    """The uninterrupted run's final state, and the seconds it trained from its first checkpoint to its final
    evaluation (the window in which a kill makes the resumed run replay steps with dropout)."""
    cwd = tmp_path_factory.mktemp("uninterrupted")
    proc = launch(cwd)
    wait_for(lambda: last_checkpoint(cwd) is not None, proc, "first checkpoint")
    first = time.monotonic()
    wait_for(started(cwd, FINAL_STARTS), proc, "final evaluation")
    window = time.monotonic() - first
    assert proc.wait(TIMEOUT) == 0, (cwd / "fit.log").read_text()[-3000:]
    assert FINAL in (cwd / "fit.log").read_text()
    state = trained_state(last_checkpoint(cwd))
    lora_b = [v for k, v in state.items() if k.startswith("weights/") and "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)  # LoRA's B starts at 0: training moved every one
    return state, window


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(TIMEOUT)


def test_a_run_killed_at_a_random_moment_resumes_bit_for_bit(uninterrupted, tmp_path):
    final, window = uninterrupted
    delay = random.uniform(0, window)  # after the first checkpoint, so that `last` has something to resume
    proc = launch(tmp_path)
    wait_for(lambda: last_checkpoint(tmp_path) is not None, proc, "first checkpoint")
    time.sleep(delay)
    kill(proc)
    out = finish(tmp_path, "--ckpt_path", "last")
    context = f"killed {delay:.2f} s after the first checkpoint ({window:.2f} s before the final evaluation)"
    assert FINAL in out, context
    assert_same(trained_state(last_checkpoint(tmp_path)), final, context)
    assert not list(last_checkpoint(tmp_path).parent.glob(f".*{TMP_SUFFIX}")), f"{context}: temporaries left"


def test_a_run_killed_during_its_final_evaluation_still_evaluates_on_resume(uninterrupted, tmp_path):
    final, _ = uninterrupted
    proc = launch(tmp_path)
    wait_for(started(tmp_path, FINAL_STARTS), proc, "final evaluation")
    kill(proc)
    assert FINAL not in (tmp_path / "fit.log").read_text()
    out = finish(tmp_path, "--ckpt_path", "last")
    assert out.count(FINAL) == 1
    assert_same(trained_state(last_checkpoint(tmp_path)), final, "killed during the final evaluation")
