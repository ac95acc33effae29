"""One seed drives a run: ``seed_everything`` changes the games unless ``data.seed`` pins them."""

import logging

import pytest

from tests.cli.conftest import TINY


def first_games(tmp_path, monkeypatch, *args: str) -> tuple[list[int], list[int], int]:
    """The pairs, seats and sampling key of the first training step a run on ``configs/tiny.yaml`` would play."""
    from vzero.cli.train import VZeroCLI

    monkeypatch.chdir(tmp_path)
    cli = VZeroCLI(args=["--config", TINY, "--trainer.logger", "false", *args], run=False)
    return cli.datamodule.draw(0)


def test_seed_everything_changes_the_games(tmp_path, monkeypatch):
    one = first_games(tmp_path, monkeypatch, "--seed_everything", "1")
    assert first_games(tmp_path, monkeypatch, "--seed_everything", "1") == one  # same seed, same games
    two = first_games(tmp_path, monkeypatch, "--seed_everything", "2")
    assert two[0] != one[0] and two[1] != one[1] and two[2] != one[2]


def test_data_seed_pins_the_games(tmp_path, monkeypatch):
    one = first_games(tmp_path, monkeypatch, "--seed_everything", "1", "--data.seed", "5")
    assert first_games(tmp_path, monkeypatch, "--seed_everything", "2", "--data.seed", "5") == one
    assert first_games(tmp_path, monkeypatch, "--seed_everything", "5") == one  # the same seed either way


def test_a_resumed_run_keeps_its_checkpoints_seed(caplog):
    from vzero.rollout import GameRolloutDataModule

    state = GameRolloutDataModule(seed=3).state_dict() | {"position": 4}
    unset = GameRolloutDataModule()  # data.seed unset: follows the checkpoint
    unset.load_state_dict(state)
    assert unset.seed == 3 and unset.position == 4
    pinned = GameRolloutDataModule(seed=8)  # set: kept, with a warning
    with caplog.at_level(logging.WARNING, logger="vzero"):
        pinned.load_state_dict(state)
    assert pinned.seed == 8 and "data.seed=8" in caplog.text


def test_the_seed_is_the_runs_when_unset(monkeypatch):
    from vzero.rollout import GameRolloutDataModule

    monkeypatch.setenv("PL_GLOBAL_SEED", "11")
    assert GameRolloutDataModule().seed == 11 and not GameRolloutDataModule().seed_given
    monkeypatch.delenv("PL_GLOBAL_SEED")
    assert GameRolloutDataModule().seed == 0
    with pytest.raises(ValueError, match="games_per_step"):
        GameRolloutDataModule(games_per_step=0)
