"""Learning, tested: a short RL run on the shipped tiny model raises the civilians' spy-finding on held-out turns,
measured exactly, by a margin well outside its seed-to-seed noise.

The run is an ordinary ``vzero fit`` of ``configs/tiny_learn.yaml`` (pure decision training, fewer games and steps), in
process. The measure is exact, with no sampling noise: on fixed vote turns of held-out games (prompts played by the
frozen start), the probability of each vote the model can cast (another player, itself, N/A) after the notes it was
pretrained to write, read right from the clues (:func:`vzero.rollout.votes.vote_values`), and so the probability that
a vote names the spy. The base's vote is spy-blind (another player at random, 3 times in 10 one its notes mark
different: a text rule), so the rise is what RL found in the notes. The run fails this test when learning breaks: with
the advantage's sign flipped spy-finding does not rise, and with the KL reference pointing at the policy the frozen
start no longer scores as it did before training.
"""

import sys
from pathlib import Path

import pytest

from vzero.model import Policy, load_vlm
from vzero.rollout.votes import VoteTurn, config_game, held_out_vote_turns
from vzero.rollout.votes import vote_values as values_after
from vzero.tiny.targets import notes

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tiny_learn.yaml"
GAME, SAMPLING = config_game(CONFIG)  # the config's game, one vote per turn, and its clue sampling
STEPS = 20
GAMES = 32
"""Held-out games whose civilians' vote turns are measured."""
KL = "0.3"
"""The KL weight the margin was measured with (the config's own, 0.1, serves its longer runs)."""
MARGIN = 0.05
"""Seeds 0 and 1 raised P(spy) from 0.301 by 0.126 and 0.133; with the advantage's sign flipped it rose by 0.000."""


def vote_values(policy: Policy, turns: list[VoteTurn]) -> dict[str, float]:
    """The votes' exact values after the notes ``tiny`` writes, every clue read right."""
    return values_after(policy, turns, lambda turn: notes(turn.player, turn.clues))


def held_out_turns(policy: Policy) -> list[VoteTurn]:
    return held_out_vote_turns(policy, GAME, SAMPLING, games=GAMES)


def fit(tmp_path: Path, monkeypatch, *extra: str):
    from vzero.cli.train import VZeroCLI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["vzero"])
    args = [
        "--config",
        str(CONFIG),
        "--model.mode",
        "decision",
        "--data.games_per_step",
        "8",
        "--trainer.max_steps",
        str(STEPS),
        "--eval.every_n_steps",
        "0",
        "--eval.at_start",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--checkpoint.every_n_train_steps",
        "0",
        "--model.loss.kl_coef",
        KL,
        *extra,
    ]
    return VZeroCLI(args=["fit", *args]).model


@pytest.fixture(scope="module")
def start(tiny_path):
    model, processor = load_vlm(tiny_path, lora=None)
    policy = Policy(model.eval(), processor)
    turns = held_out_turns(policy)
    return turns, vote_values(policy, turns)


@pytest.mark.slow
def test_a_short_decision_run_raises_the_expected_vote_reward(start, tmp_path, monkeypatch):
    turns, before = start
    # After its notes, the start casts one of the listed votes.
    assert len(turns) == GAMES * GAME.n_civilians and before["listed"] > 0.9
    module = fit(tmp_path, monkeypatch)
    policy = module.policy
    policy.model.eval()
    with policy.reference():
        frozen = vote_values(policy, turns)
    after = vote_values(policy, turns)
    # The reference is the frozen start, untouched by training.
    assert frozen == pytest.approx(before, abs=1e-4)
    gain = after["spy"] - before["spy"]
    print(f"P(spy) {before['spy']:.3f} -> {after['spy']:.3f}; {before} -> {after}")
    assert gain > MARGIN, (before, after)
