"""When Iterative-SPO switches stage (VISION_ZERO.md §4, Eq. 7-10, Alg. 1), as pure functions of plain numbers.

Each step the decision outputs give ``acc`` (fraction of votes naming the spy) and ``na`` (fraction of N/A votes);
both are smoothed by EMAs that start at 0. With ``d`` the steps spent in the current stage:

- DECISION -> CLUE when ``acc_ema >= acc_high`` and ``na_ema <= na_low`` and ``d >= k_min``: the spy has become easy to
  spot, so train harder clues;
- CLUE -> DECISION when ``1 - acc_ema >= err_high`` or ``na_ema >= na_high``, and ``d >= k_min``: the spy has become
  hard to spot, so train the voters.

Additions, both off by default: ``patience`` P forces a switch after P steps in one stage (the paper lists P = 20 but
its algorithm never uses it), and a plateau trigger switches when a monitored metric has not improved by ``min_delta``
for ``monitor_patience`` checks, in the manner of EarlyStopping. Neither switches before ``k_min`` steps.

The training ``mode`` decides which stages' samples train in a step, here and nowhere else: under ``iterative`` the
stage of the switch rule, which only that mode switches; ``clue`` and ``decision`` are the paper's ablations and
``both`` trains every sample, each with the EMAs still tracked for comparison.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveInt

from vzero.game import Stage

Mode = Literal["iterative", "clue", "decision", "both"]
MODES = ("iterative", "clue", "decision", "both")
_FIXED = {"clue": frozenset({Stage.CLUE}), "decision": frozenset({Stage.DECISION}), "both": frozenset(Stage)}
"""The stages each mode but ``iterative`` trains at every step."""


def check_mode(mode: str) -> Mode:
    """``mode``, if it is one of :data:`MODES`."""
    if mode not in MODES:
        raise ValueError(f"model.mode must be one of {MODES}, got {mode!r}")
    return mode  # type: ignore[return-value]


def trained_stages(mode: Mode, stage: Stage) -> frozenset[Stage]:
    """The stages whose samples carry gradient in a step of ``mode`` while the switch rule is in ``stage``."""
    return _FIXED.get(mode) or frozenset({stage})


@dataclass(frozen=True)
class StageConfig:
    """The stage switch of Iterative-SPO; defaults are the paper's. The field types let the command line refuse an
    out-of-range value while it parses; ``__post_init__`` checks the same for code that builds one directly."""

    start: Literal["decision", "clue"] = "decision"
    """The first stage (the paper starts in ``decision``)."""
    rho: ClosedUnitInterval = 0.95
    """EMA decay of the decision accuracy and N/A rate."""
    acc_high: ClosedUnitInterval = 0.9
    """τacc↑: the accuracy above which (with few N/A) DECISION hands over to CLUE."""
    err_high: ClosedUnitInterval = 0.4
    """τerr↑: the error above which CLUE hands back to DECISION."""
    na_high: ClosedUnitInterval = 0.5
    """τna↑: the N/A rate above which CLUE hands back to DECISION."""
    na_low: ClosedUnitInterval = 0.1
    """τna↓: the N/A rate that DECISION -> CLUE must stay under."""
    k_min: NonNegativeInt = 5
    """K_min: the fewest steps spent in a stage before any switch."""
    patience: NonNegativeInt = 0
    """P: force a switch after this many steps in one stage; 0 turns it off."""
    monitor: str | None = None
    """A logged metric (e.g. ``eval/win_rate`` or ``decision/acc``) whose plateau also switches stage; None: off."""
    monitor_mode: Literal["max", "min"] = "max"
    """``max`` if a larger ``monitor`` is better, else ``min``."""
    min_delta: NonNegativeFloat = 0.0
    """The least change of ``monitor`` that counts as an improvement."""
    monitor_patience: PositiveInt = 3
    """Checks of ``monitor`` without improvement before switching."""

    def __post_init__(self) -> None:
        if self.start not in ("decision", "clue"):
            raise ValueError(f"stage.start must be 'decision' or 'clue', got {self.start!r}")
        for name in ("rho", "acc_high", "err_high", "na_high", "na_low"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"stage.{name} must be in [0, 1], got {value}")
        if self.k_min < 0 or self.patience < 0:
            raise ValueError(f"stage.k_min and stage.patience must be >= 0, got {self.k_min}, {self.patience}")
        if self.patience and self.patience < self.k_min:
            raise ValueError(f"stage.patience ({self.patience}) must be 0 or >= stage.k_min ({self.k_min})")
        if self.monitor_mode not in ("max", "min"):
            raise ValueError(f"stage.monitor_mode must be 'max' or 'min', got {self.monitor_mode!r}")
        if self.min_delta < 0:
            raise ValueError(f"stage.min_delta must be >= 0, got {self.min_delta}")
        if self.monitor_patience < 1:
            raise ValueError(f"stage.monitor_patience must be >= 1, got {self.monitor_patience}")


@dataclass
class StageState:
    stage: Stage = Stage.DECISION
    acc_ema: float = 0.0
    na_ema: float = 0.0
    dwell: int = 0
    """Steps completed in the current stage."""

    def __post_init__(self) -> None:
        # A checkpoint stores the name; older ones stored the code (0 decision, 1 clue).
        self.stage = Stage(("decision", "clue")[self.stage] if isinstance(self.stage, int) else self.stage)

    def state_dict(self) -> dict:
        return {**asdict(self), "stage": self.stage.value}


def track(state: StageState, acc: float, na: float, rho: float) -> None:
    """Fold one step's decision accuracy and N/A rate into the EMAs of ``state`` (in place) and count the step."""
    state.acc_ema = rho * state.acc_ema + (1 - rho) * acc
    state.na_ema = rho * state.na_ema + (1 - rho) * na
    state.dwell += 1


def step(
    state: StageState, acc: float, na: float, config: StageConfig, mode: Mode = "iterative", plateau: bool = False
) -> str | None:
    """Fold one step's statistics into ``state`` (in place) and, in ``iterative`` mode, switch stage if a rule fires
    (the other modes train fixed stages, see :func:`trained_stages`, and only track).

    Returns the reason of the switch, or None. The stage applies from the next step on.
    """
    track(state, acc, na, config.rho)
    if mode in _FIXED:
        return None
    reason = None
    if state.dwell >= config.k_min:
        reason = _rule(state, config)
        if reason is None and config.patience and state.dwell >= config.patience:
            reason = f"patience: {state.dwell} steps in {state.stage}"
        if reason is None and plateau:
            reason = "plateau of the monitored metric"
    if reason is not None:
        state.stage = Stage.CLUE if state.stage == Stage.DECISION else Stage.DECISION
        state.dwell = 0
    return reason


def _rule(state: StageState, c: StageConfig) -> str | None:
    acc, na = state.acc_ema, state.na_ema
    if state.stage == Stage.DECISION and acc >= c.acc_high and na <= c.na_low:
        return f"spotting the spy is easy: acc_ema {acc:.3f} >= {c.acc_high}, na_ema {na:.3f} <= {c.na_low}"
    if state.stage == Stage.CLUE and 1 - acc >= c.err_high:
        return f"spotting the spy is hard: 1 - acc_ema {1 - acc:.3f} >= {c.err_high}"
    if state.stage == Stage.CLUE and na >= c.na_high:
        return f"voters are unsure: na_ema {na:.3f} >= {c.na_high}"
    return None


@dataclass
class Plateau:
    """EarlyStopping-style memory: the best value seen and the checks since it last improved by ``min_delta``."""

    mode: Literal["max", "min"] = "max"
    min_delta: NonNegativeFloat = 0.0
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
