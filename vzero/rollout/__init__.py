"""Batched multi-agent rollouts, the training batch they produce, the data module that streams them, and the match of
the trained policy against the reference."""

from vzero.rollout.batch import TrainBatch, build_batch, score_samples
from vzero.rollout.datamodule import GameRolloutDataModule
from vzero.rollout.engine import Rollout, RolloutEngine, RolloutTranscript, TurnSample

__all__ = [
    "GameRolloutDataModule",
    "Rollout",
    "RolloutEngine",
    "RolloutTranscript",
    "TrainBatch",
    "TurnSample",
    "build_batch",
    "score_samples",
]
