"""Callbacks that hold Iterative-SPO's cross-step state: the stage, the role baselines, the win-rate evaluations."""

from vzero.callbacks.phases import IterativeSPO
from vzero.callbacks.progress import GameProgressBar
from vzero.callbacks.winrate import WinRateEvaluation, win_counts, win_rates

__all__ = ["GameProgressBar", "IterativeSPO", "WinRateEvaluation", "win_counts", "win_rates"]
