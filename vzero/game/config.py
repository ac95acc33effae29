"""The rules of one game, as a small validated dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

SpyView = Literal["modified", "blank"]
Voting = Literal["civilians", "observer"]
DecisionScheme = Literal["paper", "official"]


@dataclass(frozen=True)
class GameConfig:
    """How a game of "Who is the Spy?" is played and rewarded (VISION_ZERO.md §1-2; defaults are the paper's)."""

    n_civilians: int = 4
    """Civilians per game; there is always exactly one spy, so ``n_civilians + 1`` players."""
    clue_rounds: int = 2
    """Rounds of clues; every player speaks once per round, in order 1..n."""
    spy_view: SpyView = "modified"
    """What the spy sees: the pair's ``modified`` picture (paper v1), or a ``blank`` one (paper v2)."""
    voting: Voting = "civilians"
    """``civilians``: each civilian votes and the spy abstains (paper). ``observer``: one neutral voter who sees the
    original picture votes (reference release)."""
    votes_per_voter: int = 1
    """Samples G drawn from each voter; the reference release's observer uses 8."""
    decision_reward: DecisionScheme = "paper"
    """``paper``: +1 spy, -0.5 N/A, -1 otherwise (Eq. 4). ``official``: the reference release's shaped reward."""
    beta: float = 0.1
    """β of Eq. 1: how much the spy's vote margin moves the clue rewards."""
    lam: float = 0.1
    """λ of Eq. 1: the penalty for a civilian drawing more votes than the civilian mean."""
    alpha: float = 0.95
    """EMA decay of the role baselines (Eq. 2); the reference release uses 0.9."""

    def __post_init__(self) -> None:
        for name in ("n_civilians", "clue_rounds", "votes_per_voter"):
            self._check(_is_int(getattr(self, name)), name, "must be an int")
        for name in ("beta", "lam", "alpha"):
            self._check(_is_real(getattr(self, name)), name, "must be a finite number")
        self._check(self.n_civilians >= 2, "n_civilians", "must be >= 2")
        self._check(self.clue_rounds >= 1, "clue_rounds", "must be >= 1")
        self._check(self.votes_per_voter >= 1, "votes_per_voter", "must be >= 1")
        self._check(self.spy_view in ("modified", "blank"), "spy_view", "must be 'modified' or 'blank'")
        self._check(self.voting in ("civilians", "observer"), "voting", "must be 'civilians' or 'observer'")
        self._check(self.decision_reward in ("paper", "official"), "decision_reward", "must be 'paper' or 'official'")
        self._check(self.beta >= 0, "beta", "must be >= 0")
        self._check(self.lam >= 0, "lam", "must be >= 0")
        self._check(0 <= self.alpha < 1, "alpha", "must be in [0, 1)")

    def _check(self, ok: bool, name: str, rule: str) -> None:
        if not ok:
            raise ValueError(f"GameConfig.{name} {rule}, got {getattr(self, name)!r}")

    @property
    def n_players(self) -> int:
        return self.n_civilians + 1

    @property
    def votes_per_game(self) -> int:
        """Vote samples in one game's decision stage."""
        voters = self.n_civilians if self.voting == "civilians" else 1
        return voters * self.votes_per_voter


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
