"""When Iterative-SPO switches stage (VISION_ZERO.md §4, Eq. 7-10, Alg. 1), as pure functions of plain numbers.

Each step the decision outputs give ``acc`` (fraction of votes naming the spy) and ``na`` (fraction of N/A votes);
both are smoothed by EMAs that start at 0. With ``d`` the steps spent in the current stage:

- DECISION -> CLUE when ``acc_ema >= acc_high`` and ``na_ema <= na_low`` and ``d >= k_min``: the spy has become easy to
  spot, so train harder clues;
- CLUE -> DECISION when ``1 - acc_ema >= err_high`` or ``na_ema >= na_high``, and ``d >= k_min``: the spy has become
  hard to spot, so train the voters.

Additions, both off by default: ``patience`` P forces a switch after P steps in one stage (the paper lists P = 20 but
its algorithm never uses it), and a plateau trigger switches when a monitored metric has not improved by ``min_delta``
for ``patience`` checks, in the manner of EarlyStopping. Neither switches before ``k_min`` steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

DECISION, CLUE = 0, 1
STAGE_NAMES = {DECISION: "decision", CLUE: "clue"}


@dataclass(frozen=True)
class PhaseConfig:
    """Thresholds of the stage switch; defaults are the paper's."""

    rho: float = 0.95
    """EMA decay of acc and na."""
    acc_high: float = 0.9
    """τacc↑: decision accuracy that makes the voters' job easy."""
    err_high: float = 0.4
    """τerr↑: decision error that makes it hard."""
    na_high: float = 0.5
    """τna↑: N/A rate that makes it hard."""
    na_low: float = 0.1
    """τna↓: N/A rate below which voting counts as easy."""
    k_min: int = 5
    """K_min: the fewest steps spent in a stage before switching."""
    patience: int = 0
    """P: force a switch after this many steps in one stage; 0 turns it off."""

    def __post_init__(self) -> None:
        for name in ("rho", "acc_high", "err_high", "na_high", "na_low"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"phases.{name} must be in [0, 1], got {value}")
        if self.k_min < 0 or self.patience < 0:
            raise ValueError(f"phases.k_min and phases.patience must be >= 0, got {self.k_min}, {self.patience}")
        if self.patience and self.patience < self.k_min:
            raise ValueError(f"phases.patience ({self.patience}) must be 0 or >= phases.k_min ({self.k_min})")


@dataclass
class PhaseState:
    stage: int = DECISION
    acc_ema: float = 0.0
    na_ema: float = 0.0
    dwell: int = 0
    """Steps completed in the current stage."""

    def state_dict(self) -> dict:
        return asdict(self)


def track(state: PhaseState, acc: float, na: float, rho: float) -> None:
    """Fold one step's decision accuracy and N/A rate into the EMAs of ``state`` (in place) and count the step."""
    state.acc_ema = rho * state.acc_ema + (1 - rho) * acc
    state.na_ema = rho * state.na_ema + (1 - rho) * na
    state.dwell += 1


def step(state: PhaseState, acc: float, na: float, config: PhaseConfig, plateau: bool = False) -> str | None:
    """Fold one step's statistics into ``state`` (in place) and switch stage if a rule fires.

    Returns the reason of the switch, or None. The stage applies from the next step on.
    """
    track(state, acc, na, config.rho)
    reason = None
    if state.dwell >= config.k_min:
        reason = _rule(state, config)
        if reason is None and config.patience and state.dwell >= config.patience:
            reason = f"patience: {state.dwell} steps in {STAGE_NAMES[state.stage]}"
        if reason is None and plateau:
            reason = "plateau of the monitored metric"
    if reason is not None:
        state.stage = CLUE if state.stage == DECISION else DECISION
        state.dwell = 0
    return reason


def _rule(state: PhaseState, c: PhaseConfig) -> str | None:
    acc, na = state.acc_ema, state.na_ema
    if state.stage == DECISION and acc >= c.acc_high and na <= c.na_low:
        return f"spotting the spy is easy: acc_ema {acc:.3f} >= {c.acc_high}, na_ema {na:.3f} <= {c.na_low}"
    if state.stage == CLUE and 1 - acc >= c.err_high:
        return f"spotting the spy is hard: 1 - acc_ema {1 - acc:.3f} >= {c.err_high}"
    if state.stage == CLUE and na >= c.na_high:
        return f"voters are unsure: na_ema {na:.3f} >= {c.na_high}"
    return None


@dataclass
class Plateau:
    """EarlyStopping-style memory: the best value seen and the checks since it last improved by ``min_delta``."""

    mode: Literal["max", "min"] = "max"
    min_delta: float = 0.0
    patience: int = 3
    best: float | None = None
    wait: int = 0

    def update(self, value: float) -> bool:
        """Record a check; True when ``patience`` checks in a row brought no improvement. Resets itself then."""
        improved = self.best is None or (
            value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta
        )
        if improved:
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.reset()
            return True
        return False

    def reset(self) -> None:
        """Forget the best value and the checks since it."""
        self.best, self.wait = None, 0

    def state_dict(self) -> dict:
        return asdict(self)
