"""What each player is told, as chat messages in the Hugging Face processor format.

The structure follows VISION_ZERO.md §1: every prompt carries the speaker's own picture, its role and number, the rules,
the public clues so far (never anyone's reasoning) and the answer format. Players are 1-based in text.
"""

from __future__ import annotations

from collections.abc import Sequence

Messages = list[dict]
"""``[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ...}]}]``"""

SPY_INSTRUCTIONS = {
    "clevr": "Two objects in your picture were replaced by different ones, so your picture differs from the others'.",
    "chart": "Two values in your chart were swapped, so your chart differs from the others'.",
    "real": "Some objects or parts of the scene in your picture differ from the others' picture.",
    "blank": "Your picture is blank. Work out what the others see from their clues.",
}
"""The spy's briefing, by domain; ``blank`` whenever the spy sees a blank picture."""

NO_CLUE = "(no valid clue)"
"""How an unparseable clue appears to the other players."""


def spy_instruction(domain: str) -> str:
    """The spy's briefing for a domain; unknown domains get the generic photo wording."""
    return SPY_INSTRUCTIONS.get(domain, SPY_INSTRUCTIONS["real"])


def _rules(n_players: int) -> str:
    return (
        f'You are playing "Who is the Spy?" with {n_players} players. Each player has a picture. '
        "The civilians all have the same picture; the spy's picture is different. "
        "Players take turns giving one-sentence clues about their own picture; then votes decide who the spy is."
    )


def format_clues(clues: Sequence[Sequence[str | None]]) -> str:
    """Every clue so far, round by round and player by player (1-based)."""
    lines = []
    for r, said in enumerate(clues):
        if not said:
            continue
        lines.append(f"Round {r + 1}:")
        lines.extend(f"Player {p + 1}: {NO_CLUE if c is None else c}" for p, c in enumerate(said))
    return "\n".join(lines)


def _user(text: str) -> Messages:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def clue_prompt(
    player: int, n_players: int, is_spy: bool, spy_domain: str, clues: Sequence[Sequence[str | None]], round_: int
) -> Messages:
    """The prompt of ``player`` (0-based) speaking in clue round ``round_`` (0-based).

    Args:
        spy_domain: the key of :data:`SPY_INSTRUCTIONS` for this game (``blank`` when the spy sees a blank picture).
        clues: the public clues so far, ``clues[round][player]``, None where a clue was unparseable.
    """
    said = format_clues(clues)
    if is_spy:
        role = f"You are Player {player + 1}, and you are the spy. {spy_instruction(spy_domain)}"
        task = (
            "From the clues so far, infer what the civilians' picture shows. Give a clue that fits their picture, "
            "is plausible, and adds something not yet said, so that you are not singled out."
        )
    else:
        role = f"You are Player {player + 1}, and you are a civilian."
        task = (
            "Describe one clear, specific feature of your picture that nobody has mentioned yet, "
            "so that the other civilians can tell you share their picture."
        )
    text = "\n\n".join(
        [
            _rules(n_players),
            role,
            f"Clues so far:\n{said}" if said else "No clues yet: you speak first.",
            f"This is round {round_ + 1}. {task}",
            "Think it through, then give your clue as one sentence inside \\boxed{}, "
            "for example \\boxed{The sky is cloudy.}",
        ]
    )
    return _user(text)


def decision_prompt(player: int | None, n_players: int, clues: Sequence[Sequence[str | None]]) -> Messages:
    """The voting prompt of civilian ``player`` (0-based), or of the neutral observer when ``player`` is None."""
    if player is None:
        who = "You are the observer. Your picture is the civilians' picture; you did not give clues."
    else:
        who = f"You are Player {player + 1}, and you are a civilian."
    text = "\n\n".join(
        [
            _rules(n_players),
            who,
            f"All clues:\n{format_clues(clues)}",
            "Which player is the spy? Compare every clue with your picture. Signs of the spy: a clue that contradicts "
            "your picture or the majority, a vague clue, or a misleading detail.",
            "Think it through, then give the spy's player number inside \\boxed{}, for example \\boxed{2}. "
            "If you are not sure, answer \\boxed{N/A}.",
        ]
    )
    return _user(text)
