"""Rewards of the two stages (VISION_ZERO.md §2), as plain functions of vote counts.

Advantages (role baselines, Eq. 2, and group normalisation, Eq. 5) are training's: :mod:`vzero.rl.advantages`.

Departure from the paper, for ``votes_per_voter`` G > 1: the clue rewards use votes received *per sampling round*
(tally / G), so their scale does not depend on G. With G = 1, the paper's setting, the two agree exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from vzero.game.config import DecisionScheme

Vote = int | str
"""A parsed vote: a 0-based player index, ``"n/a"`` or ``"invalid"``."""


def tally(votes: Sequence[Vote], n_players: int) -> list[int]:
    """Votes received by each player. N/A, invalid and out-of-range votes count for nobody."""
    counts = [0] * n_players
    for v in votes:
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < n_players:
            counts[v] += 1
    return counts


def clue_rewards(votes_received: Sequence[float], spy: int, beta: float = 0.1, lam: float = 0.1) -> list[float]:
    """Zero-sum clue-stage rewards (Eq. 1), one per player; they sum to 0.

    The spy gets ``-β (v_s - v̄_c)``; civilian j gets ``(β / n_c)(v_s - v̄_c) - λ (v_cj - v̄_c)``.
    """
    n = len(votes_received)
    if not 0 <= spy < n:
        raise ValueError(f"spy must index one of the {n} players, got {spy}")
    civilians = [j for j in range(n) if j != spy]
    v_s = float(votes_received[spy])
    v_c = sum(float(votes_received[j]) for j in civilians) / len(civilians)
    margin = v_s - v_c
    rewards = [0.0] * n
    rewards[spy] = -beta * margin
    for j in civilians:
        rewards[j] = beta / len(civilians) * margin - lam * (float(votes_received[j]) - v_c)
    return rewards


def decision_reward(vote: Vote, spy: int, scheme: DecisionScheme = "paper") -> float:
    """The verifiable reward of one vote (Eq. 4, or the reference release's shaped variant)."""
    if scheme == "paper":
        return 1.0 if vote == spy else -0.5 if vote == "n/a" else -1.0
    if scheme == "official":
        # 0.3·format + 1.2·acc + 0.99·[acc > 0], with format ±1 and acc 1 / -0.5 (N/A) / -1:
        # correct 2.49, N/A -0.3, wrong -0.9, unparseable -1.5.
        fmt = -1.0 if vote == "invalid" else 1.0
        acc = 1.0 if vote == spy else -0.5 if vote == "n/a" else -1.0
        return 0.3 * fmt + 1.2 * acc + 0.99 * (acc > 0)
    raise ValueError(f"decision scheme must be 'paper' or 'official', got {scheme!r}")


def decision_rewards(votes: Sequence[Vote], spy: int, scheme: DecisionScheme = "paper") -> list[float]:
    """:func:`decision_reward` for each vote."""
    return [decision_reward(v, spy, scheme) for v in votes]
