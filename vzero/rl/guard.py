"""The non-finite guard: an update whose loss or gradient norm is NaN or infinite is skipped, not taken.

The flags are summed over ranks, so every rank decides alike. A skipped update takes no optimizer or scheduler step
(the learning rate follows the steps taken) and is counted; ``limit`` skipped updates in a row stop the run with an
error naming the step, so the weights, and every checkpoint, stay those from before the first skipped update.

Under a gradient scaler (``trainer.precision: 16-mixed``, on one GPU) the gradients are those of the scaled loss; the
training module unscales them before the norm and the clipping, so the guard is handed the *unscaled* gradient norm. An
overflow is the scaler's, not the guard's: when the loss is finite but a scaled gradient is not, while the scale is
above 1, the scaler drops that optimizer step itself and halves its scale, so a run of overflows ends by itself. Such an
update is not skipped here: it goes on, unclipped, to the scaler's step, which drops it, and the scheduler steps with it
(Lightning counts it as a step). It is counted apart (:attr:`NonFiniteGuard.overflows`) and neither adds to the streak
nor resets it, so the overflows a healthy fp16 run meets at its start (the scale begins at 2**16) never stop it. A
non-finite loss, a non-finite gradient once the scale is 1 or less (the scaled gradients are then no larger than the
true ones, so the scaling is not what overflowed), and a norm that overflows from finite gradients are the guard's, as
without a scaler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

Reduce = Callable[..., torch.Tensor]
"""Sums a tensor over ranks: a strategy's ``reduce(tensor, reduce_op="sum")``."""


class NonFiniteGuard:
    """Decides, update by update, whether to skip it; counts the skipped ones (checkpointed with the run).

    Args:
        limit: skipped updates in a row that stop the run (``loss.max_nonfinite_steps``).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.skipped = 0
        """Updates skipped over the whole run."""
        self.streak = 0
        """Of those, how many in a row up to now."""
        self.overflows = 0
        """Updates left to the gradient scaler because its scaled gradients overflowed (see the module docstring)."""

    def skip(
        self,
        loss: torch.Tensor,
        grad_norm: torch.Tensor,
        where: str,
        reduce: Reduce,
        announce: bool,
        overflow_at: float | None = None,
    ) -> bool:
        """Whether this update must be skipped because its loss or its gradient norm is not finite on some rank. A
        skipped update is counted and (with ``announce``, on one rank) logged with its cause and ``where``; the
        ``limit``-th in a row raises ``FloatingPointError`` naming ``where``. An overflow under a gradient scaler is
        not skipped: it is counted in :attr:`overflows` and left to the scaler (see the module docstring).

        Args:
            loss: [] the summed loss of this pass; grad_norm: [] the global gradient norm before clipping, unscaled.
            overflow_at: the gradient scaler's scale when a scaled gradient is not finite (the scaler drops the
                update itself), else None.
        """
        flags = torch.stack([~torch.isfinite(loss), ~torch.isfinite(grad_norm.to(loss.device))]).float()  # [2]
        flags = reduce(flags, reduce_op="sum")  # [2]
        if not flags.any():
            self.streak = 0
            return False
        if not flags[0] and overflow_at is not None and overflow_at > 1:
            self.overflows += 1
            if announce:
                log.info(
                    "the scaled gradients overflowed at %s (scale %g): the gradient scaler drops this update and "
                    "halves its scale (%d overflows in this run)",
                    where,
                    overflow_at,
                    self.overflows,
                )
            return False
        self.skipped += 1
        self.streak += 1
        cause = "the loss" if flags[0] else "the gradient norm"
        if self.streak >= self.limit:
            raise FloatingPointError(
                f"{cause} was not finite at {where}: {self.streak} skipped update(s) in a row reach "
                f"loss.max_nonfinite_steps={self.limit}, so training stops. The weights, and every checkpoint, are "
                "those from before the first skipped update"
            )
        if announce:
            log.warning(
                "%s was not finite at %s: update skipped (%d in a row, %d in this run; loss.max_nonfinite_steps=%d)",
                cause,
                where,
                self.streak,
                self.skipped,
                self.limit,
            )
        return True

    def state_dict(self) -> dict[str, int]:
        return {"skipped_nonfinite": self.skipped, "nonfinite_streak": self.streak, "scaler_overflows": self.overflows}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.skipped = state.get("skipped_nonfinite", 0)
        self.streak = state.get("nonfinite_streak", 0)
        self.overflows = state.get("scaler_overflows", 0)
