"""`vzero fit` / `vzero validate` end to end on the tiny model, and every YAML under configs/ and experiments/."""

import sys
from pathlib import Path

import mlflow
import pytest
import torch

from vzero.__main__ import main
from vzero.rl.loss import LossConfig
from vzero.rl.schedule import WarmupCosine

from .conftest import TINY_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny.yaml")
KL = TINY_SETTINGS["model"]["loss"]["kl_coef"]
LR = TINY_SETTINGS["model"]["optimizer"]["init_args"]["lr"]
YAMLS = sorted([*ROOT.glob("configs/*.yaml"), *ROOT.glob("experiments/**/*.yaml")])
# A few games per step and per evaluation: the same code paths as the real config, in seconds.
FAST = ["--data.games_per_step", "2", "--eval.games", "4", "--eval.every_n_steps", "2", "--eval.at_start", "false"]
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
    "perf/prompt_reuse",
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


def test_fit_writes_an_mlflow_run_with_every_metric(tiny_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", TINY, *FAST, "--trainer.max_steps", "3", "--run_name", "smoke"])
    (run,) = runs("vzero-tiny")
    assert run.info.status == "FINISHED" and run.info.run_name == "smoke"
    assert REQUIRED_METRICS <= set(run.data.metrics), REQUIRED_METRICS - set(run.data.metrics)
    assert {run.data.tags[k] for k in ("mode", "domain", "model")} == {"iterative", "clevr", "tiny"}
    params = run.data.params
    assert params["model.loss.kl_coef"] == str(KL) and params["data.games_per_step"] == "2"
    assert params["data.pairs.init_args.size"] == "[240, 160]" and params["model.vlm.lora.target_modules"] == "null"
    assert params["trainer.max_steps"] == "3" and "trainer.benchmark" not in params  # a Lightning default: not a param
    assert not any(k.startswith("config") or "Path_fsr" in v for k, v in params.items())
    assert run.data.tags["vzero.version"] and run.data.tags["config"].endswith("configs/tiny.yaml")
    assert run.data.tags["vzero.decoder"] == "vzero" and params["model.decoding.decoder"] == "auto"
    client = mlflow.tracking.MlflowClient()
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["config.yaml", "transcripts"]
    logged = [a.path for a in client.list_artifacts(run.info.run_id, "transcripts")]
    assert logged == ["transcripts/eval-step000002", "transcripts/eval-step000003"]
    files = {a.path.rsplit("/", 1)[1] for a in client.list_artifacts(run.info.run_id, logged[0])}
    assert files == {"transcripts.html", "transcripts.jsonl"}
    history = client.get_metric_history(run.info.run_id, "eval/win_rate")
    assert [m.step for m in history] == [2, 3]  # every 2 steps, and at the end
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss/pg")] == [0, 1, 2]


def test_checkpoints_hold_the_adapter_and_a_resumed_run_continues_its_run_and_schedule(
    tiny_path, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    common = ["fit", "--config", TINY, *FAST, "--checkpoint.every_n_train_steps", "1", "--eval.every_n_steps", "0"]
    # Stop after 2 of the schedule's 4 steps (as a killed run would), then resume to the end.
    main([*common, "--trainer.max_steps", "2", "--model.schedule.steps", "4", "--run_name", "long"])
    (folder,) = (tmp_path / "checkpoints/tiny").iterdir()
    assert folder.name.startswith("long-")  # each run its own folder
    ckpt = torch.load(folder / "last.ckpt", weights_only=True)
    assert ckpt["state_dict"] and all("lora_" in k for k in ckpt["state_dict"])
    assert ckpt["GameRolloutDataModule"]["position"] == 2
    assert set(ckpt["callbacks"]) >= {"IterativeSPO", "WinRateEvaluation"}
    assert ckpt["optimizer_states"] and ckpt["lr_schedulers"]
    settings, record = ckpt["hyper_parameters"], ckpt["vzero"]
    assert settings["vlm"]["name_or_path"] == "tiny" and settings["vlm"]["lora"]["r"] == 16
    assert settings["mode"] == "iterative" and settings["loss"]["kl_coef"] == KL != LossConfig().kl_coef
    assert record["schedule_steps"] == 4 and record["version"]
    size = (folder / "last.ckpt").stat().st_size
    base = sum(f.stat().st_size for f in Path(tiny_path).glob("*.safetensors"))
    assert size < base / 2, (size, base)

    main([*common, "--trainer.max_steps", "4", "--model.schedule.steps", "4", "--ckpt_path", "last"])
    assert list((tmp_path / "checkpoints/tiny").iterdir()) == [folder]  # the same folder
    resumed = torch.load(folder / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 4
    assert resumed["GameRolloutDataModule"]["position"] == 4  # new games, not a replay of steps 0-1
    assert resumed["callbacks"]["IterativeSPO"]["stage"]["dwell"] == 4
    assert resumed["GameRolloutDataModule"]["baselines"]["spy"] != 0.0  # the RAE baselines, with their owner
    assert resumed["vzero"]["mlflow_run_id"] == record["mlflow_run_id"]

    (run,) = runs("vzero-tiny")  # one run, one record
    assert run.info.run_id == record["mlflow_run_id"] and run.info.run_name == "long"
    client = mlflow.tracking.MlflowClient()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss/pg")] == [0, 1, 2, 3]
    lr = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "lr"), key=lambda m: m.step)]
    schedule = WarmupCosine(warmup=0.1)
    assert lr == pytest.approx([LR * schedule.factor(s + 1, 4) for s in range(4)])  # one schedule, no jump

    # A resume that would re-stretch the schedule (4 steps -> 6) is refused, naming the fix.
    with pytest.raises(SystemExit, match="schedule spans 4 steps.*model.schedule.steps=4"):
        main(["fit", "--config", TINY, *FAST, "--trainer.max_steps", "6", "--ckpt_path", str(folder / "last.ckpt")])


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
    (run,) = runs("vzero-tiny")  # the overlays log with their base, so one `vzero compare` shows them all
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.loss.clip_eps", "2"], "loss.clip_eps must be in (0, 1), got 2"),
        (["--eval.games", "7"], "eval.games must be an even number >= 2, got 7"),
    ],
)
def test_an_out_of_range_value_is_one_line_naming_the_key(args, message, tmp_path, monkeypatch, capsys):
    from vzero.cli.train import VZeroCLI

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        VZeroCLI(args=["--config", TINY, *args], run=False)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_options_are_never_abbreviated_and_there_is_one_optimizer_surface(capsys):
    for args in (["--trainer.max_step", "5"], ["--optimizer", "torch.optim.SGD"]):
        with pytest.raises(SystemExit) as e:
            main(["fit", "--config", TINY, *args, "--print_config"])
        assert e.value.code != 0
        assert args[0].lstrip("-") in capsys.readouterr().err


def test_a_yaml_error_names_its_file(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("trainer:\n  max_steps: 2\n   oops: [\n")
    with pytest.raises(SystemExit, match=f"{bad} is not valid YAML"):
        main(["fit", "--config", TINY, "--config", str(bad), "--print_config"])
    with pytest.raises(SystemExit, match="missing.yaml: No such file"):
        main(["fit", f"--config={tmp_path / 'missing.yaml'}", "--print_config"])


def test_help_opens_with_vzeros_options_and_documents_nested_fields(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = capsys.readouterr().out
    assert text.index("--model.mode") < text.index("--trainer.max_steps")
    assert "ε of PPO-clip" in text  # LossConfig.clip_eps's field docstring
    assert "Upper bound on a picture's pixels" in text  # a ModelConfig field
    assert "--model.vlm.lora.help" in text  # an optional group (LoRA can be null) documents itself on request
