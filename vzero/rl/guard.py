"""The non-finite guard: an update whose loss or gradient norm is NaN or infinite is skipped, not taken.

The flags are summed over ranks, so every rank decides alike. A skipped update takes no optimizer or scheduler step
(the learning rate follows the steps taken) and is counted; ``limit`` skipped updates in a row stop the run with an
error naming the step, so the weights, and every checkpoint, stay those from before the first skipped update.
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

    def skip(self, loss: torch.Tensor, grad_norm: torch.Tensor, where: str, reduce: Reduce, announce: bool) -> bool:
        """Whether this update must be skipped because its loss or its gradient norm is not finite on some rank. A
        skipped update is counted and (with ``announce``, on one rank) logged with its cause and ``where``; the
        ``limit``-th in a row raises ``FloatingPointError`` naming ``where``.

        Args:
            loss: [] the summed loss of this pass; grad_norm: [] the global gradient norm before clipping.
        """
        flags = torch.stack([~torch.isfinite(loss), ~torch.isfinite(grad_norm.to(loss.device))]).float()  # [2]
        flags = reduce(flags, reduce_op="sum")  # [2]
        if not flags.any():
            self.streak = 0
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
        return {"skipped_nonfinite": self.skipped, "nonfinite_streak": self.streak}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.skipped = state.get("skipped_nonfinite", 0)
        self.streak = state.get("nonfinite_streak", 0)
