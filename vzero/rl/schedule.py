"""Learning-rate schedules, configurable from YAML."""

from __future__ import annotations

import math

import torch


class WarmupCosine:
    """Linear warm-up over the first ``warmup`` fraction of the steps, then a cosine decay to ``min_ratio`` × lr.

    Args:
        warmup: fraction of the steps spent warming up (the paper uses 10%).
        min_ratio: the final learning rate, as a fraction of the peak.
        steps: the optimizer steps the schedule spans; None spans ``trainer.max_steps``. A resumed run keeps the span
            its checkpoint was trained with: set this to extend a run past its original ``max_steps`` on purpose
            (steps past the span stay at ``min_ratio``).
    """

    def __init__(self, warmup: float = 0.1, min_ratio: float = 0.0, steps: int | None = None) -> None:
        if not 0 <= warmup < 1:
            raise ValueError(f"schedule.warmup must be in [0, 1), got {warmup}")
        if not 0 <= min_ratio <= 1:
            raise ValueError(f"schedule.min_ratio must be in [0, 1], got {min_ratio}")
        if steps is not None and steps < 1:
            raise ValueError(f"schedule.steps must be >= 1 or null, got {steps}")
        self.warmup, self.min_ratio, self.steps = warmup, min_ratio, steps

    def fixed(self) -> bool:
        """True when ``steps`` fixes the span (a method, so a lazily built instance is built before it answers)."""
        return self.steps is not None

    def factor(self, step: int, total: int) -> float:
        """The multiplier of the peak rate at optimizer step ``step`` (0-based) of ``total``."""
        warm = int(self.warmup * total)
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: self.factor(s, total_steps))


def schedule_span(schedule: WarmupCosine | None, max_steps: int | None) -> int | None:
    """The optimizer steps ``schedule`` spans: its own ``steps``, else ``trainer.max_steps`` (None: no schedule)."""
    if schedule is None:
        return None
    if schedule.fixed():
        return schedule.steps
    if not max_steps or max_steps < 0:
        raise ValueError("model.schedule needs trainer.max_steps (the number of optimizer steps) to be set")
    return max_steps


def check_resumed_span(saved: int | None, steps: int | None, max_steps: int | None) -> None:
    """A resumed run keeps its learning-rate schedule: with no explicit span (``steps``, the user's choice), a
    ``trainer.max_steps`` other than the checkpoint's span ``saved`` would jump the rate mid-run, and is refused."""
    if saved is None or steps is not None or max_steps == saved:
        return
    raise ValueError(
        f"the checkpoint's learning-rate schedule spans {saved} steps, but trainer.max_steps is {max_steps}: "
        f"resuming would jump the rate. Set model.schedule.steps={saved} to keep the schedule (later steps stay at "
        f"its final rate), or model.schedule.steps={max_steps} to re-stretch it on purpose"
    )
