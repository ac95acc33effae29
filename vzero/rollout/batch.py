"""The training batch: turn samples from a rollout, with their stage, role, game, reward and advantage.

Rewards come from the game engine, advantages from :mod:`vzero.rl.advantages`: clue samples carry their player's
Eq. 1 reward and its RAE advantage (Eq. 2; every clue of a player in a game shares it), vote samples their Eq. 4 reward
and the advantage normalised over their game's votes (Eq. 5). The role baselines fold the games in the order given,
which is the order they were played in, so a batch's advantages never depend on anything but its games.

A batch is built once (:func:`build_batch`) and never changed; :meth:`TrainBatch.select` makes a new one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, fields, replace

import torch

from vzero.game import Stage
from vzero.rl.advantages import ClueScale, GroupStd, RoleBaselines, batch_scale, group_normalize
from vzero.rollout.engine import Rollout, RolloutTranscript, TurnSample

COLUMN = {"column": True}
"""Field metadata of :class:`TrainBatch`'s per-sample columns (what :meth:`TrainBatch.select` picks rows of)."""


@dataclass(frozen=True)
class TrainBatch:
    """Every turn sample of a rollout, ready to be scored by the policy in micro-batches."""

    samples: list[TurnSample] = field(metadata=COLUMN)
    stages: list[Stage] = field(metadata=COLUMN)
    """Each sample's stage."""
    game: torch.Tensor = field(metadata=COLUMN)  # [N] long: index of the sample's game in the rollout
    reward: torch.Tensor = field(metadata=COLUMN)  # [N] float
    advantage: torch.Tensor = field(metadata=COLUMN)  # [N] float
    truncated: torch.Tensor = field(metadata=COLUMN)  # [N] bool
    roles: list[str] = field(metadata=COLUMN)
    """``civilian``, ``spy`` or ``observer``, per sample."""
    rollout: Rollout
    """The play the samples come from: its pairs, transcripts, time and reused prompt tokens (shared by selections)."""
    baselines: dict[str, float] = field(default_factory=dict)
    """The role baselines after this batch's games were folded in (``rae/b_spy``, ``rae/b_civ``), for logging."""

    def __len__(self) -> int:
        return len(self.samples)

    def select(self, index: Sequence[int]) -> TrainBatch:
        """The samples at ``index``, with the same rollout."""
        ids = list(index)
        rows = torch.tensor(ids, dtype=torch.long)

        def pick(column):
            return column[rows] if isinstance(column, torch.Tensor) else [column[i] for i in ids]

        return replace(self, **{f.name: pick(getattr(self, f.name)) for f in fields(self) if f.metadata == COLUMN})

    def game_advantages(self) -> list[list[float]]:
        """Each game's advantages in play order (its samples' order in the batch)."""
        out: list[list[float]] = [[] for _ in self.rollout.transcripts]
        for g, a in zip(self.game.tolist(), self.advantage.tolist()):
            out[g].append(a)
        return out

    def of_stages(self, stages: Collection[Stage]) -> TrainBatch:
        """The samples of ``stages`` only: the stage mask of the loss, applied by selection."""
        return self.select([i for i, s in enumerate(self.stages) if s in stages])


def score_samples(
    transcripts: Sequence[RolloutTranscript],
    baselines: RoleBaselines,
    group_std: GroupStd = "population",
    clue_scale: ClueScale = "none",
) -> tuple[list[float], list[float]]:
    """Every sample's reward and advantage, in play order, folding each game's clue rewards into ``baselines`` in
    order; a game's votes are normalised by ``group_std`` (Eq. 5), and with ``clue_scale="batch"`` the players' clue
    advantages by their spread over all the games (:func:`~vzero.rl.advantages.batch_scale`)."""
    folded = [baselines.fold(t.clue_rewards, t.spy) for t in transcripts]  # [games][players]
    if clue_scale == "batch":
        scaled = iter(batch_scale([a for game in folded for a in game]))
        folded = [[next(scaled) for _ in game] for game in folded]
    reward, advantage = [], []
    for t, clue_advantages in zip(transcripts, folded):
        vote_advantages = group_normalize(t.decision_rewards, group_std)
        vote = 0
        for s in t.samples:
            if s.turn.stage == Stage.CLUE:
                reward.append(t.clue_rewards[s.turn.player])
                advantage.append(clue_advantages[s.turn.player])
            else:
                reward.append(t.decision_rewards[vote])
                advantage.append(vote_advantages[vote])
                vote += 1
    return reward, advantage


def build_batch(
    rollout: Rollout, scores: tuple[list[float], list[float]], baselines: dict[str, float] | None = None
) -> TrainBatch:
    """Flatten a rollout's transcripts into one batch, with each sample's ``(reward, advantage)`` from
    :func:`score_samples` and the baselines to log."""
    samples = [s for t in rollout.transcripts for s in t.samples]
    reward, advantage = scores
    return TrainBatch(
        samples=samples,
        stages=[s.turn.stage for s in samples],
        game=torch.tensor([g for g, t in enumerate(rollout.transcripts) for _ in t.samples], dtype=torch.long),
        reward=torch.tensor(reward, dtype=torch.float32),
        advantage=torch.tensor(advantage, dtype=torch.float32),
        truncated=torch.tensor([s.truncated for s in samples], dtype=torch.bool),
        roles=[s.turn.role for s in samples],
        rollout=rollout,
        baselines=dict(baselines or {}),
    )
