"""Callbacks that hold Iterative-SPO's cross-step state: the stage, the win-rate evaluations; the game transcripts
and the progress bar."""

from vzero.callbacks.progress import GameProgressBar
from vzero.callbacks.stage import IterativeSPO
from vzero.callbacks.transcripts import TrainingTranscripts, log_transcripts
from vzero.callbacks.winrate import WinRateEvaluation

__all__ = [
    "GameProgressBar",
    "IterativeSPO",
    "TrainingTranscripts",
    "WinRateEvaluation",
    "log_transcripts",
]
