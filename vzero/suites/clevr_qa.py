"""``clevr-qa``: questions about one CLEVR-style picture whose answers its scene fixes, in CLEVR's question families.

Kinds (``answer`` in brackets):

- ``count``: "How many large metal objects are there?" [a number, 0-6]
- ``exists``: "Is there a small red cylinder?" [yes / no]
- ``compare``: "Are there more cubes than rubber spheres?", also "fewer" and "the same number of" [yes / no]
- ``query_color``, ``query_shape``, ``query_material``, ``query_size``: "What color is the large rubber sphere?"
  [one value], asked only of an object that its other attributes name uniquely in the scene.

The pictures are the originals of ``ClevrPairs(..., seed).held_out(...)``: the stream the win-rate evaluation draws
from, never a training picture. Each picture gets three questions of successive kinds (each kind comes round every
seven pictures), and within a kind the answer is chosen first, least used so far, among those the picture allows
(:func:`vzero.suites.base.balanced_choice`), then a question with that answer. Yes and no are balanced within each
phrasing too (per number of attributes an ``exists`` question names; per ``more`` / ``fewer`` / ``same``).

Where this departs from CLEVR: filters name one to three attributes and no spatial relations (CLEVR's "left of",
"behind" families and its chained programs are left out); compared sets may not contain one another ("more red cubes
than red objects" answers itself); answers are balanced greedily rather than by CLEVR's rejection sampling; a query
answer may add other attributes ("red cube" answers "What color ...?").
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from vzero.data.pairs.base import ImagePair
from vzero.data.pairs.clevr import ClevrPairs
from vzero.suites.base import Suite, balanced_choice
from vzero.suites.clevr_text import VALUES, Filter, all_filters, count, phrase, unique_reference
from vzero.suites.question import Question

KINDS = ("count", "exists", "compare", "query_color", "query_shape", "query_material", "query_size")
PER_PICTURE = 3
NUMBER = "Answer with a number inside \\boxed{}."
YES_NO = "Answer yes or no inside \\boxed{}."
WORD = "Answer with one word inside \\boxed{}."
_FILTERS = all_filters(1, 3)
_SMALL_FILTERS = all_filters(1, 2)
_QUERY = {
    "color": "What color is the {}?",
    "shape": "What shape is the {}?",
    "material": "What material is the {} made of?",
    "size": "What size is the {}?",
}
_COMPARE = {
    "more": ("Are there more {} than {}?", lambda a, b: a > b),
    "fewer": ("Are there fewer {} than {}?", lambda a, b: a < b),
    "same": ("Are there the same number of {} and {}?", lambda a, b: a == b),
}


def clevr_qa(n: int = 500, seed: int = 0, size: tuple[int, int] = (240, 160)) -> Suite:
    """``n`` questions on held-out CLEVR-style pictures; the same arguments give the same suite.

    Args:
        n: Number of questions.
        seed: The training pairs' seed; pictures come from its held-out stream, questions from ``seed`` too.
        size: Picture size ``(width, height)``.
    """
    source = ClevrPairs(n, seed, size).held_out(2 * n + 8)  # far more pictures than n questions need
    rng = np.random.default_rng([seed, 23, 1])
    counts: dict[str, Counter] = {kind: Counter() for kind in KINDS}
    questions: list[Question] = []
    for p in range(len(source)):
        pair = source[p]
        objects = pair.meta["scene"]["objects"]
        for j in range(PER_PICTURE):
            kind = KINDS[(PER_PICTURE * p + j) % len(KINDS)]
            options = _options(kind, objects, rng)
            if not any(options.values()):
                continue
            key, (text, program) = balanced_choice(rng, counts[kind], options)
            answer = key.partition("|")[0]
            questions.append(_question(pair, p, kind, answer, text, program))
            if len(questions) == n:
                return Suite("clevr-qa", questions)
    raise RuntimeError(f"clevr-qa: {len(source)} pictures gave only {len(questions)} of {n} questions")


def _question(pair: ImagePair, p: int, kind: str, answer: str, text: str, program: dict[str, Any]) -> Question:
    n_objects = len(pair.meta["scene"]["objects"])
    if kind == "count":
        fmt, match, chance = NUMBER, "number", 1 / (n_objects + 1)
    elif kind in ("exists", "compare"):
        fmt, match, chance = YES_NO, "text", 0.5
    else:
        fmt, match, chance = WORD, "attributes", 1 / len(VALUES[kind.removeprefix("query_")])
    meta = {"pair": pair.meta, "picture": p, "program": program}
    return Question((pair.original,), f"{text} {fmt}", answer, kind, None, match, 0.0, chance, meta)


def _options(kind: str, objects: list[dict[str, Any]], rng: np.random.Generator) -> dict[str, list]:
    """Every answer the picture allows for ``kind``, each with its ``(text, program)`` candidates.

    The yes / no kinds key their answers by phrasing as well (``"no|3"``: no, with three attributes named;
    ``"yes|fewer"``), so that they are balanced within each phrasing and the wording does not give the answer away.
    """
    options: dict[str, list] = {}
    if kind == "count":
        for f in _FILTERS:
            text = f"How many {phrase(f, plural=True)} are there?"
            options.setdefault(str(count(objects, f)), []).append((text, {"filter": f}))
    elif kind == "exists":
        for f in _FILTERS:
            answer = "yes" if count(objects, f) else "no"
            options.setdefault(f"{answer}|{len(f)}", []).append((f"Is there a {phrase(f)}?", {"filter": f}))
    elif kind == "compare":
        for i, j in rng.integers(len(_SMALL_FILTERS), size=(200, 2)):
            fa, fb = _SMALL_FILTERS[i], _SMALL_FILTERS[j]
            a, b = count(objects, fa), count(objects, fb)
            if _contains(fa, fb) or _contains(fb, fa) or a + b == 0:
                continue
            for variant, (template, rule) in _COMPARE.items():
                text = template.format(phrase(fa, plural=True), phrase(fb, plural=True))
                program = {"variant": variant, "filters": [fa, fb]}
                options.setdefault(f"{'yes' if rule(a, b) else 'no'}|{variant}", []).append((text, program))
    else:
        attribute = kind.removeprefix("query_")
        for k, obj in enumerate(objects):
            ref = unique_reference(rng, objects, k, exclude=(attribute,))
            if ref is not None:
                text = _QUERY[attribute].format(phrase(ref))
                options.setdefault(obj[attribute], []).append((text, {"object": k, "filter": ref}))
    return options


def _contains(outer: Filter, inner: Filter) -> bool:
    """Whether every object ``inner`` names is also named by ``outer`` (``outer``'s values are among ``inner``'s)."""
    return all(inner.get(a) == v for a, v in outer.items())
