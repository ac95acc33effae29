"""Batched multi-agent rollouts and the training batch they produce."""

from vzero.model.sampling import Sampling, SamplingConfig
from vzero.rollout.batch import CLUE, DECISION, TrainBatch, build_batch
from vzero.rollout.engine import RolloutEngine, RolloutTranscript, TurnSample

__all__ = [
    "CLUE",
    "DECISION",
    "RolloutEngine",
    "RolloutTranscript",
    "Sampling",
    "SamplingConfig",
    "TrainBatch",
    "TurnSample",
    "build_batch",
]
