"""What a policy's votes are worth, measured exactly: no sampling noise, so two policies compare on equal terms.

On fixed vote turns (the civilians' prompts of held-out games, played once), :func:`vote_values` computes the
probability of each vote a policy can cast (naming each player, or abstaining) after a given lead-in (for the embedded
``tiny`` model, the notes it was pretrained to write before its vote, :func:`vzero.tiny.targets.notes`, with the
clues read right), and from them the expected Eq. 4 reward, the probability of naming the spy, oneself, or N/A.
Probability that the listed votes miss (any other text) counts as an unparseable vote (-1), so the expected reward can
only understate a policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vzero.data.pairs import ClevrPairs
from vzero.data.pairs.base import ImagePair
from vzero.game import GameConfig, Stage, decision_reward, last_clues
from vzero.model.inputs import Picture
from vzero.model.policy import Policy
from vzero.model.sampling import SamplingByStage, SamplingConfig
from vzero.rollout.engine import RolloutEngine


@dataclass(frozen=True)
class VoteTurn:
    prompt_ids: list[int]
    picture: Picture
    player: int
    spy: int
    n_players: int
    clues: Mapping[int, str | None]
    """Each player's last clue, as the prompt shows them."""


def vote_turns(
    policy: Policy, pairs: Sequence[ImagePair], config: GameConfig, sampling: SamplingByStage, seed: int
) -> list[VoteTurn]:
    """The civilians' vote turns of one game per pair, the clues spoken by ``policy`` (keyed by ``seed``)."""
    rollout = RolloutEngine(policy).play(list(pairs), config, sampling, sample_seed=seed)
    return [
        VoteTurn(s.prompt_ids, s.picture, s.turn.player, t.spy, s.turn.n_players, last_clues(t.clues))
        for t in rollout.transcripts
        for s in t.samples
        if s.turn.stage == Stage.DECISION
    ]


def config_game(path: str | Path) -> tuple[GameConfig, SamplingByStage]:
    """The game a ``vzero fit`` config file plays (``data.game``, one vote per civilian turn) and its clue sampling
    (``data.sampling.clue``): what the held-out vote turns of that config are played with."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())["data"]
    clue = {k: data["sampling"]["clue"][k] for k in ("temperature", "max_new_tokens")}
    sampling = SamplingByStage(clue=SamplingConfig(**clue))
    return GameConfig(**{**data["game"], "votes_per_voter": 1}), sampling


def held_out_vote_turns(
    policy: Policy, config: GameConfig, sampling: SamplingByStage, games: int = 48, seed: int = 10_000
) -> list[VoteTurn]:
    """:func:`vote_turns` of ``games`` CLEVR pairs drawn from ``seed`` (240x160), one game each, keyed by ``seed``."""
    pairs = ClevrPairs(n=games, seed=seed, size=(240, 160))
    return vote_turns(policy, [pairs[i] for i in range(games)], config, sampling, seed)


@torch.no_grad()
def vote_values(policy: Policy, turns: Sequence[VoteTurn], lead: Callable[[VoteTurn], str]) -> dict[str, float]:
    """Means over ``turns`` of the expected decision reward (``reward``) and of the probability of naming the spy
    (``spy``), oneself (``self``), abstaining (``n/a``) and of writing any listed vote at all (``listed``), each vote
    ``\\boxed{k}`` scored after ``lead(turn)`` (given, not scored); ``lead`` is the mean log-probability per token of
    the lead-in itself."""
    tokenizer = policy.processor.tokenizer
    out = dict.fromkeys(("reward", "spy", "self", "n/a", "listed", "lead"), 0.0)
    for turn in turns:
        answers: list[int | str] = [*range(turn.n_players), "n/a"]
        first = lead(turn)
        head = tokenizer(first, add_special_tokens=False).input_ids
        texts = [f"{first} \\boxed{{{'N/A' if a == 'n/a' else a + 1}}}{tokenizer.eos_token}" for a in answers]
        completions = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
        assert all(c[: len(head)] == head for c in completions), "the lead-in must tokenize alike on its own"
        n = len(answers)
        inputs = policy.inputs.pack([turn.prompt_ids] * n, [turn.picture] * n, completions)
        logp = policy.logprobs(inputs)  # [n, C], right-aligned
        tails = [len(c) - len(head) for c in completions]
        p = [logp[i, logp.shape[1] - t :].sum().exp().item() for i, t in enumerate(tails)]  # each vote, given the lead
        out["lead"] += logp[0, logp.shape[1] - len(completions[0]) : logp.shape[1] - tails[0]].mean().item()
        out["reward"] += sum(q * decision_reward(a, turn.spy) for q, a in zip(p, answers)) - (1 - sum(p))
        out["spy"] += p[turn.spy]
        out["self"] += p[turn.player]
        out["n/a"] += p[-1]
        out["listed"] += sum(p)
    return {k: v / max(1, len(turns)) for k, v in out.items()}
