"""Scoring a model's response to a question: find the box, normalise, compare.

The answer is the body of the response's last ``\\boxed{}`` (:func:`vzero.game.parse.last_box`, as the game reads
clues and votes). A response without one, whose last box is left open, or whose box is empty is *unparsed*: counted
wrong, and counted apart so a format failure is not mistaken for a wrong reading of the picture.

Every body is normalised first: case, surrounding whitespace, quotes and trailing punctuation, LaTeX text wrappers
(``\\text{red}``), a leading article, ``true``/``false`` for ``yes``/``no``, and a number word (``zero`` to
``twenty``) for its digits. Then :attr:`Question.match` decides:

- ``text``: equal after normalisation; two plain numbers compare as numbers (``3`` = ``3.0``). With ``choices``, a
  letter (``B``, ``(b)``, ``B.``, ``B. dog``) stands for its option.
- ``number``: the body is one number, optionally followed by a unit or ``%`` (``412``, ``1,200``, ``$412``,
  ``23%``, ``4.5 stars``, ``three``), within :attr:`Question.tolerance` of the answer.
- ``attributes``: a CLEVR object description. Every attribute the reference names (size, color, material, shape)
  must be named with the same value; naming another attribute as well is allowed, naming one twice with different
  values is wrong, and so is any word that is neither an attribute value nor filler (``the``, ``object``, ...). The
  renderer's and CLEVR's own question vocabulary count as synonyms: ``grey``/``gray``, ``ball``/``sphere``,
  ``block``/``cube``, ``metallic``/``shiny``/``metal``, ``matte``/``rubber``, ``big``/``large``,
  ``tiny``/``small``, and plurals.
"""

from __future__ import annotations

import re

from vzero.data.pairs.clevr import MATERIALS, SHAPES, SIZES
from vzero.data.pairs.clevr_render import COLORS
from vzero.game.parse import last_box
from vzero.suites.question import Question

NUMBER_WORDS = {
    word: k
    for k, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}
_YES_NO = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}
_WRAPPER = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_ESCAPES = (("\\%", "%"), ("\\$", "$"), ("\\,", ""), ("\\ ", " "), ("~", " "))
_ARTICLE = re.compile(r"^(?:a|an|the)\s+")
_NUMBER = re.compile(r"([-+]?)\$?((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)\s*([^\d]*)")
_LETTER = re.compile(r"\(?([a-z])\)?(?:[.:)]\s*(.*)|\s+(.*))?")

ATTRIBUTE_OF = {
    **{v: "size" for v in SIZES},
    **{v: "color" for v in COLORS},
    **{v: "material" for v in MATERIALS},
    **{v: "shape" for v in SHAPES},
}
"""Each CLEVR attribute value and the attribute it belongs to."""
SYNONYMS = {
    "grey": "gray",
    "ball": "sphere",
    "balls": "sphere",
    "spheres": "sphere",
    "block": "cube",
    "blocks": "cube",
    "cubes": "cube",
    "cylinders": "cylinder",
    "metallic": "metal",
    "shiny": "metal",
    "matte": "rubber",
    "matt": "rubber",
    "big": "large",
    "tiny": "small",
}
"""Words read as the renderer's own, from CLEVR's question vocabulary (its ``synonyms.json``) and plurals."""
_FILLER = frozenset(
    "a an the it its one is was it's object objects thing things became becomes become turned turns into now "
    "and with made of color colour shape size material".split()
)


def normalize(text: str) -> str:
    """Lower case, no wrappers, quotes, trailing punctuation or leading article; ``true`` -> ``yes``; ``3`` for
    ``three``."""
    for _ in range(3):  # nested wrappers, e.g. \textbf{\text{red}}
        text = _WRAPPER.sub(r"\1", text)
    for old, new in _ESCAPES:
        text = text.replace(old, new)
    text = " ".join(text.lower().split()).strip("\"'`*").rstrip(".,;:!?").strip()
    text = _ARTICLE.sub("", text)
    text = _YES_NO.get(text, text)
    return str(NUMBER_WORDS[text]) if text in NUMBER_WORDS else text


def number(text: str) -> float | None:
    """The one number ``text`` states (after :func:`normalize`), optionally followed by a unit; None otherwise."""
    text = normalize(text)
    first, _, rest = text.partition(" ")
    if first in NUMBER_WORDS and _is_unit(rest):
        return float(NUMBER_WORDS[first])
    m = _NUMBER.fullmatch(text)
    if m is None or not _is_unit(m.group(3)):
        return None
    value = float(m.group(2).replace(",", ""))
    return -value if m.group(1) == "-" else value


def _is_unit(text: str) -> bool:
    """Whether what follows a number can be its unit: no other number in it ("3 or 4", "three or four")."""
    return not any(c.isdigit() for c in text) and not any(w in NUMBER_WORDS for w in re.findall(r"[a-z]+", text))


def attributes(text: str) -> dict[str, str] | None:
    """The CLEVR attributes ``text`` names (``{"size": "large", "shape": "cube"}``); None if it names one twice
    with different values or holds a word that is neither a value nor filler."""
    found: dict[str, str] = {}
    for word in re.findall(r"[a-z0-9']+", normalize(text)):
        word = SYNONYMS.get(word, word)
        if word in ATTRIBUTE_OF:
            if found.setdefault(ATTRIBUTE_OF[word], word) != word:
                return None
        elif word not in _FILLER:
            return None
    return found


def canonical(answer: str, question: Question | None = None) -> str:
    """The form two ``text`` answers are compared in: normalised, a plain number written one way, a choice's letter
    replaced by the choice."""
    text = normalize(answer)
    if question is not None and question.choices:
        text = _choice(text, question.choices)
    m = _NUMBER.fullmatch(text)
    return repr(number(text)) if m is not None and not m.group(3) else text


def _choice(text: str, choices: tuple[str, ...]) -> str:
    m = _LETTER.fullmatch(text)
    if m is None:
        return text
    k = ord(m.group(1)) - ord("a")
    rest = m.group(2) or m.group(3)
    if not 0 <= k < len(choices):
        return text
    if rest and normalize(rest) != normalize(choices[k]):
        return text  # "B. cat" where B is "dog": not an answer for B
    return normalize(choices[k])


def matches(body: str, question: Question) -> bool:
    """Whether a box's body answers ``question`` (see the module's docstring)."""
    if question.match == "number":
        value = number(body)
        return value is not None and abs(value - float(question.answer)) <= question.tolerance + 1e-9
    if question.match == "attributes":
        given, expected = attributes(body), attributes(question.answer)
        return given is not None and bool(expected) and all(given.get(k) == v for k, v in expected.items())
    return canonical(body, question) == canonical(question.answer, question)


def score(answer_text: str, question: Question) -> tuple[bool, bool]:
    """``(correct, parsed)`` of a whole response: parsed when its last ``\\boxed{}`` is closed and not empty."""
    body = last_box(answer_text) if isinstance(answer_text, str) else None
    if body is None or not normalize(body):
        return False, False
    return matches(body, question), True
