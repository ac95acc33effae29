"""One game of "Who is the Spy?" as a small state machine, and drivers that play many games with any responder.

A :class:`Game` says which turns it wants next (:meth:`Game.pending`) and takes their raw outputs
(:meth:`Game.submit`). In the clue stage that is one speaker at a time, in order 1..n, round by round; in the decision
stage it is every vote at once. Because the games of a batch share one config, their pending turns always line up: a
batched engine serves all games' turn for one (round, speaker) with a single ``generate``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from vzero.game.config import GameConfig
from vzero.game.parse import parse_clue, parse_vote
from vzero.game.prompts import Messages, clue_prompt, decision_prompt
from vzero.game.rewards import Vote, clue_rewards, decision_rewards, tally


class Stage(str, Enum):
    """The two stages of a game, and of training: giving clues, and voting for the spy.

    A ``str`` enum, so a stage compares equal to its name (``Stage.CLUE == "clue"``) and reads as it in YAML and logs.
    """

    CLUE = "clue"
    DECISION = "decision"

    def __str__(self) -> str:
        return self.value


Role = Literal["civilian", "spy", "observer"]
View = Literal["original", "modified", "blank"]
OBSERVER = -1
"""The ``player`` of the neutral observer's turns."""


@dataclass(frozen=True)
class Turn:
    """One request for text: who speaks, what they see, and the prompt they get."""

    game: int
    """The game's index in the batch being played."""
    stage: Stage
    player: int
    """0-based player index; :data:`OBSERVER` for the neutral observer."""
    n_players: int
    role: Role
    round: int
    """0-based clue round; -1 for votes."""
    sample: int
    """Which of the voter's G vote samples (0 for clues)."""
    view: View
    """The picture the speaker sees."""
    messages: Messages
    meta: Mapping[str, Any] = field(repr=False, compare=False)
    """The pair's ground truth. Only scripted players may read it; it never reaches a prompt."""


Responder = Callable[[Sequence[Turn]], Sequence[str]]
"""Anything that answers a batch of turns with one raw text each: a scripted player, or the rollout engine's model."""


@dataclass
class Transcript:
    """Everything that happened in one game. Players are 0-based."""

    config: GameConfig
    domain: str
    spy: int
    seed: int
    views: list[View]
    """What each player saw."""
    turns: list[Turn]
    """Every prompt, in play order: clue turns, then vote turns."""
    outputs: list[str]
    """Raw text, aligned with ``turns``."""
    clues: list[list[str | None]]
    """Parsed clues, ``clues[round][player]``; None where unparseable."""
    votes: list[Vote]
    """Parsed votes, aligned with the decision turns."""
    tally: list[int]
    """Votes received by each player."""
    clue_rewards: list[float]
    """Per player (Eq. 1); they sum to 0."""
    decision_rewards: list[float]
    """Per vote (Eq. 4 or the shaped variant), aligned with ``votes``."""

    @property
    def civilians_win(self) -> bool:
        """The civilians win when the spy received strictly more votes than every other player."""
        others = [v for p, v in enumerate(self.tally) if p != self.spy]
        return self.tally[self.spy] > max(others)

    @property
    def winner(self) -> Literal["civilians", "spy"]:
        return "civilians" if self.civilians_win else "spy"


class Game:
    """A game in progress.

    Args:
        config: the rules.
        domain: the pair's domain (``clevr``, ``chart``, ``real``); picks the spy's briefing.
        seed: draws the spy's seat, so the same seed always seats the spy in the same place.
        meta: the pair's ground truth, handed to scripted policies through :attr:`Turn.meta`.
        has_modified: False when the pair has no modified picture; the spy then sees a blank one.
        index: the game's index in its batch, copied into every :class:`Turn`.
    """

    def __init__(
        self,
        config: GameConfig,
        domain: str = "clevr",
        seed: int = 0,
        meta: Mapping[str, Any] | None = None,
        has_modified: bool = True,
        index: int = 0,
    ) -> None:
        self.config, self.domain, self.seed, self.index = config, domain, seed, index
        self.meta = meta if meta is not None else {}
        n = config.n_players
        self.spy = random.Random(seed).randrange(n)
        spy_view: View = "modified" if config.spy_view == "modified" and has_modified else "blank"
        self.views: list[View] = [spy_view if p == self.spy else "original" for p in range(n)]
        self.spy_domain = "blank" if spy_view == "blank" else domain
        self.clues: list[list[str | None]] = [[] for _ in range(config.clue_rounds)]
        self.turns: list[Turn] = []
        self.outputs: list[str] = []
        self.votes: list[Vote] = []
        self._pending: list[Turn] = [self._clue_turn(0, 0)]

    @property
    def done(self) -> bool:
        return not self._pending

    def pending(self) -> list[Turn]:
        """The turns the game waits for now; empty once it is over."""
        return list(self._pending)

    def submit(self, outputs: Sequence[str]) -> None:
        """Record the raw outputs of the pending turns, in order, and move the game on."""
        turns = self._pending
        if len(outputs) != len(turns):
            raise ValueError(f"game {self.index} expected {len(turns)} outputs, got {len(outputs)}")
        self.turns.extend(turns)
        self.outputs.extend(outputs)
        if turns[0].stage == Stage.CLUE:
            (turn,), (text,) = turns, outputs
            self.clues[turn.round].append(parse_clue(text))
            self._pending = self._next_after(turn.round, turn.player)
        else:
            self.votes.extend(parse_vote(text, self.config.n_players) for text in outputs)
            self._pending = []

    def _next_after(self, round_: int, player: int) -> list[Turn]:
        if player + 1 < self.config.n_players:
            return [self._clue_turn(round_, player + 1)]
        if round_ + 1 < self.config.clue_rounds:
            return [self._clue_turn(round_ + 1, 0)]
        return self._vote_turns()

    def _turn(self, stage: Stage, player: int, role: Role, round_: int, sample: int, view: View, messages: Messages):
        n = self.config.n_players
        return Turn(self.index, stage, player, n, role, round_, sample, view, messages, self.meta)

    def _clue_turn(self, round_: int, player: int) -> Turn:
        is_spy = player == self.spy
        messages = clue_prompt(player, self.config.n_players, is_spy, self.spy_domain, self.clues, round_)
        return self._turn(Stage.CLUE, player, "spy" if is_spy else "civilian", round_, 0, self.views[player], messages)

    def _vote_turns(self) -> list[Turn]:
        n, g = self.config.n_players, self.config.votes_per_voter
        if self.config.voting == "observer":
            messages = decision_prompt(None, n, self.clues)
            return [self._turn(Stage.DECISION, OBSERVER, "observer", -1, s, "original", messages) for s in range(g)]
        turns = []
        for p in range(n):
            if p != self.spy:  # the spy abstains
                messages = decision_prompt(p, n, self.clues)
                turns.extend(self._turn(Stage.DECISION, p, "civilian", -1, s, "original", messages) for s in range(g))
        return turns

    def transcript(self) -> Transcript:
        """Score the finished game: votes, tally and both stages' rewards. Advantages are training's business
        (:mod:`vzero.rl.advantages`), so scoring a game never changes any state."""
        if not self.done:
            raise RuntimeError(f"game {self.index} is not over yet")
        cfg = self.config
        counts = tally(self.votes, cfg.n_players)
        # Votes per sampling round, so the clue rewards' scale does not grow with G (see vzero.game.rewards).
        per_round = [c / cfg.votes_per_voter for c in counts]
        c_rewards = clue_rewards(per_round, self.spy, cfg.beta, cfg.lam)
        d_rewards = decision_rewards(self.votes, self.spy, cfg.decision_reward)
        return Transcript(
            config=cfg,
            domain=self.domain,
            spy=self.spy,
            seed=self.seed,
            views=list(self.views),
            turns=list(self.turns),
            outputs=list(self.outputs),
            clues=[list(r) for r in self.clues],
            votes=list(self.votes),
            tally=counts,
            clue_rewards=c_rewards,
            decision_rewards=d_rewards,
        )


def last_clues(clues: Sequence[Sequence[str | None]]) -> dict[int, str | None]:
    """Each player's last clue from ``clues[round][player]`` (a game's or a transcript's); players who have not spoken
    yet are absent."""
    return {p: clue for round_ in clues for p, clue in enumerate(round_)}


def play_games(games: Sequence[Game], respond: Responder) -> None:
    """Play games to the end together: each call of ``respond`` answers every game's pending turns at once."""
    while pending := [t for g in games for t in g.pending()]:
        outputs = list(respond(pending))
        if len(outputs) != len(pending):
            raise ValueError(f"the responder answered {len(outputs)} of {len(pending)} turns")
        i = 0
        for g in games:
            k = len(g.pending())
            if k:
                g.submit(outputs[i : i + k])
                i += k


def play_game(pair: Any, respond: Responder, config: GameConfig | None = None, seed: int = 0) -> Transcript:
    """Play one game on ``pair`` (anything with ``domain``, ``meta`` and ``modified``) and score it."""
    game = Game(config or GameConfig(), pair.domain, seed, pair.meta, pair.modified is not None)
    play_games([game], respond)
    return game.transcript()
