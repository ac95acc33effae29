"""Advantages of both stages (VISION_ZERO.md §2), as plain functions of the game engine's rewards.

- clues: role-advantage estimation (RAE, Eq. 2). One EMA baseline per role, updated with each game and then
  subtracted; every clue of a player in a game shares that player's advantage. The baselines are training state, with
  one owner (the rollout data module), which folds games in their order in the batch and checkpoints them;
- votes: normalisation over one game's votes (Eq. 5).

An option that departs from the paper, off by default: ``clue_scale = "batch"`` divides a step's clue advantages by
their spread over the step's players (:func:`batch_scale`), so that clue samples weigh in the loss as much as votes,
whose Eq. 5 advantages have unit spread within each game.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal


class RoleBaselines:
    """Role-advantage estimation (Eq. 2): one EMA reward baseline per role, updated and then subtracted."""

    def __init__(self, alpha: float = 0.95) -> None:
        if not 0 <= alpha < 1:
            raise ValueError(f"RoleBaselines alpha must be in [0, 1), got {alpha!r}")
        self.alpha = alpha
        self.spy = 0.0
        self.civilian = 0.0

    def update(self, spy_reward: float, civilian_rewards: Sequence[float]) -> tuple[float, list[float]]:
        """Fold one game into the EMAs, then return ``(spy advantage, civilian advantages)`` against the new values."""
        a = self.alpha
        self.spy = a * self.spy + (1 - a) * spy_reward
        self.civilian = a * self.civilian + (1 - a) * (sum(civilian_rewards) / len(civilian_rewards))
        return spy_reward - self.spy, [r - self.civilian for r in civilian_rewards]

    def fold(self, clue_rewards: Sequence[float], spy: int) -> list[float]:
        """:meth:`update` with one game's per-player clue rewards; returns the per-player advantages."""
        civilians = [p for p in range(len(clue_rewards)) if p != spy]
        spy_adv, civ_adv = self.update(clue_rewards[spy], [clue_rewards[p] for p in civilians])
        advantages = [0.0] * len(clue_rewards)
        advantages[spy] = spy_adv
        for p, a in zip(civilians, civ_adv):
            advantages[p] = a
        return advantages

    def state_dict(self) -> dict[str, float]:
        return {"alpha": self.alpha, "spy": self.spy, "civilian": self.civilian}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.alpha, self.spy, self.civilian = float(state["alpha"]), float(state["spy"]), float(state["civilian"])

    def __repr__(self) -> str:
        return f"RoleBaselines(alpha={self.alpha}, spy={self.spy:.4f}, civilian={self.civilian:.4f})"


ClueScale = Literal["none", "batch"]
"""How a step's clue advantages are scaled: ``none`` (RAE's as they are, the paper's) or ``batch`` (unit spread)."""


def batch_scale(advantages: Sequence[float], eps: float = 1e-6) -> list[float]:
    """``advantages / (std + eps)``, the population spread over all of them, uncentred (RAE already subtracted its
    baselines); unchanged when they have no spread (fewer than two, or all equal)."""
    mean = sum(advantages) / len(advantages) if advantages else 0.0
    spread = _spread([a - mean for a in advantages])  # population std over the step's players
    if spread == 0.0:
        return list(advantages)
    return [a / (spread + eps) for a in advantages]


def _spread(centred: Sequence[float], ddof: int = 0) -> float:
    """The standard deviation of values already centred on their mean, with ``ddof``; 0 when ``n <= ddof``."""
    n = len(centred)
    return math.sqrt(sum(c * c for c in centred) / (n - ddof)) if n > ddof else 0.0


GroupStd = Literal["population", "sample", "none"]
"""The spread Eq. 5 divides a group's centred rewards by (see :func:`group_normalize`)."""


def group_normalize(rewards: Sequence[float], std: GroupStd = "population", eps: float = 1e-6) -> list[float]:
    """``(r - mean) / (std + eps)`` over one group (Eq. 5); all zeros when every reward is equal.

    ``std`` names the spread: ``population`` (ddof=0, the paper's Eq. 5), ``sample`` (ddof=1, as TRL and verl compute
    it; advantages are then sqrt((n-1)/n) of the population ones) or ``none`` (only the mean is subtracted, as in Dr.
    GRPO: a group whose rewards barely differ is not blown up to unit spread). A group of one has no spread and gets 0.
    """
    n = len(rewards)
    if n == 0:
        return []
    mean = sum(rewards) / n
    centred = [r - mean for r in rewards]  # [n]
    if std == "none":
        return centred if n > 1 else [0.0]
    spread = _spread(centred, {"population": 0, "sample": 1}[std])
    if spread == 0.0:
        return [0.0] * n
    return [c / (spread + eps) for c in centred]
