from types import SimpleNamespace

import pytest

from vzero.callbacks import win_counts, win_rates
from vzero.game import Game, GameConfig, RandomPolicy, play_games


def play(spies_known: bool, trained_role: str, n: int = 6):
    """Games where the trained side votes for the true spy (it is told) and the reference side always says N/A."""
    config = GameConfig(n_civilians=3)
    games = [Game(config, "clevr", seed=i, index=i) for i in range(n)]
    spy_of = {g.index: g.spy for g in games}
    clue = RandomPolicy(0)

    def policy(turns):
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

    play_games(games, policy)
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
        return SimpleNamespace(turn=SimpleNamespace(stage=stage), completion_ids=[0] * n, reference=reference)

    t = play(False, "civilians", n=1)[0]
    t.samples = [sample("clue", 4, False), sample("clue", 10, True), sample("decision", 6, False)]
    rates = win_rates(win_counts([t], []))
    assert rates["eval/len_clue"] == 4 and rates["eval/len_decision"] == 6


@pytest.mark.parametrize("games", [0, 3])
def test_games_must_be_even(games):
    from vzero.callbacks import WinRateEvaluation

    with pytest.raises(ValueError, match="eval.games"):
        WinRateEvaluation(games=games)
