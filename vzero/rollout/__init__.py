"""Batched multi-agent rollouts, the training batch they produce, and the data module that streams them."""

from vzero.rollout.batch import TrainBatch, build_batch
from vzero.rollout.datamodule import GameRolloutDataModule
from vzero.rollout.engine import RolloutEngine, RolloutTranscript, TurnSample

__all__ = ["GameRolloutDataModule", "RolloutEngine", "RolloutTranscript", "TrainBatch", "TurnSample", "build_batch"]
