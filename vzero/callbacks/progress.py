"""A progress bar that shows the game: the active stage, the decision accuracy and the last win rate."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar

from vzero.callbacks.winrate import WinRateEvaluation


class GameProgressBar(TQDMProgressBar):
    """The stage and ``decision/acc`` come from the module's progress-bar metrics; ``win`` is the last evaluation's."""

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        for callback in trainer.callbacks:
            if isinstance(callback, WinRateEvaluation) and callback.last:
                items["win"] = f"{callback.last['eval/win_rate']:.2f}"
        return items
