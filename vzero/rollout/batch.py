"""The training batch: turn samples from transcripts, with their stage, role, game, reward and advantage.

Rewards come from the game engine, advantages from :mod:`vzero.rl.advantages`: clue samples carry their player's
Eq. 1 reward and its RAE advantage (Eq. 2; every clue of a player in a game shares it), vote samples their Eq. 4 reward
and the advantage normalised over their game's votes (Eq. 5). The role baselines fold the games in the order given,
which is the order they were played in, so a batch's advantages never depend on anything but its games.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import torch

from vzero.data.pairs.base import ImagePair
from vzero.game import Stage
from vzero.rl.advantages import RoleBaselines, group_normalize
from vzero.rollout.engine import RolloutTranscript, TurnSample


@dataclass
class TrainBatch:
    """Every turn sample of a rollout, ready to be scored by the policy in micro-batches."""

    samples: list[TurnSample]
    stages: list[Stage]
    """Each sample's stage."""
    game: torch.Tensor  # [N] long: index of the sample's game in the rollout
    reward: torch.Tensor  # [N] float
    advantage: torch.Tensor  # [N] float
    truncated: torch.Tensor  # [N] bool
    roles: list[str]
    """``civilian``, ``spy`` or ``observer``, per sample."""
    transcripts: list[RolloutTranscript]
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent producing the batch (``rollout``, ``pairs``), filled by the data module."""
    baselines: dict[str, float] = field(default_factory=dict)
    """The role baselines after this batch's games were folded in (``rae/b_spy``, ``rae/b_civ``), for logging."""
    pairs: list[ImagePair] = field(default_factory=list)
    """Each game's pictures, aligned with ``transcripts`` (filled by the data module), for transcripts."""
    reused_prompt_tokens: int = 0
    """Prompt tokens whose keys and values the rollout took from earlier turns instead of computing them."""

    def __len__(self) -> int:
        return len(self.samples)

    def select(self, index: Sequence[int]) -> TrainBatch:
        """The samples at ``index``, with the same transcripts."""
        ids = list(index)
        rows = torch.tensor(ids, dtype=torch.long)
        return TrainBatch(
            samples=[self.samples[i] for i in ids],
            stages=[self.stages[i] for i in ids],
            game=self.game[rows],
            reward=self.reward[rows],
            advantage=self.advantage[rows],
            truncated=self.truncated[rows],
            roles=[self.roles[i] for i in ids],
            transcripts=self.transcripts,
            timings=self.timings,
            baselines=self.baselines,
            pairs=self.pairs,
            reused_prompt_tokens=self.reused_prompt_tokens,
        )

    def game_advantages(self) -> list[list[float]]:
        """Each game's advantages in play order (its samples' order in the batch)."""
        out: list[list[float]] = [[] for _ in self.transcripts]
        for g, a in zip(self.game.tolist(), self.advantage.tolist()):
            out[g].append(a)
        return out

    def of_stages(self, stages: Collection[Stage]) -> TrainBatch:
        """The samples of ``stages`` only: the stage mask of the loss, applied by selection."""
        return self.select([i for i, s in enumerate(self.stages) if s in stages])


def build_batch(transcripts: Sequence[RolloutTranscript], baselines: RoleBaselines) -> TrainBatch:
    """Flatten transcripts into one batch, folding each game's clue rewards into ``baselines`` in order."""
    samples, stages, game, reward, advantage, roles = [], [], [], [], [], []
    for g, t in enumerate(transcripts):
        clue_advantages = baselines.fold(t.clue_rewards, t.spy)
        vote_advantages = group_normalize(t.decision_rewards)
        vote = 0
        for s in t.samples:
            if s.turn.stage == Stage.CLUE:
                reward.append(t.clue_rewards[s.turn.player])
                advantage.append(clue_advantages[s.turn.player])
            else:
                reward.append(t.decision_rewards[vote])
                advantage.append(vote_advantages[vote])
                vote += 1
            stages.append(s.turn.stage)
            samples.append(s)
            game.append(g)
            roles.append(s.turn.role)
    return TrainBatch(
        samples=samples,
        stages=stages,
        game=torch.tensor(game, dtype=torch.long),
        reward=torch.tensor(reward, dtype=torch.float32),
        advantage=torch.tensor(advantage, dtype=torch.float32),
        truncated=torch.tensor([s.truncated for s in samples], dtype=torch.bool),
        roles=roles,
        transcripts=list(transcripts),
    )
