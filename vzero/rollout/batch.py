"""The training batch: turn samples from transcripts, with their stage, role, game, reward and advantage.

Rewards and advantages come from the game engine: clue samples carry their player's Eq. 1 reward and its RAE advantage
(Eq. 2; every clue of a player in a game shares it), vote samples their Eq. 4 reward and the advantage normalised over
their game's votes (Eq. 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from vzero.rollout.engine import RolloutTranscript, TurnSample

CLUE, DECISION = 1, 0
"""Stage codes, as logged under ``stage``."""


@dataclass
class TrainBatch:
    """Every turn sample of a rollout, ready to be scored by the policy in micro-batches."""

    samples: list[TurnSample]
    stage: torch.Tensor  # [N] long: CLUE (1) or DECISION (0)
    game: torch.Tensor  # [N] long: index of the sample's game in the rollout
    reward: torch.Tensor  # [N] float
    advantage: torch.Tensor  # [N] float
    truncated: torch.Tensor  # [N] bool
    roles: list[str]
    """``civilian``, ``spy`` or ``observer``, per sample."""
    transcripts: list[RolloutTranscript]
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent producing the batch (``rollout``, ``pairs``), filled by the data module."""

    def __len__(self) -> int:
        return len(self.samples)

    def select(self, index: torch.Tensor) -> TrainBatch:
        """The samples at ``index`` (a [K] long tensor), with the same transcripts."""
        ids = index.tolist()
        return TrainBatch(
            samples=[self.samples[i] for i in ids],
            stage=self.stage[index],
            game=self.game[index],
            reward=self.reward[index],
            advantage=self.advantage[index],
            truncated=self.truncated[index],
            roles=[self.roles[i] for i in ids],
            transcripts=self.transcripts,
            timings=self.timings,
        )


def build_batch(transcripts: Sequence[RolloutTranscript]) -> TrainBatch:
    """Flatten transcripts into one batch. Clue advantages need the transcripts to have been scored with baselines."""
    samples, stage, game, reward, advantage, roles = [], [], [], [], [], []
    for g, t in enumerate(transcripts):
        if t.clue_advantages is None:
            raise ValueError("transcripts must be scored with RoleBaselines to train clues (clue_advantages is None)")
        vote = 0
        for s in t.samples:
            if s.turn.stage == "clue":
                stage.append(CLUE)
                reward.append(t.clue_rewards[s.turn.player])
                advantage.append(t.clue_advantages[s.turn.player])
            else:
                stage.append(DECISION)
                reward.append(t.decision_rewards[vote])
                advantage.append(t.decision_advantages[vote])
                vote += 1
            samples.append(s)
            game.append(g)
            roles.append(s.turn.role)
    return TrainBatch(
        samples=samples,
        stage=torch.tensor(stage, dtype=torch.long),
        game=torch.tensor(game, dtype=torch.long),
        reward=torch.tensor(reward, dtype=torch.float32),
        advantage=torch.tensor(advantage, dtype=torch.float32),
        truncated=torch.tensor([s.truncated for s in samples], dtype=torch.bool),
        roles=roles,
        transcripts=list(transcripts),
    )
