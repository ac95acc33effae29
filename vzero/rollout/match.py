"""The trained policy against the frozen reference (paper Fig. 6): one match, and its counts and rates.

A match plays every pair twice with the same seats and sampling keys: once with the trained policy as the civilians
against the reference as the spy, and once with the roles swapped. Every turn of a half is one ``generate`` over all
its games, the reference's rows with the adapter off, and each row's sampling noise is keyed by the game and the turn,
not by who plays it (:mod:`vzero.model.sampling`). So a policy against itself replays identical games in both halves
and scores ``win_rate = 0.5`` exactly. Win-rate evaluation (:class:`~vzero.callbacks.WinRateEvaluation`) and
``vzero play --against reference`` both play :func:`play_match`.

Each rate comes with a 95% interval. The win rates count games, one outcome each: Wilson's score interval. The
vote rates (``decision_acc``, ``na_rate``) count votes, and the votes of one game are not independent (its voters read
the same clues), so their interval is Wilson's at the votes' effective number (Kish): the number of votes divided by the
design effect that the spread of the per-game counts shows (:func:`grouped_wilson`). Treating the votes as independent
would make the interval too narrow whenever a game's voters agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from vzero.data.pairs.base import ImagePair
from vzero.game import GameConfig, Stage, Transcript, Turn
from vzero.model.inputs import Side
from vzero.model.sampling import SamplingByStage
from vzero.rollout.engine import RolloutEngine, RolloutTranscript
from vzero.rollout.metrics import vote_counts


def reference_spy(turn: Turn) -> Side:
    """The first half: the reference plays the spy, the trained policy everyone else."""
    return "reference" if turn.role == "spy" else "trained"


def trained_spy(turn: Turn) -> Side:
    """The second half: the trained policy plays the spy, the reference everyone else."""
    return "reference" if turn.role != "spy" else "trained"


@torch.no_grad()
def play_match(
    engine: RolloutEngine,
    pairs: Sequence[ImagePair],
    config: GameConfig,
    sampling: SamplingByStage,
    seeds: Sequence[int],
    sample_seed: int,
) -> tuple[list[RolloutTranscript], list[RolloutTranscript]]:
    """Both halves of a match on ``pairs`` (seated by ``seeds``, keyed by ``sample_seed``), in eval mode: the games
    with the trained policy as the civilians, and those with it as the spy."""
    with engine.policy.frozen():
        return tuple(  # type: ignore[return-value]
            engine.play(pairs, config, sampling, seeds=seeds, side_of=side, sample_seed=sample_seed).transcripts
            for side in (reference_spy, trained_spy)
        )


COUNT_KEYS = (
    "games_civ",
    "wins_civ",
    "games_spy",
    "wins_spy",
    "votes",
    "correct",
    "na",
    "clue_n",
    "clue_len",
    "dec_n",
    "dec_len",
    # per game, for the vote rates' grouped intervals: games with votes, and the sums of squares and cross products
    # of each game's votes (n), votes for the spy (k) and N/A votes (a); all of them sum over ranks.
    "vote_games",
    "votes_sq",
    "correct_sq",
    "correct_x_votes",
    "na_sq",
    "na_x_votes",
)
RATES = {  # rate -> (successes, trials) among the counts
    "eval/win_rate": (("wins_civ", "wins_spy"), ("games_civ", "games_spy")),
    "eval/win_rate_civilian": (("wins_civ",), ("games_civ",)),
    "eval/win_rate_spy": (("wins_spy",), ("games_spy",)),
    "eval/decision_acc": (("correct",), ("votes",)),
    "eval/na_rate": (("na",), ("votes",)),
}
GROUPED = {"eval/decision_acc": "correct", "eval/na_rate": "na"}
"""The vote rates, whose successes are grouped by game: rate -> ``k`` of the counts ``k``, ``k_sq``, ``k_x_votes``."""


def wilson(successes: float, trials: float, z: float = 1.959964) -> tuple[float, float]:
    """Wilson's score interval for a proportion (95% by default); (0, 1) when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def grouped_wilson(
    successes: float,
    trials: float,
    successes_sq: float,
    cross: float,
    trials_sq: float,
    groups: float,
    z: float = 1.959964,
) -> tuple[float, float]:
    """Wilson's interval for a proportion whose trials come in groups (votes by game), at its effective trial count.

    With ``k_i`` successes of ``n_i`` trials in group ``i`` (``G`` groups, ``K = sum k_i``, ``N = sum n_i``,
    ``p = K / N``), the ratio estimator's variance over groups (the linearised, cluster-robust one, with the usual
    ``G / (G - 1)``) is ``V = G / (G - 1) * sum (k_i - p n_i)^2 / N^2``, where ``sum (k_i - p n_i)^2 = sum k_i^2
    - 2p sum k_i n_i + p^2 sum n_i^2``: summed counts are all it needs. The effective number of trials is
    ``p (1 - p) / V`` (``N`` divided by the design effect), capped at ``N``: never narrower than independent votes.
    When ``p`` is 0 or 1 the spread says nothing, and each group counts as one trial (``G``). So one trial per group
    gives Wilson's interval on ``N (G - 1) / G`` trials, and groups whose trials always agree count about one each.

    Args:
        successes, trials: ``K`` and ``N``; successes_sq: ``sum k_i^2``; cross: ``sum k_i n_i``; trials_sq:
            ``sum n_i^2``; groups: ``G``, the groups with at least one trial.
    """
    if trials <= 0 or groups <= 0:
        return 0.0, 1.0
    p = successes / trials
    residual = max(0.0, successes_sq - 2 * p * cross + p * p * trials_sq)  # sum (k_i - p n_i)^2, rounding clipped
    variance = groups / max(groups - 1, 1) * residual / trials**2
    if p in (0.0, 1.0):
        effective = groups
    elif variance <= 0:
        effective = trials
    else:
        effective = min(trials, p * (1 - p) / variance)
    return wilson(p * effective, effective, z)


def win_counts(as_civilians: Sequence[Transcript], as_spy: Sequence[Transcript]) -> dict[str, float]:
    """Sums over games where the trained side played the civilians, and where it played the spy."""
    c = dict.fromkeys(COUNT_KEYS, 0.0)
    c["games_civ"], c["wins_civ"] = len(as_civilians), sum(t.civilians_win for t in as_civilians)
    c["games_spy"], c["wins_spy"] = len(as_spy), sum(not t.civilians_win for t in as_spy)
    for t in as_civilians:  # the trained side casts these votes: counted per game, for the grouped intervals
        game = vote_counts([t])
        n = game["votes"]
        c["votes"] += n
        c["vote_games"] += n > 0
        c["votes_sq"] += n * n
        for key in ("correct", "na"):
            c[key] += game[key]
            c[f"{key}_sq"] += game[key] ** 2
            c[f"{key}_x_votes"] += game[key] * n
    for t in [*as_civilians, *as_spy]:
        for s in getattr(t, "samples", []):
            if s.side == "trained":
                key = "clue" if s.turn.stage == Stage.CLUE else "dec"
                c[f"{key}_n"] += 1
                c[f"{key}_len"] += len(s.completion_ids)
    return c


def win_rates(c: dict[str, float]) -> dict[str, float]:
    """The logged metrics, from (possibly rank-summed) counts: each rate with its interval (``_lo``, ``_hi``)."""
    out = {}
    for name, (wins, games) in RATES.items():
        k, n = sum(c[w] for w in wins), sum(c[g] for g in games)
        out[name] = k / n if n else 0.0
        if name in GROUPED:
            key = GROUPED[name]
            grouped = (c[f"{key}_sq"], c[f"{key}_x_votes"], c["votes_sq"], c["vote_games"])
            out[f"{name}_lo"], out[f"{name}_hi"] = grouped_wilson(k, n, *grouped)
        else:
            out[f"{name}_lo"], out[f"{name}_hi"] = wilson(k, n)
    out["eval/games"] = c["games_civ"] + c["games_spy"]
    out["eval/len_clue"] = c["clue_len"] / c["clue_n"] if c["clue_n"] else 0.0
    out["eval/len_decision"] = c["dec_len"] / c["dec_n"] if c["dec_n"] else 0.0
    return out


def summary(step: int, m: dict[str, float]) -> str:
    """One readable line of an evaluation's results."""
    return (
        f"win rate vs reference at step {step}: {m['eval/win_rate']:.3f} "
        f"[{m['eval/win_rate_lo']:.3f}, {m['eval/win_rate_hi']:.3f}] over {int(m['eval/games'])} games "
        f"(as civilians {m['eval/win_rate_civilian']:.3f}, as spy {m['eval/win_rate_spy']:.3f}); "
        f"votes: spy found {m['eval/decision_acc']:.3f}, N/A {m['eval/na_rate']:.3f}"
    )
