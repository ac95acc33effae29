"""A progress bar that shows the game: the trained stage, the decision accuracy and the last win rate."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar


def game_items(items: dict, callback_metrics: dict) -> dict:
    """The bar's items: the trained stage(s) by name, ``decision/acc`` as logged, and ``win`` from the last
    evaluation (``eval/win_rate`` in the trainer's callback metrics)."""
    items = {k: v for k, v in items.items() if k not in ("v_num", "stage/clue", "stage/decision")}
    trained = [name for name in ("clue", "decision") if float(callback_metrics.get(f"stage/{name}", 0.0))]
    if trained:
        items = {"stage": "both" if len(trained) == 2 else trained[0], **items}
    if "eval/win_rate" in callback_metrics:
        items["win"] = f"{float(callback_metrics['eval/win_rate']):.2f}"
    return items


class GameProgressBar(TQDMProgressBar):
    """Lightning's bar with the game's items."""

    def get_metrics(self, trainer, pl_module) -> dict:
        return game_items(super().get_metrics(trainer, pl_module), trainer.callback_metrics)
