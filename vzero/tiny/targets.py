"""What ``tiny`` is taught, all of it a function of the renderer's metadata or of the public clue text, never of who the
spy is: the caption of a picture, and the voter's notes (and how a model's notes are scored).

The caption, ``I see {n} objects. \\boxed{There is a {size} {color} {material} {shape}.}``, names the count and the
biggest-looking object of the speaker's own picture (it covers the most visual tokens).

The voter's notes are the one skill of reading the game that ``tiny`` is taught before RL.
A vote turn's answer restates the evidence before the vote, one line of the clues at a time::

    Mine: red metal cube. Player 1: red rubber cube, same. Player 3: blue rubber sphere, different. \\boxed{3}

(what the voter's own last clue describes, then what each other player's does, and whether the two name the same
colour). Every token of the notes is a function of the public clue text alone, so it can be taught with no labels and
without ever knowing who the spy is; which player to vote for is left to RL. Copying whole descriptions gives each
copy a run of tokens to follow, which a small model picks up far sooner than a single word. The verdict compares
colour only: two civilians' sampled clues seldom match word for word, so a verdict on whole descriptions marks
nearly everyone "different" (it singled out some players in 12% of the turns), while colour is the attribute the
clues carry most reliably (README, "Does training help?").

A single vote token is too sparse a target for a small network to learn to read the clues from (it stays at
self-exclusion); dense targets for the copying and the comparison are what make the reading learnable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from vzero.data.pairs.clevr import COLORS, MATERIALS, RADIUS, SHAPES, SIZES, describe_object

ATTRIBUTES = {"size": SIZES, "color": tuple(COLORS), "material": MATERIALS, "shape": SHAPES}

NONE = "none"
"""What the notes copy of a clue with no words (or an unparseable one)."""
_WORD = re.compile(r"[a-z]+")
_ENTRY = re.compile(r"Player (\d+): ([a-z ]+), (same|different)\.")
_MINE = re.compile(r"Mine: ([a-z ]+)\.")


def described(clue: str | None, limit: int = 6) -> str:
    """What a clue describes, as the notes copy it: its words after a leading "There is a/an", at most ``limit``."""
    words = _WORD.findall((clue or "").lower())
    if words[:2] == ["there", "is"]:
        words = words[2:]
    if words[:1] in (["a"], ["an"]):
        words = words[1:]
    return " ".join(words[:limit]) or NONE


def colour(description: str) -> str | None:
    """The first colour a description names, None if it names none."""
    return next((w for w in description.split() if w in COLORS), None)


def verdicts(player: int, clues: Mapping[int, str | None]) -> dict[int, str]:
    """``{other player: "same" | "different"}``: whether their last clue names the voter's colour. A clue that names
    no colour (or an unparseable one) matches nobody, not even another such clue."""
    mine = colour(described(clues.get(player)))
    return {
        p: "same" if mine is not None and colour(described(clues[p])) == mine else "different"
        for p in sorted(clues)
        if p != player
    }


def notes(player: int, clues: Mapping[int, str | None]) -> str:
    """The notes of voter ``player`` (0-based) given each player's last clue (``clues[p]``, None if unparseable)."""
    parts = [f"Mine: {described(clues.get(player))}."]
    for p, verdict in verdicts(player, clues).items():
        parts.append(f"Player {p + 1}: {described(clues[p])}, {verdict}.")
    return " ".join(parts)


def score_notes(text: str, player: int, clues: Mapping[int, str | None]) -> dict[str, int]:
    """Counts that score a model's notes against the true ones: ``mine`` (own description copied), ``copy`` (each
    other player's description copied, by number), ``judge`` (same/different right), with ``copy_n`` / ``judge_n``
    the number of entries expected. An entry that is missing or malformed counts as wrong; never raises."""
    found = {int(m.group(1)) - 1: (m.group(2), m.group(3)) for m in _ENTRY.finditer(text)}
    mine = _MINE.search(text)
    truth = notes(player, clues)
    want = {int(m.group(1)) - 1: (m.group(2), m.group(3)) for m in _ENTRY.finditer(truth)}
    counts = {"mine": int(mine is not None and mine.group(1) == described(clues.get(player))), "copy": 0, "judge": 0}
    for p, (words, verdict) in want.items():
        got = found.get(p)
        counts["copy"] += got is not None and got[0] == words
        counts["judge"] += got is not None and got[1] == verdict
    counts["copy_n"] = counts["judge_n"] = len(want)
    return counts


def depth(scene: dict, obj: dict) -> float:
    cam = scene["camera"]
    pos, fwd = np.asarray(cam["position"]), np.asarray(cam["target"]) - np.asarray(cam["position"])
    return float((np.array([*obj["position"], RADIUS[obj["size"]]]) - pos) @ fwd / np.linalg.norm(fwd))


def biggest_first(scene: dict) -> list[dict]:
    """Objects by apparent size (world radius over depth), biggest first."""
    return sorted(scene["objects"], key=lambda o: -RADIUS[o["size"]] / depth(scene, o))


def clue_text(obj: dict, n_objects: int) -> str:
    return f"I see {n_objects} objects. \\boxed{{There is {describe_object(obj)}.}}"


def clue_target(scene: dict) -> str:
    """The caption: the object count, then the biggest-looking object, which covers the most visual tokens."""
    objs = biggest_first(scene)
    return clue_text(objs[0], len(objs))
