"""Reading answers out of free-form model text.

During RL a model writes anything: unclosed braces, several boxes, megabytes of noise. These functions never raise on a
string and run in linear time, so gibberish is counted as an invalid answer, never a crash.

The answer is the *last* box, because the answer follows the reasoning, and the reasoning may quote the prompt's
examples (``... I must answer like \\boxed{N/A} ...``). A last box left open (the output was cut off mid-answer) means
no answer: the earlier boxes were then part of the reasoning, not the answer.
"""

from __future__ import annotations

import re

_BOX_OPEN = re.compile(r"\\boxed\s*\{")
_BRACE = re.compile(r"[{}]")
_TEXT_WRAPPER = re.compile(r"^\\(?:text|textbf|mathrm|mathbf)\s*\{(.*)\}$", re.DOTALL)
_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)
_ANSWER_CLOSE = re.compile(r"</answer>", re.IGNORECASE)
_PLAYER = re.compile(r"(?:player[\s_#:\-]*)?([0-9]+)", re.IGNORECASE | re.ASCII)
_NA = {"n/a", "na", "n.a.", "n.a", "n\\a"}


def last_box(text: str) -> str | None:
    """The body of the last top-level ``\\boxed{...}`` (nested braces kept); None if there is none or it is unclosed."""
    body, pos = None, 0
    while (m := _BOX_OPEN.search(text, pos)) is not None:
        depth, end = 1, None
        # Jump from brace to brace; the scan resumes after each closed box, so the whole text is read once.
        for brace in _BRACE.finditer(text, m.end()):
            depth += 1 if brace.group() == "{" else -1
            if depth == 0:
                end = brace.start()
                break
        if end is None:
            return None
        body, pos = text[m.end() : end], end + 1
    return body


def _answer(text: str) -> str | None:
    if not isinstance(text, str):
        return None
    if _BOX_OPEN.search(text):
        return last_box(text)
    # Two linear scans rather than one lazy regex: many unclosed tags must not make this quadratic.
    close = _last(_ANSWER_CLOSE, text, len(text))
    start = _last(_ANSWER_OPEN, text, close.start()) if close else None
    return text[start.end() : close.start()] if start else None


def _last(pattern: re.Pattern[str], text: str, end: int) -> re.Match[str] | None:
    match = None
    for match in pattern.finditer(text, 0, end):
        pass
    return match


def parse_clue(text: str) -> str | None:
    """The clue a player gave: the last ``\\boxed{}`` body, else the last ``<answer>`` body, stripped; None if empty."""
    body = _answer(text)
    if body is None:
        return None
    body = body.strip()
    return body or None


def parse_vote(text: str, n_players: int) -> int | str:
    """The player a vote names, 0-based, or ``"n/a"``, or ``"invalid"``.

    Accepts ``\\boxed{3}``, ``\\boxed{Player 3}``, ``\\boxed{PLAYER_3}`` in any case and spacing, and ``N/A`` / ``NA``.
    Numbers are 1-based in text; anything outside ``1..n_players`` is invalid. Never raises.
    """
    body = _answer(text)
    if body is None:
        return "invalid"
    body = body.strip().strip("*").strip()
    if (m := _TEXT_WRAPPER.match(body)) is not None:
        body = m.group(1).strip()
    if re.sub(r"\s+", "", body).lower() in _NA:
        return "n/a"
    m = _PLAYER.fullmatch(body)
    if m is None or len(m.group(1)) > 6:
        return "invalid"
    k = int(m.group(1))
    return k - 1 if 1 <= k <= n_players else "invalid"
