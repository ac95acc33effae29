"""The non-finite guard: a NaN or infinite loss or gradient norm on any rank skips the update on every rank; an overflow
under a gradient scaler is the scaler's."""

import pytest
import torch

from vzero.rl.guard import NonFiniteGuard


class _Strategy:
    """Stands in for a strategy over two ranks, the other of which adds ``other`` to every all-reduced sum."""

    def __init__(self, other):
        self.other = other

    def reduce(self, tensor, reduce_op):
        assert reduce_op == "sum"
        return tensor + self.other


def test_every_rank_skips_when_one_rank_has_a_nonfinite_loss():
    guard = NonFiniteGuard(limit=3)
    other_nan = _Strategy(torch.tensor([1.0, 1.0])).reduce
    assert guard.skip(torch.tensor(0.5), torch.tensor(1.0), "step 7", other_nan, True)  # finite here, NaN on the other
    other_finite = _Strategy(torch.tensor([0.0, 0.0])).reduce
    assert not guard.skip(torch.tensor(0.5), torch.tensor(1.0), "step 7", other_finite, True)
    assert (guard.skipped, guard.streak) == (1, 0)


def test_the_limit_in_a_row_stops_the_run_and_a_finite_update_resets_the_streak():
    guard, alone = NonFiniteGuard(limit=2), lambda t, reduce_op: t
    nan, one = torch.tensor(float("nan")), torch.tensor(1.0)
    assert guard.skip(nan, one, "step 3", alone, False) and guard.streak == 1
    assert not guard.skip(one, one, "step 3", alone, False) and (guard.skipped, guard.streak) == (1, 0)
    assert guard.skip(one, torch.tensor(float("inf")), "step 4", alone, False)
    with pytest.raises(FloatingPointError, match=r"the loss was not finite at step 5: 2 skipped update\(s\) in a row"):
        guard.skip(nan, one, "step 5", alone, False)
    restored = NonFiniteGuard(limit=2)
    restored.load_state_dict(guard.state_dict())
    assert (restored.skipped, restored.streak) == (guard.skipped, guard.streak) == (3, 2)


def test_an_overflow_under_a_gradient_scaler_is_counted_apart_and_leaves_the_streak():
    guard, alone = NonFiniteGuard(limit=2), lambda t, reduce_op: t
    nan, inf, one = torch.tensor(float("nan")), torch.tensor(float("inf")), torch.tensor(1.0)
    assert guard.skip(nan, one, "step 1", alone, False) and guard.streak == 1
    for _ in range(5):  # the scaler's to drop, however many in a row: no skip, no stop, the streak as it was
        assert not guard.skip(one, inf, "step 2", alone, True, overflow_at=2.0**16)
    assert (guard.overflows, guard.skipped, guard.streak) == (5, 1, 1)
    assert not guard.skip(one, one, "step 3", alone, False) and guard.streak == 0  # a step taken resets it
    restored = NonFiniteGuard(limit=2)
    restored.load_state_dict(guard.state_dict())
    assert (restored.overflows, restored.skipped, restored.streak) == (5, 1, 0)
    restored.load_state_dict({"skipped_nonfinite": 1, "nonfinite_streak": 0})  # a checkpoint from before overflows
    assert restored.overflows == 0


def test_a_nonfinite_loss_or_an_overflow_at_a_scale_of_one_is_the_guards():
    alone = lambda t, reduce_op: t  # noqa: E731
    nan, inf, one = torch.tensor(float("nan")), torch.tensor(float("inf")), torch.tensor(1.0)
    guard = NonFiniteGuard(limit=3)
    assert guard.skip(nan, inf, "step 1", alone, False, overflow_at=2.0**16)  # the loss itself: no scaling helps
    assert guard.skip(one, inf, "step 1", alone, False, overflow_at=1.0)  # scaled no larger than the true gradients
    assert (guard.overflows, guard.skipped, guard.streak) == (0, 2, 2)
    with pytest.raises(FloatingPointError, match="the gradient norm was not finite at step 1: 3 skipped"):
        guard.skip(one, inf, "step 1", alone, False, overflow_at=0.5)
    restored = NonFiniteGuard(limit=3)
    restored.load_state_dict(guard.state_dict())
    assert (restored.overflows, restored.skipped, restored.streak) == (0, 3, 3)
