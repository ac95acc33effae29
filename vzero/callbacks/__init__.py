"""Callbacks that hold Iterative-SPO's cross-step state: the stage, the win-rate evaluations; and the progress bar."""

from vzero.callbacks.progress import GameProgressBar
from vzero.callbacks.stage import IterativeSPO
from vzero.callbacks.winrate import WinRateEvaluation, win_counts, win_rates

__all__ = ["GameProgressBar", "IterativeSPO", "WinRateEvaluation", "win_counts", "win_rates"]
