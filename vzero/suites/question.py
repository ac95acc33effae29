"""One question with its exact answer, and the error every suite raises."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

Match = Literal["text", "number", "attributes"]
"""How an answer is compared: see :mod:`vzero.suites.score`."""


class SuiteError(ValueError):
    """A bad suite name, argument or file; for a file, the message names it and the line."""


@dataclass(frozen=True)
class Question:
    """One question about one or more pictures, with its exact answer."""

    images: tuple[Image.Image, ...]
    """The pictures, 8-bit RGB, in the order the text refers to them."""
    text: str
    """The whole text a model is shown, ending with how to answer (inside ``\\boxed{}``)."""
    answer: str
    """The reference answer, as a person would write it in the box."""
    kind: str
    """The question type accuracy is broken down by (``count``, ``value``, ...)."""
    choices: tuple[str, ...] | None = None
    """The options a multiple-choice question lists (a letter answers for its option); None for an open question."""
    match: Match = "text"
    """How :func:`vzero.suites.score.score` compares an answer with ``answer``."""
    tolerance: float = 0.0
    """For ``match="number"``: the largest absolute difference still counted correct."""
    chance: float | None = None
    """The probability that a uniform guess over this question's possible answers is right, where known."""
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """Ground truth behind the question (the pair's scene or table, the question's program). Never shown to a model."""
