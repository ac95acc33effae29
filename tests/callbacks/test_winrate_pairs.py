"""A run whose evaluation cannot draw its pairs is refused before its first step (and before its model loads)."""

import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest

from vzero.cli.pairs import pairs
from vzero.data.pairs import ClevrPairs, FolderPairs, PairSourceError

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny.yaml")
SMALL = ["--model.vlm.name_or_path", "tiny-random", "--data.games_per_step", "1", "--trainer.max_steps", "1"]
SMALL += ["--eval.at_start", "false"]
SMALL += ["--data.sampling.clue.max_new_tokens", "8", "--data.sampling.decision.max_new_tokens", "8"]


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """A training folder and an evaluation folder of 2 pairs each (another seed), with the run landing in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["vzero"])
    pairs("clevr", 2, tmp_path / "train", seed=0, size="64x48")
    pairs("clevr", 2, tmp_path / "eval", seed=1, size="64x48")
    return SimpleNamespace(
        train=["--data.pairs", "vzero.data.pairs.FolderPairs", "--data.pairs.root", str(tmp_path / "train")],
        eval=["--eval.pairs", "vzero.data.pairs.FolderPairs", "--eval.pairs.root", str(tmp_path / "eval")],
    )


def cli(*args: str):
    """The model, data module and trainer ``vzero fit`` / ``vzero validate`` build from these arguments."""
    from vzero.cli.train import VZeroCLI

    return VZeroCLI(args=["--config", TINY, *SMALL, *args], run=False)


def test_a_folder_without_eval_pairs_is_refused_before_the_first_step(folders):
    built = cli(*folders.train, "--eval.games", "2")
    with pytest.raises(PairSourceError, match=r"FolderPairs cannot hold out .* eval\.pairs"):
        built.trainer.fit(built.model, datamodule=built.datamodule)
    assert built.trainer.global_step == 0 and built.model.net is None  # no step taken, no model even loaded


def test_too_few_evaluation_pairs_are_refused_with_both_counts(folders):
    built = cli(*folders.train, *folders.eval, "--eval.games", "6")
    with pytest.raises(ValueError, match=r"eval\.games=6 needs 3 pairs, but eval\.pairs has 2"):
        built.trainer.fit(built.model, datamodule=built.datamodule)
    assert built.trainer.global_step == 0 and built.model.net is None


def test_validate_is_refused_before_the_model_loads(folders):
    built = cli(*folders.train, "--eval.games", "2")
    with pytest.raises(PairSourceError, match=r"eval\.pairs"):
        built.trainer.validate(built.model, datamodule=built.datamodule)
    assert built.model.net is None


def test_a_folder_with_eval_pairs_trains_and_evaluates_on_them(folders):
    built = cli(*folders.train, *folders.eval, "--eval.games", "4", "--run_name", "folders")
    built.trainer.fit(built.model, datamodule=built.datamodule)
    assert built.trainer.global_step == 1
    evaluation = next(c for c in built.trainer.callbacks if type(c).__name__ == "WinRateEvaluation")
    assert evaluation.evaluations == 1 and evaluation.last_step == 1
    assert {p.meta["seed"] for p in evaluation.last_pairs} == {1}  # the evaluation folder's pictures, not training's
    mlflow.set_tracking_uri(f"sqlite:///{Path('mlruns/mlflow.db').resolve()}")
    run_id = built.trainer.logger.run_id
    assert [m.step for m in mlflow.tracking.MlflowClient().get_metric_history(run_id, "eval/win_rate")] == [1]


@pytest.mark.parametrize(
    ("settings", "stage", "refused"),
    [
        ({}, "fit", True),
        ({"every_n_steps": 0}, "fit", True),  # it still evaluates at the end
        ({"every_n_steps": 0, "at_end": False}, "fit", False),  # it never evaluates: nothing to refuse
        ({"every_n_steps": 0, "at_end": False}, "validate", True),
        ({}, "test", False),
    ],
)
def test_only_a_stage_that_evaluates_is_checked(settings, stage, refused, tmp_path):
    from vzero.callbacks import WinRateEvaluation

    pairs("clevr", 1, tmp_path, size="64x48")
    trainer = SimpleNamespace(datamodule=SimpleNamespace(pairs=FolderPairs(tmp_path)))
    evaluation = WinRateEvaluation(games=2, **settings)
    if refused:
        with pytest.raises(PairSourceError, match=r"eval\.pairs"):
            evaluation.setup(trainer, None, stage)
    else:
        evaluation.setup(trainer, None, stage)


def test_the_check_draws_no_picture(monkeypatch):
    from vzero.callbacks import WinRateEvaluation

    drawn = []
    monkeypatch.setattr(ClevrPairs, "_get", lambda self, i: drawn.append(i))
    trainer = SimpleNamespace(datamodule=SimpleNamespace(pairs=ClevrPairs(n=10, seed=0, size=(64, 48))))
    WinRateEvaluation(games=8).setup(trainer, None, "fit")  # procedural: held out from another seed
    WinRateEvaluation(games=8, pairs=ClevrPairs(n=4, seed=3, size=(64, 48))).setup(trainer, None, "fit")
    with pytest.raises(ValueError, match=r"eval\.games=10 needs 5 pairs, but eval\.pairs has 4"):
        WinRateEvaluation(games=10, pairs=ClevrPairs(n=4, seed=3, size=(64, 48))).setup(trainer, None, "fit")
    assert drawn == []


@pytest.mark.parametrize("command", ["fit", "validate"])
def test_the_command_says_it_in_one_line(command, folders, capsys):
    from vzero.cli.train import VZeroCLI

    with pytest.raises(SystemExit) as exit:
        VZeroCLI(args=[command, "--config", TINY, *SMALL, *folders.train, "--eval.games", "2"])
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "error" in line]  # one line, after Lightning's own notices
    assert exit.value.code == 2 and line.startswith(f"vzero {command}: error: ") and "eval.pairs" in line
    assert "Traceback" not in err
