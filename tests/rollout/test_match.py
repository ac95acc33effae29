"""A match's counts and rates, worked out on scripted games; the matches themselves run in the win-rate tests."""

from types import SimpleNamespace

import pytest

from vzero.game import Game, GameConfig, RandomPlayer, play_games
from vzero.rollout.match import wilson, win_counts, win_rates


def play(spies_known: bool, trained_role: str, n: int = 6):
    """Games where the trained side votes for the true spy (it is told) and the reference side always says N/A."""
    config = GameConfig(n_civilians=3)
    games = [Game(config, "clevr", seed=i, index=i) for i in range(n)]
    spy_of = {g.index: g.spy for g in games}
    clue = RandomPlayer(0)

    def respond(turns):
        out = []
        for t in turns:
            trained = (t.role == "spy") == (trained_role == "spy")
            if t.stage == "clue":
                out.append(clue.answer(t))
            elif trained and spies_known:
                out.append(f"\\boxed{{{spy_of[t.game] + 1}}}")
            else:
                out.append("\\boxed{N/A}")
        return out

    play_games(games, respond)
    return [g.transcript() for g in games]


def test_exact_win_rates_of_scripted_players():
    # Trained civilians always find the spy; reference civilians never vote.
    rates = win_rates(win_counts(play(True, "civilians"), play(True, "spy")))
    assert rates["eval/win_rate_civilian"] == 1.0  # trained civilians catch the reference spy every time
    assert rates["eval/win_rate_spy"] == 1.0  # the trained spy faces civilians who never vote
    assert rates["eval/win_rate"] == 1.0
    assert rates["eval/decision_acc"] == 1.0 and rates["eval/na_rate"] == 0.0


def test_same_policy_on_both_sides_sums_to_one():
    # Nobody votes: the spy always wins, whichever side it is on.
    rates = win_rates(win_counts(play(False, "civilians"), play(False, "spy")))
    assert rates["eval/win_rate_civilian"] == 0.0 and rates["eval/win_rate_spy"] == 1.0
    assert rates["eval/win_rate_civilian"] + rates["eval/win_rate_spy"] == 1.0
    assert rates["eval/win_rate"] == 0.5 and rates["eval/na_rate"] == 1.0


def test_lengths_count_only_the_trained_side():
    def sample(stage, n, reference):
        side = "reference" if reference else "trained"
        return SimpleNamespace(turn=SimpleNamespace(stage=stage), completion_ids=[0] * n, side=side)

    t = play(False, "civilians", n=1)[0]
    t.samples = [sample("clue", 4, False), sample("clue", 10, True), sample("decision", 6, False)]
    rates = win_rates(win_counts([t], []))
    assert rates["eval/len_clue"] == 4 and rates["eval/len_decision"] == 6


def test_wilson_interval_by_hand():
    # 7 of 10, z = 1.96: centre (0.7 + 3.8415/20) / 1.38415 = 0.64450;
    # half-width 1.96 * sqrt(0.021 + 3.8415/400) / 1.38415 = 0.24770 -> [0.39680, 0.89220]
    lo, hi = wilson(7, 10)
    assert lo == pytest.approx(0.39680, abs=1e-4) and hi == pytest.approx(0.89220, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0) and wilson(5, 5)[1] == 1.0 and wilson(0, 5)[0] == 0.0
    rates = win_rates(win_counts(play(True, "civilians"), play(True, "spy")))
    assert rates["eval/win_rate_lo"] < rates["eval/win_rate"] == rates["eval/win_rate_hi"] == 1.0
    assert rates["eval/games"] == 12
