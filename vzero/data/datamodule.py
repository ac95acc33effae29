"""``GameRolloutDataModule``: a stream of training batches, each freshly played by the current weights.

The training step pulls its batch itself (``training_step(dataloader_iter)``), so Lightning never prefetches: every
batch is played after the previous update, with the weights being trained. Each rank plays its own shard of the pairs,
and every random choice of a step (which pairs, which seats, the sampled tokens) derives from ``(seed, rank, step)``,
so a run is reproducible and a resumed run continues with new games instead of replaying old ones.
"""

from __future__ import annotations

import logging
import time

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from vzero.data.pairs import ClevrPairs, PairSource
from vzero.game import GameConfig, RoleBaselines
from vzero.model.policy import Policy
from vzero.model.sampling import Sampling
from vzero.rollout import RolloutEngine, TrainBatch, build_batch

log = logging.getLogger(__name__)


class _Rollouts(IterableDataset):
    def __init__(self, datamodule: GameRolloutDataModule) -> None:
        self.datamodule = datamodule

    def __iter__(self):
        while True:
            yield self.datamodule.next_batch()


class GameRolloutDataModule(L.LightningDataModule):
    """Plays ``games_per_step`` games per training step and yields them as one :class:`~vzero.rollout.TrainBatch`.

    Args:
        pairs: where the pictures come from, e.g. ``ClevrPairs``, ``ChartPairs``, ``FolderPairs`` or ``FolderImages``.
        game: the rules of every game.
        sampling: sampling settings of the clue and decision stages.
        games_per_step: games each rank plays per step; clue samples per step = games × players × rounds.
        seed: base of every random choice; rank ``r`` offsets it, so ranks play different games.
    """

    def __init__(
        self,
        pairs: PairSource | None = None,
        game: GameConfig | None = None,
        sampling: Sampling | None = None,
        games_per_step: int = 8,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if games_per_step < 1:
            raise ValueError(f"data.games_per_step must be >= 1, got {games_per_step}")
        self.pairs = pairs if pairs is not None else ClevrPairs()
        self.game = game or GameConfig()
        self.sampling = sampling or Sampling()
        self.games_per_step = games_per_step
        self.seed = seed
        self.position = 0
        """Rollout steps played so far on this rank."""
        self.rank, self.world_size = 0, 1
        self.policy: Policy | None = None
        self.baselines = RoleBaselines(self.game.alpha)
        """Replaced by the stage callback's own object at fit start, so that it is checkpointed there."""

    def setup(self, stage: str) -> None:
        if self.trainer is not None:
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size

    def attach(self, policy: Policy) -> None:
        """Play with this policy from now on (the module calls this at fit start)."""
        self.policy = policy

    @property
    def shard(self) -> PairSource:
        return self.pairs.shard(self.rank, self.world_size) if self.world_size > 1 else self.pairs

    def step_seed(self, position: int) -> int:
        return int(np.random.SeedSequence([self.seed, self.rank, position]).generate_state(1)[0])

    def next_batch(self) -> TrainBatch:
        """Play one step's games with the attached policy and build the training batch."""
        if self.policy is None:
            raise RuntimeError("GameRolloutDataModule has no policy: the LightningModule attaches it at fit start")
        shard = self.shard
        if len(shard) == 0:
            raise ValueError(f"rank {self.rank} of {self.world_size} has no pairs: the source holds {len(self.pairs)}")
        step_seed = self.step_seed(self.position)
        rng = np.random.default_rng(step_seed)
        picks = rng.choice(len(shard), size=self.games_per_step, replace=len(shard) < self.games_per_step)
        seats = rng.integers(0, 2**31 - 1, size=self.games_per_step)
        start = time.perf_counter()
        pairs = [shard[int(i)] for i in picks]
        load_seconds = time.perf_counter() - start
        devices = [self.policy.device] if self.policy.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(step_seed)
            engine = RolloutEngine(self.policy)
            start = time.perf_counter()
            transcripts = engine.play(pairs, self.game, self.sampling, seeds=seats.tolist(), baselines=self.baselines)
            rollout_seconds = time.perf_counter() - start
        self.position += 1
        batch = build_batch(transcripts)
        batch.timings = {"rollout": rollout_seconds, "pairs": load_seconds}
        return batch

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Rollouts(self), batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        # One placeholder batch: evaluation itself is the WinRateEvaluation callback's job.
        return DataLoader([torch.zeros(1)], batch_size=None)

    def state_dict(self) -> dict:
        return {"position": self.position, "seed": self.seed, "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            log.warning("resuming with data.seed=%s, but the checkpoint was played with %s", self.seed, state["seed"])
        self.position = int(state["position"])
