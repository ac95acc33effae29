"""A user's own suite: a JSONL file of questions about pictures stored next to it.

One JSON object per non-blank line::

    {"images": ["img/cat.png"], "question": "What animal is this?", "answer": "cat"}
    {"images": ["a.jpg", "b.jpg"], "question": "Which is brighter?", "answer": "B", "choices": ["left", "right"]}

- ``images``: a non-empty list of paths relative to the file's folder, which they may not leave (no absolute paths,
  ``..`` or symbolic links out of it).
- ``question``: the text shown; unless it already mentions ``\\boxed``, an instruction to answer inside ``\\boxed{}``
  is added, and ``choices`` are listed as ``A. ...``, ``B. ...`` before it.
- ``answer``: a string (or a number). With ``choices`` it must be one of them, or the letter of one.
- ``choices`` (optional): two or more distinct strings; a letter then answers for its option.
- ``kind`` (optional): the question type accuracy is broken down by (``default`` otherwise). Other keys are ignored.

Everything is checked when the file is loaded, so a run never stops halfway: each row's keys and types, and each
picture with the pair sources' own checks (:mod:`vzero.data.pairs.files`: a regular file, not empty, within Pillow's
decompression-bomb limit, fully decodable). A bad row raises :class:`~vzero.suites.base.SuiteError` naming the file
and the line; with ``on_error="skip"`` it is left out and recorded in the suite's ``skipped`` as ``(line, reason)``.
A missing or unreadable file, or one without a single good row, always raises. Pictures are decoded again, to 8-bit
RGB (:func:`vzero.data.pairs.base.to_rgb`), when a question is indexed; a file that changed on disk since loading
then raises naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

from PIL import Image

from vzero.data.pairs.base import OnError
from vzero.data.pairs.files import BadInput, decode, inside, probe, read_text
from vzero.suites.base import Suite
from vzero.suites.question import Question, SuiteError
from vzero.suites.score import canonical, normalize

DEFAULT_KIND = "default"


def load_jsonl(path: str | Path, on_error: OnError = "raise", name: str | None = None) -> Suite:
    """The suite a JSONL file describes (see the module's docstring).

    Args:
        path: The ``.jsonl`` file.
        on_error: ``raise`` on the first bad row, or ``skip`` bad rows and record them in ``suite.skipped``.
        name: The suite's name; the file's stem by default.
    """
    if on_error not in get_args(OnError):
        raise SuiteError(f"on_error must be one of {get_args(OnError)}, got {on_error!r}")
    path = Path(path)
    try:
        text = read_text(path, "the suite")
    except BadInput as bad:
        raise SuiteError(str(bad)) from bad
    base = path.parent.resolve()
    checked: dict[Path, str | None] = {}  # each picture's failure, or None once it decoded
    questions: list[Question] = []
    skipped: list[tuple[int, str]] = []
    # Split on "\n" only: str.splitlines would also break inside JSON strings holding U+2028 and friends.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            questions.append(_row(line, base, checked, lineno))
        except BadInput as bad:
            if on_error == "raise":
                raise SuiteError(f"{path}:{lineno}: {bad.reason}") from bad
            skipped.append((lineno, bad.reason))
    if not questions:
        note = f" ({len(skipped)} bad rows skipped; see .skipped)" if skipped else ""
        raise SuiteError(f"{path}: no usable questions{note}")

    def images(i: int) -> tuple[Image.Image, ...]:
        meta = questions[i].meta
        try:
            return tuple(decode(Path(p)) for p in meta["paths"])
        except BadInput as bad:
            raise SuiteError(f"{path}:{meta['line']}: {bad} (changed since the suite was loaded)") from bad

    return Suite(name or path.stem, questions, images=images, skipped=skipped)


def _row(line: str, base: Path, checked: dict[Path, str | None], lineno: int) -> Question:
    """One line as a question without its pictures; raises :class:`BadInput` with the reason."""
    where = str(lineno)
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadInput(where, f"not valid JSON ({e.msg})") from e
    if not isinstance(obj, dict):
        raise BadInput(where, f"expected a JSON object, got {type(obj).__name__}")
    for key in ("images", "question", "answer"):
        if key not in obj:
            raise BadInput(where, f'missing "{key}"')
    images, question, answer = obj["images"], obj["question"], obj["answer"]
    if not isinstance(images, list) or not images or not all(isinstance(p, str) and p for p in images):
        raise BadInput(where, f'"images" must be a non-empty list of paths, got {_short(images)}')
    if not isinstance(question, str) or not question.strip():
        raise BadInput(where, f'"question" must be a non-empty string, got {_short(question)}')
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not normalize(answer):
        raise BadInput(where, f'"answer" must be a non-empty string or a number, got {_short(answer)}')
    kind = obj.get("kind", DEFAULT_KIND)
    if not isinstance(kind, str) or not kind:
        raise BadInput(where, f'"kind" must be a non-empty string, got {_short(kind)}')
    choices = _choices(obj.get("choices"), where)

    text = question.strip()
    if choices:
        letters = "\n".join(f"{chr(ord('A') + k)}. {c}" for k, c in enumerate(choices))
        text += f"\n{letters}"
        probe_question = Question((), "", answer, kind, choices)
        keys = [canonical(c) for c in choices]
        if canonical(answer, probe_question) not in keys:
            raise BadInput(where, f'"answer" {answer!r} is none of the choices or their letters')
        answer = choices[keys.index(canonical(answer, probe_question))]
    if "\\boxed" not in text:
        how = "the letter of your choice" if choices else "your answer"
        text += f"\nGive {how} inside \\boxed{{}}."

    paths = [str(_picture(base, rel, where, checked)) for rel in images]
    chance = 1 / len(choices) if choices else None
    meta = {"line": lineno, "paths": paths, "images": list(images)}
    return Question((), text, answer, kind, choices, "text", 0.0, chance, meta)


def _choices(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(c, str) and normalize(c) for c in value):
        raise BadInput(where, f'"choices" must be a list of two or more non-empty strings, got {_short(value)}')
    if len({canonical(c) for c in value}) < len(value):
        raise BadInput(where, f'"choices" repeat an option: {_short(value)}')
    if len(value) > 26:
        raise BadInput(where, f'"choices" has {len(value)} options; at most 26 (A-Z)')
    return tuple(value)


def _picture(base: Path, relative: str, where: str, checked: dict[Path, str | None]) -> Path:
    """The checked path of one picture: inside ``base``, a regular image file that decodes."""
    path = inside(base, relative, where)
    if path not in checked:
        try:
            probe(path)
            decode(path)  # verify() misses truncated pixel data; a full decode does not
            checked[path] = None
        except BadInput as bad:
            checked[path] = bad.reason
    if checked[path] is not None:
        raise BadInput(where, f"image {relative!r}: {checked[path]}")
    return path


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
