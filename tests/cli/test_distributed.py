"""The sharded path: FSDP2 (Lightning's ModelParallelStrategy) over 2 CPU processes with gloo, as on 8 GPUs; the
update's normaliser over data-parallel ranks; and the strategies vzero refuses."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch

from .conftest import TINY_SETTINGS

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


def run(command: str, tmp_path: Path, *args: str, timeout: int = 900) -> str:
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
    argv += ["--trainer.enable_progress_bar", "false", "--eval.at_start", "false", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    out = done.stderr + done.stdout
    assert done.returncode == 0, out[-3000:]
    assert "Starting with 2 processes" in out
    return out


def metric_steps(tracking: Path, experiment: str, *keys: str) -> tuple[str, dict[str, list[tuple[int, float]]]]:
    """The one run of ``experiment`` in the store under ``tracking``: its id, and each key's (step, value) history."""
    mlflow.set_tracking_uri(f"sqlite:///{tracking / 'mlruns' / 'mlflow.db'}")
    (run_,) = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    client = mlflow.tracking.MlflowClient()
    history = {k: sorted((m.step, m.value) for m in client.get_metric_history(run_.info.run_id, k)) for k in keys}
    return run_.info.run_id, history


@pytest.mark.slow
def test_fsdp2_on_two_processes_trains_evaluates_and_checkpoints(tiny_random_path, tmp_path):
    # 8 evaluation games: 2 per rank and half, each half's turns one generate on every rank (no deadlock); 5 suite
    # questions: 3 and 2 + 1 padding, in one generate on every rank.
    args = ["--model.vlm.name_or_path", "tiny-random", "--trainer.max_steps", "2", "--data.games_per_step", "2"]
    suites = ["--eval.suites", "[clevr-qa:5]", "--eval.suite_tokens", "8"]
    out = run("fit", tmp_path, *args, "--eval.games", "8", "--eval.every_n_steps", "0", *suites)
    # One run folder, named by rank 0 and broadcast (ModelCheckpoint.setup), holding a sharded checkpoint.
    (last,) = (tmp_path / "checkpoints/tiny").glob("*/last.ckpt")
    assert last.is_dir()
    assert "win rate vs reference at step 2" in out and "over 8 games" in out
    assert "clevr-qa at step 2: accuracy" in out and "over 5 questions" in out  # counts summed over both ranks
    assert "rollouts decode with vzero" in out  # vzero's loop, in lock-step over the ranks


@pytest.mark.slow
def test_a_policy_against_itself_scores_one_half_on_two_processes(tiny_path, tmp_path):
    # 14 games: 7 pairs over 2 ranks (4 and 3 + 1 padding), sampled at T = 1, with the adapter at its initial value.
    out = run("validate", tmp_path, "--eval.games", "14", "--run_name", "self")
    assert "over 14 games" in out
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (run_,) = mlflow.search_runs(experiment_names=["vzero-tiny"], output_format="list")
    assert run_.data.metrics["eval/win_rate"] == 0.5
    assert run_.data.metrics["eval/games"] == 14


# A callback that writes, on every rank, the SHA-256 of the frozen reference copy and of the whole trained model
# (gathered from its shards) when training starts and when it ends.
DIGESTS = """
import json
from pathlib import Path

import lightning as L

from vzero.checkpoint import state_digest


class Digests(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.write(trainer, pl_module, "start")

    def on_train_end(self, trainer, pl_module):
        self.write(trainer, pl_module, "end")

    def write(self, trainer, pl_module, when):
        net = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in pl_module.net.state_dict().items()}
        out = {"reference": state_digest(pl_module.policy.reference_copy.state_dict()), "trained": state_digest(net)}
        Path(f"{when}-{trainer.global_rank}.json").write_text(json.dumps(out))
"""


@pytest.mark.slow
def test_a_full_fine_tune_on_two_processes_scores_one_half_at_the_start_and_keeps_its_reference(tiny_path, tmp_path):
    """``model.vlm.lora: null`` on 2 FSDP2 ranks: the frozen copy of the start is the reference. Before any update the
    policy plays itself (0.5 exactly); after one, the reference on every rank is still the start, bit for bit, and the
    trained weights moved, alike on both ranks."""
    import json

    from vzero.checkpoint import state_digest
    from vzero.model import load_vlm

    (tmp_path / "digests.py").write_text(DIGESTS)
    args = ["--model.vlm.lora", "null", "--trainer.max_steps", "1", "--data.games_per_step", "2", "--run_name", "full"]
    args += ["--eval.games", "4", "--eval.at_start", "true", "--eval.every_n_steps", "0"]
    out = run("fit", tmp_path, *args, "--trainer.callbacks+=digests.Digests", timeout=300)
    assert "frozen copy of the model as the reference policy" in out
    _, history = metric_steps(tmp_path, "vzero-tiny", "eval/win_rate", "eval/games", "grad_norm")
    assert history["eval/win_rate"][0] == (0, 0.5) and history["eval/games"][0] == (0, 4)
    assert [step for step, _ in history["eval/win_rate"]] == [0, 1]  # and evaluated against the reference after
    assert history["grad_norm"][0][1] > 0
    start = state_digest(load_vlm(tiny_path, lora=None)[0].state_dict())
    found = {
        (when, rank): json.loads((tmp_path / f"{when}-{rank}.json").read_text())
        for when in ("start", "end")
        for rank in (0, 1)
    }
    assert all(d["reference"] == start for d in found.values())  # every rank, before and after the update
    assert found["start", 0]["trained"] == found["start", 1]["trained"] == start
    assert found["end", 0]["trained"] == found["end", 1]["trained"] != start


@pytest.mark.slow
def test_a_resume_from_a_sharded_checkpoint_continues_its_run_folder_and_schedule(tiny_path, tmp_path):
    """2 of a 4-step schedule on 2 FSDP2 ranks, with a sharded checkpoint; ``--ckpt_path last`` (the folder) resumes
    to 4 in the same MLflow run and checkpoint folder, the adapter, schedule and stage where they were."""
    from vzero.rl.schedule import WarmupCosine

    common = ["--data.games_per_step", "2", "--eval.at_end", "false", "--eval.every_n_steps", "0"]
    common += ["--checkpoint.every_n_train_steps", "1", "--model.schedule.steps", "4", "--run_name", "sharded"]
    run("fit", tmp_path, *common, "--trainer.max_steps", "2")
    (last,) = (tmp_path / "checkpoints/tiny").glob("sharded-*/last.ckpt")
    assert last.is_dir()
    out = run("fit", tmp_path, *common, "--trainer.max_steps", "4", "--ckpt_path", "last")
    assert f"resuming from {last.relative_to(tmp_path)}" in out and "continuing MLflow run" in out
    assert [p.name for p in (tmp_path / "checkpoints/tiny").iterdir()] == [last.parent.name]  # the same folder
    keys = "loss/pg", "loss/kl", "lr", "stage/dwell"
    run_id, history = metric_steps(tmp_path, "vzero-tiny", *keys)  # one run, one record
    assert last.parent.name == f"sharded-{run_id[:8]}"
    assert {k: [step for step, _ in h] for k, h in history.items()} == dict.fromkeys(keys, [0, 1, 2, 3])
    lr = [value for _, value in history["lr"]]
    peak = TINY_SETTINGS["model"]["optimizer"]["init_args"]["lr"]
    assert lr == pytest.approx([peak * WarmupCosine(warmup=0.1).factor(s + 1, 4) for s in range(4)])  # no jump
    assert [value for _, value in history["stage/dwell"]] == [1, 2, 3, 4]  # the stage callback's state, resumed
    # The resumed policy is the trained one, not the start (where the KL to the reference is 0 exactly).
    assert history["loss/kl"][0][1] == 0 and history["loss/kl"][2][1] > 0


@pytest.mark.slow
def test_suites_answered_on_two_processes_score_as_on_one(tiny_path, tmp_path):
    """The same suite questions, shared over 2 FSDP2 ranks (12 + 11 + 1 padding) or answered by one process, give the
    same counts: every logged suite metric is equal."""
    args = ["--eval.games", "2", "--eval.suites", "[clevr-qa:23]", "--eval.suite_tokens", "96", "--run_name", "suites"]
    (tmp_path / "two").mkdir()
    run("validate", tmp_path / "two", *args)
    one = tmp_path / "one"
    one.mkdir()
    argv = [sys.executable, "-m", "vzero", "validate", "--config", str(ROOT / "configs/tiny.yaml"), *args]
    argv += ["--trainer.enable_progress_bar", "false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, cwd=one, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stderr + done.stdout)[-3000:]
    found = {}
    for name in ("one", "two"):
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / name / 'mlruns' / 'mlflow.db'}")
        (run_,) = mlflow.search_runs(experiment_names=["vzero-tiny"], output_format="list")
        found[name] = {k: v for k, v in run_.data.metrics.items() if k.startswith("eval/clevr-qa/")}
    assert found["one"]["eval/clevr-qa/questions"] == 23
    assert 0 < found["one"]["eval/clevr-qa/unparseable"] < 1  # the shipped model's answers: some parse, some do not
    assert found["two"] == found["one"]


# One VisionZeroModule._update on given rows of a toy policy (log-probs = logsigmoid(features @ w)), with the strategy's
# real reduce and an optimizer that averages gradients over the ranks before stepping, as FSDP's reduce-scatter does.
UPDATE = """
import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import ModelParallelStrategy, SingleDeviceStrategy

from vzero.module import VisionZeroModule
from vzero.rl.loss import LossConfig

LENGTHS = [7, 7, 6, 7, 1, 2]
RANKS = {1: [[0, 1, 2, 3, 4, 5]], 2: [[0, 1, 2, 3], [4, 5]]}  # rank 0: 27 tokens in 4 rows; rank 1: 3 in 2


class AveragingSGD(torch.optim.SGD):
    def step(self, closure=None):
        if dist.is_initialized():
            for group in self.param_groups:
                for p in group["params"]:
                    dist.all_reduce(p.grad)
                    p.grad /= dist.get_world_size()
        return super().step(closure)


def one_update(rank, world, aggregation):
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(6, 7, 3, generator=gen)  # [B, T, 3]
    advantage = torch.randn(6, generator=gen)  # [B]
    ref = torch.nn.functional.logsigmoid(torch.randn(6, 7, generator=gen))  # [B, T]
    mask = (torch.arange(7)[None, :] < torch.tensor(LENGTHS)[:, None]).float()  # [B, T]
    rows = RANKS[world][rank]
    net = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.3, -0.2, 0.5]]))
    opt = AveragingSGD(net.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    micro = []
    for lo in range(0, len(rows), 2):
        part = rows[lo : lo + 2]
        inputs = SimpleNamespace(features=features[part], completion_mask=mask[part])
        micro.append((slice(lo, lo + len(part)), inputs, torch.ones(len(part))))
    strategy = ModelParallelStrategy() if world > 1 else SingleDeviceStrategy(torch.device("cpu"))
    cfg = LossConfig(aggregation=aggregation, kl_coef=0.3, max_grad_norm=0.0, micro_batch_size=2)
    module = VisionZeroModule(loss=cfg)
    module.net = net
    module.__dict__["policy"] = SimpleNamespace(
        logprobs=lambda inputs, temps: torch.nn.functional.logsigmoid(net(inputs.features))[..., 0]  # [b, C]
    )
    module.trainer = SimpleNamespace(strategy=strategy, world_size=world, global_step=0, is_global_zero=rank == 0)
    module.optimizers = lambda: opt
    module.lr_schedulers = lambda: sched
    module.manual_backward = lambda loss: loss.backward()
    batch = SimpleNamespace(
        samples=[SimpleNamespace(completion_ids=[0] * LENGTHS[i]) for i in rows], advantage=advantage[rows]
    )
    module._update(batch, micro, [ref[rows][m[0]] for m in micro], None)
    return net.weight.detach().clone()


if __name__ == "__main__":
    rank, rendezvous, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        torch.save({a: one_update(rank, 2, a) for a in ("token_mean", "sequence_mean")}, out)
    finally:
        dist.destroy_process_group()
"""


@pytest.mark.slow
def test_the_update_on_two_gloo_processes_equals_one_process_with_every_row(tmp_path):
    script = tmp_path / "update.py"
    script.write_text(UPDATE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), str(tmp_path / "rendezvous"), str(tmp_path / f"{rank}.pt")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    for worker in workers:
        out, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0, out[-3000:]
    one_process = runpy.run_path(str(script), run_name="reference")
    for aggregation in ("token_mean", "sequence_mean"):
        expected = one_process["one_update"](0, 1, aggregation)
        for rank in range(2):
            got = torch.load(tmp_path / f"{rank}.pt")[aggregation]
            # Rank 1's 3 tokens weigh what they weigh in one process, not as much as rank 0's 27.
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn", "fsdp"])
def test_strategies_that_cannot_work_are_refused_naming_the_key(strategy):
    from types import SimpleNamespace

    from lightning.pytorch.strategies import StrategyRegistry

    from vzero.module import VisionZeroModule

    module = VisionZeroModule()
    module.trainer = SimpleNamespace(strategy=StrategyRegistry.get(strategy))
    with pytest.raises(ValueError, match=r"trainer.strategy \w+Strategy is not supported.*ModelParallelStrategy"):
        module.setup("fit")


def test_one_device_and_fsdp2_are_accepted():
    from types import SimpleNamespace

    from lightning.pytorch.strategies import ModelParallelStrategy, SingleDeviceStrategy

    from vzero.module import VisionZeroModule

    module = VisionZeroModule()
    for strategy in (SingleDeviceStrategy(torch.device("cpu")), ModelParallelStrategy()):
        module.trainer = SimpleNamespace(strategy=strategy)
        module.setup("fit")


@pytest.mark.slow
def test_ddp_on_two_processes_is_refused_at_start(tiny_random_path, tmp_path):
    argv = [sys.executable, "-m", "vzero", "fit", "--config", str(ROOT / "configs/tiny.yaml")]
    argv += ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.enable_progress_bar", "false"]
    argv += ["--model.vlm.name_or_path", "tiny-random", "--trainer.max_steps", "1", "--data.games_per_step", "1"]
    argv += ["--eval.games", "2", "--eval.every_n_steps", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = done.stderr + done.stdout
    assert done.returncode != 0, out[-3000:]
    assert "trainer.strategy DDPStrategy is not supported" in out, out[-3000:]
    assert "ModelParallelStrategy" in out
    assert not (tmp_path / "checkpoints").exists()  # refused before any step
