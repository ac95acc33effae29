"""Scripted players, so that the whole game can be tested, and baselines measured, without a model.

``RandomPlayer`` says random CLEVR-style sentences and votes uniformly. ``OraclePlayer`` reads the pair's ground truth
(``Turn.meta``) to give truthful clues about the picture it sees and to vote for the player whose clues contradict its
own picture. Both answer in the same text format a model must use, so every answer goes through the real parsers.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from vzero.game.game import Stage, Turn

_SHAPES = ("cube", "sphere", "cylinder")
_SIZES = ("small", "large")
_MATERIALS = ("rubber", "metal")
_COLORS = ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")
_ALIASES = {"ball": "sphere", "block": "cube", "metallic": "metal", "shiny": "metal", "matte": "rubber", "grey": "gray"}
_WORD = re.compile(r"[a-z]+")


class RandomPlayer:
    """Random clues from the CLEVR vocabulary and uniformly random votes (N/A included).

    Args:
        seed: seeds the player's own generator.
        gibberish: probability of answering with unparseable text instead, as an untrained model does.
    """

    def __init__(self, seed: int = 0, gibberish: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.gibberish = gibberish

    def __call__(self, turns: Sequence[Turn]) -> list[str]:
        return [self.answer(t) for t in turns]

    def answer(self, turn: Turn) -> str:
        r = self.rng
        if r.random() < self.gibberish:
            return "".join(r.choice("ab{}\\ x1") for _ in range(r.randint(0, 40)))
        if turn.stage == Stage.CLUE:
            obj = {"size": r.choice(_SIZES), "color": r.choice(_COLORS), "material": r.choice(_MATERIALS)}
            obj["shape"] = r.choice(_SHAPES)
            return f"I will name something. \\boxed{{There is a {_describe(obj)}.}}"
        choice = r.randint(0, turn.n_players)
        return "I am not sure. \\boxed{N/A}" if choice == 0 else f"I suspect them. \\boxed{{{choice}}}"


class OraclePlayer:
    """Truthful clues and contradiction-based votes from the pair's ground truth.

    Understands CLEVR-style scenes (``meta["scene"]``) and chart tables (``meta["table"]``). On any other domain, or a
    blank picture, it says something vague and votes N/A, so it never invents knowledge it does not have.
    """

    def __call__(self, turns: Sequence[Turn]) -> list[str]:
        return [self.answer(t) for t in turns]

    def answer(self, turn: Turn) -> str:
        facts = _facts(turn.meta, turn.view)
        if turn.stage == Stage.CLUE:
            said = _said(turn)
            if not facts:
                return "I cannot see much. \\boxed{The picture looks ordinary.}"
            fresh = [f for f in facts if f not in said] or facts
            return f"I pick a detail nobody named yet. \\boxed{{{fresh[turn.player % len(fresh)]}}}"
        if not facts:
            return "I cannot judge. \\boxed{N/A}"
        scores = _contradictions(turn, facts)
        worst = max(scores.values(), default=0)
        suspects = [p for p, s in scores.items() if s == worst]
        if worst == 0 or len(suspects) != 1:
            return "No clue stands out. \\boxed{N/A}"
        return f"Player {suspects[0] + 1} contradicts my picture. \\boxed{{{suspects[0] + 1}}}"


def _describe(obj: Mapping[str, Any]) -> str:
    return f"{obj['size']} {obj['color']} {obj['material']} {obj['shape']}"


def _text(turn: Turn) -> str:
    # Scripted players read the public clues from the prompt, exactly as a model must.
    return next(c["text"] for c in turn.messages[0]["content"] if c["type"] == "text")


def _said(turn: Turn) -> set[str]:
    return {line.split(": ", 1)[1] for line in _text(turn).splitlines() if line.startswith("Player ")}


def _clues_by_player(turn: Turn) -> dict[int, list[str]]:
    clues: dict[int, list[str]] = {}
    for line in _text(turn).splitlines():
        m = re.match(r"Player (\d+): (.*)", line)
        if m:
            clues.setdefault(int(m.group(1)) - 1, []).append(m.group(2))
    return clues


def _facts(meta: Mapping[str, Any], view: str) -> list[str]:
    """True one-sentence statements about the picture seen in ``view``."""
    if view == "blank":
        return []
    if "scene" in meta:
        scene = meta["modified_scene"] if view == "modified" else meta["scene"]
        return [f"There is a {_describe(o)}." for o in scene["objects"]]
    if "table" in meta:
        table = meta["modified_table"] if view == "modified" else meta["table"]
        return [
            f"{name} for {cat} is {_number(v)}."
            for name, values in table["series"].items()
            for cat, v in zip(table["categories"], values)
        ]
    return []


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _contradictions(turn: Turn, facts: list[str]) -> dict[int, int]:
    """For each other player, how many of their clues contradict the facts of the voter's own picture."""
    scenes = "scene" in turn.meta
    truth = turn.meta["scene"]["objects"] if scenes else None
    scores = {}
    for player, clues in _clues_by_player(turn).items():
        if player == turn.player:
            continue
        scores[player] = sum(_contradicts(c, truth, facts) for c in clues)
    return scores


def _contradicts(clue: str, objects: list[Mapping[str, Any]] | None, facts: list[str]) -> bool:
    body = clue.strip()
    if objects is None:
        # Charts: a clue naming a series and category contradicts when its value differs from ours.
        subject = body.rsplit(" is ", 1)[0]
        return body not in facts and any(f.rsplit(" is ", 1)[0] == subject for f in facts)
    words = [_ALIASES.get(w, w) for w in _WORD.findall(body.lower())]
    named = {k: w for w in words for k, vocab in _VOCAB.items() if w in vocab}
    if not named:
        return False  # vague, not contradictory
    return not any(all(o[k] == v for k, v in named.items()) for o in objects)


_VOCAB = {"shape": _SHAPES, "size": _SIZES, "material": _MATERIALS, "color": _COLORS}
