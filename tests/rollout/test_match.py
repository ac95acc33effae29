"""A match's counts and rates, worked out on scripted games; the matches themselves run in the win-rate tests."""

from types import SimpleNamespace

import numpy as np
import pytest

from vzero.game import Game, GameConfig, RandomPlayer, play_games
from vzero.rollout.match import COUNT_KEYS, grouped_wilson, wilson, win_counts, win_rates


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


def test_grouped_interval_by_hand():
    # 3 games of 3 votes, k = 3, 0, 3: K = 6, N = 9, p = 2/3; sum (k_i - p n_i)^2 = 1 + 4 + 1 = 6;
    # V = 3/2 * 6 / 81 = 1/9; effective trials p (1 - p) / V = (2/9) / (1/9) = 2: Wilson on 4/3 of 2.
    k, n = np.array([3, 0, 3]), np.array([3, 3, 3])
    got = grouped_wilson(k.sum(), n.sum(), (k * k).sum(), (k * n).sum(), (n * n).sum(), 3)
    assert got == pytest.approx(wilson(4 / 3, 2)) and got[1] - got[0] > 0.5
    # One vote per game: N (G - 1) / G effective votes, close to Wilson on the votes.
    k = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 1])
    got = grouped_wilson(k.sum(), 10, k.sum(), k.sum(), 10, 10)
    assert got == pytest.approx(wilson(7 * 0.9, 9))
    # Agreement within games can only widen: votes split evenly inside every game give the independent interval.
    assert grouped_wilson(10, 20, 10 * 1, 10 * 2, 10 * 4, 10) == pytest.approx(wilson(10, 20))
    # All or nothing: each game is one trial.
    assert grouped_wilson(0, 12, 0, 0, 48, 3) == wilson(0, 3) and grouped_wilson(0, 0, 0, 0, 0, 0) == (0.0, 1.0)


def test_grouped_interval_covers_where_independent_votes_do_not():
    # 50 games of 4 votes; a game's voters share a chance q_i ~ Beta(0.5, 1) of finding the spy (mean 1/3, correlation
    # 0.4 between two votes of one game).
    rng, trials, covered = np.random.default_rng(0), 2000, {"grouped": 0, "independent": 0}
    widths, spreads = [], []
    for _ in range(trials):
        n = np.full(50, 4)
        k = rng.binomial(n, rng.beta(0.5, 1.0, size=50))
        lo, hi = grouped_wilson(k.sum(), n.sum(), (k * k).sum(), (k * n).sum(), (n * n).sum(), 50)
        covered["grouped"] += lo <= 1 / 3 <= hi
        ilo, ihi = wilson(k.sum(), n.sum())
        covered["independent"] += ilo <= 1 / 3 <= ihi
        widths.append(hi - lo)
        spreads.append(k.sum() / n.sum())
    assert covered["grouped"] / trials > 0.93  # measured 0.9455
    assert covered["independent"] / trials < 0.85  # measured 0.8135: too narrow
    # Its width matches the spread of the rate over repeated matches (2 x 1.96 standard deviations), within 10%.
    assert np.median(widths) == pytest.approx(2 * 1.959964 * np.std(spreads), rel=0.1)


def test_grouped_counts_sum_over_ranks():
    # Counts from two ranks' shares of the games, summed, give the rates (and intervals) of all the games at once.
    civilians, spy = play(True, "civilians", n=6), play(False, "spy", n=6)
    for t in civilians[::2]:
        t.votes = ["n/a"] * len(t.votes)  # half the games vote N/A throughout, the others find the spy
    whole = win_counts(civilians, spy)
    parts = [win_counts(civilians[r::2], spy[r::2]) for r in (0, 1)]
    summed = {key: parts[0][key] + parts[1][key] for key in COUNT_KEYS}
    assert win_rates(summed) == win_rates(whole)
    rates = win_rates(whole)
    assert rates["eval/decision_acc"] == 0.5 and whole["vote_games"] == 6
    # All of a game's votes agree: about one trial per game (6), far wider than 0.5 of the 18 votes alone.
    assert rates["eval/decision_acc_hi"] - rates["eval/decision_acc_lo"] > 0.55
    assert wilson(9, 18)[1] - wilson(9, 18)[0] < 0.45
