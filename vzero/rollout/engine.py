"""Batched multi-agent rollouts: many games at once, every player with its own picture, exact token ids kept.

``RolloutEngine.play`` drives B games through :func:`vzero.game.play_games`. Because the games share one config, their
pending turns line up, so each (round, speaker slot) is one batched ``generate`` over all B games, and the decision
stage is one ``generate`` over every vote of every game (voters × G samples). Each game's pictures are preprocessed
once and shared by all of its turns. Prompts are left-padded; the spy's turns carry the spy's picture (modified or
blank), everyone else's the original. A play returns one :class:`Rollout`: its transcripts with every turn's exact
token ids, its wall time, and the prompt tokens it reused.

Departure from the reference release: it generates one player at a time at batch size 1, and re-tokenises decoded text
for training, so the EOS token is never learned. Here the sampled ids, EOS included, are what training scores.

Model output is untrusted: the decoded text the game gets (and keeps as clues that later prompts quote) has every
spelling of a control token neutralised by :class:`~vzero.model.text.SafeText`, so a clue that spells
``<|image_pad|>`` or ``<|im_end|>`` stays text in every later prompt instead of becoming a placeholder or a chat
boundary. Only that text changes; the sampled ids are kept as they are.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vzero.data.pairs.base import ImagePair, blank_like
from vzero.game import Game, GameConfig, Transcript, Turn, play_games
from vzero.model.inputs import Picture, Side
from vzero.model.policy import Policy
from vzero.model.sampling import SamplingByStage, row_key
from vzero.model.text import SafeText

SideOf = Callable[[Turn], Side]
"""Who plays a turn: the trained weights or the reference's; win-rate evaluation plays one role with each."""


@dataclass(frozen=True)
class TurnSample:
    """One generated turn, exactly as sampled: training scores these ids, never re-encoded text."""

    turn: Turn
    prompt_ids: list[int]
    completion_ids: list[int]
    """Generated ids, the EOS included when generation stopped by itself."""
    truncated: bool
    picture: Picture
    """The picture the speaker saw (shared with the game's other turns, not copied)."""
    text: str
    """Decoded completion as the game got it, control-token spellings neutralised; for parsing and logs only."""
    side: Side = "trained"
    """Who produced it: the trained weights or the reference's."""
    temperature: float = 1.0
    """The temperature its log-probs are scored at: the one it was sampled at (1 for greedy decoding)."""


@dataclass
class RolloutTranscript(Transcript):
    """A game's :class:`~vzero.game.Transcript` plus its token-level samples, aligned with ``turns``."""

    samples: list[TurnSample] = field(default_factory=list)


@dataclass(frozen=True)
class Rollout:
    """What one play produced: its games, in the order of their pairs, and what playing them cost."""

    pairs: list[ImagePair]
    transcripts: list[RolloutTranscript]
    seconds: float
    """Wall time of the play, pictures' preprocessing included."""
    reused_prompt_tokens: int = 0
    """Prompt tokens whose keys and values came from earlier turns instead of being computed."""


class RolloutEngine:
    """Plays batches of games with a :class:`~vzero.model.policy.Policy`.

    Args:
        policy: generates and tokenises; its ``decoding.max_batch_size`` bounds each decoding pass.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.safe_text = SafeText.for_processor(policy.processor)

    def play(
        self,
        pairs: Sequence[ImagePair],
        config: GameConfig,
        sampling: SamplingByStage,
        seeds: Sequence[int] | None = None,
        side_of: SideOf | None = None,
        sample_seed: int = 0,
    ) -> Rollout:
        """Play one game per pair, all at once, and score them (rewards; advantages are the batch builder's).

        Every turn is one ``generate`` over all games, the reference's rows included (they run with the adapter off in
        the same batch), so every rank makes the same calls whatever the roles.

        Args:
            seeds: per-game seeds (they seat the spy); default ``0..B-1``.
            side_of: who plays each turn; None means the trained weights play everything.
            sample_seed: with the game's seed and the turn, keys each row's sampling noise: the same
                ``(sample_seed, seeds)`` replay the same draws, whichever side plays which turn.
        """
        start = time.perf_counter()
        seeds = list(range(len(pairs))) if seeds is None else list(seeds)
        if len(seeds) != len(pairs):
            raise ValueError(f"got {len(seeds)} seeds for {len(pairs)} pairs")
        games = [
            Game(config, p.domain, seed=s, meta=p.meta, has_modified=p.modified is not None, index=i)
            for i, (p, s) in enumerate(zip(pairs, seeds))
        ]
        pictures = self._pictures(pairs, games)
        samples: list[list[TurnSample]] = [[] for _ in games]
        reused = 0

        def respond(turns: Sequence[Turn]) -> list[str]:
            nonlocal reused
            stage_sampling = sampling.for_stage(turns[0].stage)
            sides: list[Side] = [side_of(t) if side_of else "trained" for t in turns]
            keys = [row_key(sample_seed, seeds[t.game], str(t.stage), t.round, t.player, t.sample) for t in turns]
            pics = [pictures[t.game][t.view] for t in turns]
            prompts = [self.policy.inputs.prompt_ids(t.messages, p) for t, p in zip(turns, pics)]
            comps = self.policy.generate(prompts, pics, stage_sampling, keys=keys, sides=sides)
            texts = [self.safe_text(self.policy.inputs.text(c.ids)) for c in comps]
            temperature = stage_sampling.scoring_temperature
            for t, prompt, pic, comp, text, side in zip(turns, prompts, pics, comps, texts, sides):
                samples[t.game].append(TurnSample(t, prompt, comp.ids, comp.truncated, pic, text, side, temperature))
            reused += sum(c.reused for c in comps)
            return texts

        with self.policy.rollout():  # the weights stay as they are: prompts' states can be reused across turns
            play_games(games, respond)
        transcripts = [
            RolloutTranscript(**vars(game.transcript()), samples=samples[g])  # both in play order
            for g, game in enumerate(games)
        ]
        return Rollout(list(pairs), transcripts, time.perf_counter() - start, reused)

    def _pictures(self, pairs: Sequence[ImagePair], games: Sequence[Game]) -> list[dict[str, Picture]]:
        """Preprocess every picture a game shows, once, in one batched call."""
        wanted: list[tuple[int, str]] = []
        images = []
        for g, (pair, game) in enumerate(zip(pairs, games)):
            for view in sorted(set(game.views)):
                wanted.append((g, view))
                image = {"original": pair.original, "modified": pair.modified}.get(view)
                images.append(image or blank_like(pair.original))
        encoded = self.policy.inputs.pictures(images)
        out: list[dict[str, Picture]] = [{} for _ in games]
        for (g, view), pic in zip(wanted, encoded):
            out[g][view] = pic
        return out
