"""`vzero fit` / `vzero validate` end to end on the tiny model, and every YAML under configs/ and experiments/."""

import sys
from pathlib import Path

import mlflow
import pytest
import torch

from vzero.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny.yaml")
YAMLS = sorted([*ROOT.glob("configs/*.yaml"), *ROOT.glob("experiments/**/*.yaml")])
# A few games per step and per evaluation: the same code paths as the real config, in seconds.
FAST = ["--data.games_per_step", "2", "--eval.games", "4", "--eval.every_n_steps", "2"]
REQUIRED_METRICS = {
    "stage/clue",
    "stage/decision",
    "stage/acc_ema",
    "stage/na_ema",
    "stage/dwell",
    "stage/switches",
    "decision/acc",
    "decision/na_rate",
    "decision/invalid_rate",
    "clue/invalid_rate",
    "reward/spy",
    "reward/civilian",
    "reward/decision",
    "rae/b_spy",
    "rae/b_civ",
    "loss/pg",
    "loss/kl",
    "loss/clip_frac",
    "grad_norm",
    "len/clue",
    "len/decision",
    "len/truncated_frac",
    "timing_s/rollout",
    "timing_s/ref",
    "timing_s/update",
    "perf/gen_tokens_per_s",
    "eval/win_rate",
    "eval/win_rate_civilian",
    "eval/win_rate_spy",
    "eval/decision_acc",
    "eval/na_rate",
    "eval/len_clue",
    "eval/len_decision",
}


@pytest.fixture(autouse=True)
def _command_line(monkeypatch):
    """As if run as ``vzero`` with the arguments passed to ``main``, not inside pytest's own command line."""
    monkeypatch.setattr(sys, "argv", ["vzero"])


def runs(experiment: str):
    mlflow.set_tracking_uri(f"sqlite:///{Path('mlruns/mlflow.db').resolve()}")
    exp = mlflow.get_experiment_by_name(experiment)
    return mlflow.search_runs([exp.experiment_id], output_format="list") if exp else []


@pytest.mark.parametrize("path", YAMLS, ids=[str(p.relative_to(ROOT)) for p in YAMLS])
def test_every_yaml_parses(path, capsys):
    configs = ["--config", TINY] if path.parent.name == "ablation" else []
    with pytest.raises(SystemExit) as e:
        main(["fit", *configs, "--config", str(path), "--print_config"])
    assert e.value.code == 0
    assert "model:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--model.loss.clip_epss", "0.1"], "clip_epss"),
        (["--data.games_per_step", "many"], "data.games_per_step"),
        (["--stage.acc_high", "1.5"], "stage.acc_high"),
        (["--stage.na_low", "-0.1"], "stage.na_low"),
        (["--eval.every_n_steps", "ten"], "eval.every_n_steps"),
    ],
)
def test_bad_config_fails_at_parse_time_naming_the_key(args, key, capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", TINY, *args, "--print_config"])
    assert e.value.code != 0
    assert key in capsys.readouterr().err


def test_the_old_phases_key_still_works_and_says_it_is_deprecated(tmp_path, capsys):
    old = tmp_path / "old.yaml"
    old.write_text("phases:\n  k_min: 3\n  patience: 6\n")
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", TINY, "--config", str(old), "--print_config"])
    assert e.value.code == 0 and "k_min: 3" in capsys.readouterr().out


def test_the_old_phases_key_configures_the_stage_callback(tmp_path, monkeypatch, caplog):
    from vzero.callbacks import IterativeSPO
    from vzero.cli.train import VZeroCLI

    monkeypatch.chdir(tmp_path)
    cli = VZeroCLI(args=["--config", TINY, "--phases.k_min", "3", "--phases.rho", "0.9"], run=False)
    (callback,) = [c for c in cli.trainer.callbacks if isinstance(c, IterativeSPO)]
    assert (callback.config.k_min, callback.config.rho) == (3, 0.9)
    assert callback.config.patience == 8  # a field the old key leaves alone keeps the config's `stage` value
    assert "deprecated" in caplog.text and "'stage'" in caplog.text


def test_fit_writes_an_mlflow_run_with_every_metric(tiny_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", TINY, *FAST, "--trainer.max_steps", "3", "--run_name", "smoke"])
    (run,) = runs("vzero-tiny")
    assert run.info.status == "FINISHED" and run.info.run_name == "smoke"
    assert REQUIRED_METRICS <= set(run.data.metrics), REQUIRED_METRICS - set(run.data.metrics)
    assert {run.data.tags[k] for k in ("mode", "domain", "model")} == {"iterative", "clevr", "tiny"}
    assert run.data.params["model.loss.kl_coef"] == "0.04" and run.data.params["data.games_per_step"] == "2"
    client = mlflow.tracking.MlflowClient()
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["config.yaml"]
    history = client.get_metric_history(run.info.run_id, "eval/win_rate")
    assert [m.step for m in history] == [2, 3]  # every 2 steps, and at the end
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss/pg")] == [0, 1, 2]


def test_checkpoints_hold_the_adapter_not_the_base_and_resume(tiny_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["fit", "--config", TINY, *FAST, "--checkpoint.every_n_train_steps", "1", "--eval.every_n_steps", "0"]
    main([*common, "--trainer.max_steps", "2"])
    ckpt = torch.load(tmp_path / "checkpoints/tiny/last.ckpt", weights_only=False)
    assert ckpt["state_dict"] and all("lora_" in k for k in ckpt["state_dict"])
    assert ckpt["GameRolloutDataModule"]["position"] == 2
    assert set(ckpt["callbacks"]) >= {"IterativeSPO", "WinRateEvaluation"}
    assert ckpt["optimizer_states"] and ckpt["lr_schedulers"]
    size = (tmp_path / "checkpoints/tiny/last.ckpt").stat().st_size
    base = sum(f.stat().st_size for f in Path(tiny_path).glob("*.safetensors"))
    assert size < base / 2, (size, base)

    main([*common, "--trainer.max_steps", "4", "--ckpt_path", "last"])
    resumed = torch.load(tmp_path / "checkpoints/tiny/last.ckpt", weights_only=False)
    assert resumed["global_step"] == 4
    assert resumed["GameRolloutDataModule"]["position"] == 4  # new games, not a replay of steps 0-1
    assert resumed["callbacks"]["IterativeSPO"]["stage"]["dwell"] == 4
    assert resumed["GameRolloutDataModule"]["baselines"]["spy"] != 0.0  # the RAE baselines, with their owner


@pytest.mark.parametrize("overlay", ["iterative", "pure_clue", "pure_decision"])
def test_ablation_overlays_run(overlay, tiny_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            TINY,
            "--config",
            str(ROOT / f"experiments/ablation/{overlay}.yaml"),
            *FAST,
            "--trainer.max_steps",
            "2",
        ]
    )
    (run,) = runs("vzero-ablation")
    assert run.info.run_name == overlay
    assert (
        run.data.tags["mode"] == {"iterative": "iterative", "pure_clue": "clue", "pure_decision": "decision"}[overlay]
    )
    clue_trained = {"iterative": 0.0, "pure_clue": 1.0, "pure_decision": 0.0}[overlay]
    assert (run.data.metrics["stage/clue"], run.data.metrics["stage/decision"]) == (clue_trained, 1 - clue_trained)


def test_validate_logs_a_win_rate(tiny_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["validate", "--config", TINY, *FAST, "--run_name", "check"])
    (run,) = runs("vzero-tiny")
    # No training happened: the policy is its own reference, so the two halves mirror each other exactly.
    assert run.data.metrics["eval/win_rate"] == 0.5
    assert run.data.metrics["eval/win_rate_civilian"] + run.data.metrics["eval/win_rate_spy"] == pytest.approx(1.0)


def test_long_config_values_are_truncated_in_mlflow_never_an_error(tmp_path):
    from vzero.cli.train import flatten, mlflow_logger

    logger = mlflow_logger("long-values", "run", {"mode": "clue"}, root=tmp_path / "mlruns")
    logger.log_hyperparams(flatten({"data": {"pairs": {"root": "x" * 5000}, "seed": 0}}))
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    params = client.get_run(logger.run_id).data.params
    assert params["data.seed"] == "0" and params["data.pairs.root"] == "x" * 250
