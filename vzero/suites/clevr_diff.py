"""``clevr-diff``: what changed between the two pictures of a game's CLEVR-style pair, asked directly.

Each question shows a pair of ``ClevrPairs``, original first: the same scene, with some objects given a different color
and shape in the second picture (the pair's ``meta["changes"]``). This is the spy's own skill, asked as a question.

Kinds (``answer`` in brackets):

- ``how_many``: "How many objects changed?" [1, 2 or 3]
- ``which``: "Exactly one object changed. What was it in the first picture?" [``large red metal cube``: all four
  attributes must be right], asked only when the changed object's description is unique in the first picture.
- ``became``: "What did the large red object in the first picture become?" [``blue sphere``: its new color and
  shape], naming the object by a shortest description unique in the first picture.

Pictures come from ``ClevrPairs(..., seed, n_changes=k).held_out(...)`` with ``k`` cycling through 1, 2, 3, so
``how_many`` is balanced by construction; picture ``p`` is pair ``p`` of its stream, so no scene repeats. The game
itself always changes two objects; asking only about pairs with two changes would make ``how_many`` answer itself.
``became`` picks the changed object whose new color and shape were asked least so far.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from vzero.data.pairs.clevr import ClevrPairs
from vzero.suites.base import Suite, balanced_choice
from vzero.suites.clevr_text import ATTRIBUTES, count, describe, phrase, unique_reference
from vzero.suites.question import Question

KINDS = ("how_many", "which", "became")
CHANGES = (1, 2, 3)
SETTING = (
    "The two pictures show the same scene, except that some objects have a different color and shape in the second "
    "picture."
)


def clevr_diff(n: int = 500, seed: int = 0, size: tuple[int, int] = (240, 160)) -> Suite:
    """``n`` questions on held-out CLEVR-style pairs; the same arguments give the same suite.

    Args:
        n: Number of questions.
        seed: The training pairs' seed; pairs come from its held-out streams, questions from ``seed`` too.
        size: Picture size ``(width, height)``.
    """
    pictures = n + 8  # every picture asks how_many at least
    sources = {k: ClevrPairs(pictures, seed, size, n_changes=k).held_out(pictures) for k in CHANGES}
    rng = np.random.default_rng([seed, 23, 2])
    became: Counter = Counter()
    questions: list[Question] = []
    for p in range(pictures):
        k = CHANGES[p % len(CHANGES)]
        pair = sources[k][p]
        objects = pair.meta["scene"]["objects"]
        changes = pair.meta["changes"]
        meta = {"pair": pair.meta, "picture": p}
        images = (pair.original, pair.modified)

        text = f"{SETTING} How many objects changed? Answer with a number inside \\boxed{{}}."
        new = [Question(images, text, str(k), "how_many", None, "number", 0.0, 1 / len(CHANGES), meta)]

        changed = objects[changes[0]["index"]]
        if k == 1 and count(objects, {a: changed[a] for a in ATTRIBUTES}) == 1:
            text = (
                f"{SETTING} Exactly one object changed. What was it in the first picture? Give its size, color, "
                "material and shape inside \\boxed{}."
            )
            chance = 1 / len(objects)
            new.append(Question(images, text, describe(changed), "which", None, "attributes", 0.0, chance, meta))

        options: dict[str, list] = {}
        for change in changes:
            ref = unique_reference(rng, objects, change["index"])
            if ref is not None:
                options.setdefault(f"{change['to']['color']} {change['to']['shape']}", []).append(ref)
        if options:
            answer, ref = balanced_choice(rng, became, options)
            text = (
                f"{SETTING} What did the {phrase(ref)} in the first picture become in the second? Give its new color "
                "and shape inside \\boxed{}."
            )
            # A guess among the 7 other colors and 2 other shapes.
            new.append(Question(images, text, answer, "became", None, "attributes", 0.0, 1 / 14, {**meta, "ref": ref}))

        for question in new:
            questions.append(question)
            if len(questions) == n:
                return Suite("clevr-diff", questions)
    raise RuntimeError(f"clevr-diff: {pictures} pictures gave only {len(questions)} of {n} questions")
