"""A progress bar that shows the game: the active stage, the decision accuracy and the last win rate."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar

from vzero.callbacks.winrate import WinRateEvaluation

STAGE_NAMES = {0.0: "decision", 1.0: "clue", 0.5: "both"}


def game_items(items: dict, last_eval: dict | None) -> dict:
    """The bar's items: the stage by name, ``decision/acc`` as logged, and ``win`` from the last evaluation."""
    items = {k: v for k, v in items.items() if k != "v_num"}
    if "stage" in items:
        items["stage"] = STAGE_NAMES.get(float(items["stage"]), items["stage"])
    if last_eval:
        items["win"] = f"{last_eval['eval/win_rate']:.2f}"
    return items


class GameProgressBar(TQDMProgressBar):
    """The stage and ``decision/acc`` come from the module's progress-bar metrics; ``win`` is the last evaluation's."""

    def get_metrics(self, trainer, pl_module) -> dict:
        last = next((c.last for c in trainer.callbacks if isinstance(c, WinRateEvaluation)), None)
        return game_items(super().get_metrics(trainer, pl_module), last)
