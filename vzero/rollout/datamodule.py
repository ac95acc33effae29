"""``GameRolloutDataModule``: a stream of training batches, each freshly played by the current weights.

The training step pulls its batch itself (``training_step(dataloader_iter)``), so Lightning never prefetches: every
batch is played after the previous update, with the weights being trained: the ``policy`` of the trainer's
LightningModule. Each rank plays its own shard of the pairs, and every random choice of a step (which pairs, which
seats, the sampled tokens) derives from ``(seed, rank, step)``, so a run is reproducible and a resumed run continues
with new games instead of replaying old ones.

One seed drives a run: unless ``data.seed`` is set, ``seed`` is the run's ``seed_everything`` (which also draws the
adapters' initial weights), so runs that differ only in ``seed_everything`` play different games, and the same seed
replays the same games. Setting ``data.seed`` pins the games whatever ``seed_everything`` is (e.g. to vary only the
weights' initialisation). A resumed run without ``data.seed`` continues with the checkpoint's seed.

The data module owns the rollout stream's state and checkpoints it: its position, and the RAE role baselines that each
batch's games are folded into (averaged over ranks after every batch, so all ranks share them).
"""

from __future__ import annotations

import logging
import os

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from vzero.data.pairs import ClevrPairs, PairSource
from vzero.game import GameConfig
from vzero.model.policy import Policy
from vzero.model.sampling import SamplingByStage
from vzero.rl.advantages import ClueScale, GroupStd, RoleBaselines
from vzero.rollout.batch import TrainBatch, build_batch, score_samples
from vzero.rollout.engine import RolloutEngine

log = logging.getLogger(__name__)


class _Rollouts(IterableDataset):
    def __init__(self, datamodule: GameRolloutDataModule) -> None:
        self.datamodule = datamodule

    def __iter__(self):
        module = self.datamodule.trainer.lightning_module
        while True:
            config = module.loss_config
            yield self.datamodule.next_batch(module.policy, config.group_std, config.clue_scale)


class GameRolloutDataModule(L.LightningDataModule):
    """Plays ``games_per_step`` games per training step and yields them as one :class:`~vzero.rollout.TrainBatch`.

    Args:
        pairs: where the pictures come from, e.g. ``ClevrPairs``, ``ChartPairs``, ``FolderPairs`` or ``FolderImages``.
        game: the rules of every game.
        sampling: sampling settings of the clue and decision stages.
        games_per_step: games each rank plays per step; clue samples per step = games × players × rounds.
        seed: base of every random choice; rank ``r`` offsets it, so ranks play different games. ``None`` (the
            default): the run's seed, ``seed_everything`` (0 when nothing seeded the run).
    """

    def __init__(
        self,
        pairs: PairSource | None = None,
        game: GameConfig = GameConfig(),
        sampling: SamplingByStage = SamplingByStage(),
        games_per_step: int = 8,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if games_per_step < 1:
            raise ValueError(f"data.games_per_step must be >= 1, got {games_per_step}")
        self.pairs = pairs if pairs is not None else ClevrPairs()
        self.game = game or GameConfig()
        self.sampling = sampling or SamplingByStage()
        self.games_per_step = games_per_step
        self.seed_given = seed is not None
        """Whether ``data.seed`` was set; if not, the seed follows the run's (and a checkpoint's, on resume)."""
        self.seed = seed if seed is not None else run_seed()
        self.position = 0
        """Rollout steps played so far on this rank."""
        self.rank, self.world_size = 0, 1
        self.baselines = RoleBaselines(self.game.alpha)
        """RAE's role baselines (Eq. 2): training state, owned and checkpointed here."""

    def setup(self, stage: str) -> None:
        if self.trainer is not None:
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size

    @property
    def shard(self) -> PairSource:
        return self.pairs.shard(self.rank, self.world_size) if self.world_size > 1 else self.pairs

    def step_seed(self, position: int) -> int:
        return int(np.random.SeedSequence([self.seed, self.rank, position]).generate_state(1)[0])

    def draw(self, position: int) -> tuple[list[int], list[int], int]:
        """The games of rollout step ``position`` on this rank: the indices of their pairs in this rank's shard, their
        seat seeds, and the key of their sampled tokens."""
        shard = self.shard
        if len(shard) == 0:
            raise ValueError(f"rank {self.rank} of {self.world_size} has no pairs: the source holds {len(self.pairs)}")
        step_seed = self.step_seed(position)
        rng = np.random.default_rng(step_seed)
        picks = rng.choice(len(shard), size=self.games_per_step, replace=len(shard) < self.games_per_step)
        seats = rng.integers(0, 2**31 - 1, size=self.games_per_step)
        return [int(i) for i in picks], seats.tolist(), step_seed

    def next_batch(
        self, policy: Policy, group_std: GroupStd = "population", clue_scale: ClueScale = "none"
    ) -> TrainBatch:
        """Play one step's games with ``policy`` and build the training batch (votes' advantages by ``group_std``, clue
        advantages by ``clue_scale``)."""
        picks, seats, step_seed = self.draw(self.position)
        shard = self.shard
        pairs = [shard[i] for i in picks]
        engine = RolloutEngine(policy)
        rollout = engine.play(pairs, self.game, self.sampling, seeds=seats, sample_seed=step_seed)
        self.position += 1
        # folds the games into the baselines, in order
        scores = score_samples(rollout.transcripts, self.baselines, group_std, clue_scale)
        self._sync_baselines()
        return build_batch(rollout, scores, {"rae/b_spy": self.baselines.spy, "rae/b_civ": self.baselines.civilian})

    def _sync_baselines(self) -> None:
        """Average the baselines over ranks, so every rank continues from the same values."""
        if self.world_size > 1:
            values = torch.tensor([self.baselines.spy, self.baselines.civilian], dtype=torch.float64)
            device = self.trainer.lightning_module.device
            spy, civ = self.trainer.strategy.reduce(values.to(device), reduce_op="mean").tolist()
            self.baselines.spy, self.baselines.civilian = spy, civ

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Rollouts(self), batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        # One placeholder batch: evaluation itself is the WinRateEvaluation callback's job.
        return DataLoader([torch.zeros(1)], batch_size=None)

    def state_dict(self) -> dict:
        return {
            "position": self.position,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "baselines": self.baselines.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("seed", self.seed)
        if saved != self.seed and not self.seed_given:
            log.info("continuing with the checkpoint's seed %s (data.seed unset; this run's is %s)", saved, self.seed)
            self.seed = saved
        elif saved != self.seed:
            log.warning("resuming with data.seed=%s, but the checkpoint was played with %s", self.seed, saved)
        self.position = int(state["position"])
        self.baselines.load_state_dict(state["baselines"])


def run_seed() -> int:
    """The seed ``seed_everything`` last set in this process (Lightning keeps it in ``PL_GLOBAL_SEED``), else 0."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))
