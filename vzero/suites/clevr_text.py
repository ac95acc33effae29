"""CLEVR's language for the CLEVR-style suites: attribute filters, the phrases that name them, and unique references.

A *filter* is a dict of attribute values, ``{"size": "large", "shape": "cube"}``; it names the objects that have all
of them. Phrases put the attributes in CLEVR's order (size, color, material, shape) and say ``object`` where no shape
is named: ``large red metal cubes``, ``small rubber objects``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from vzero.data.pairs.clevr import MATERIALS, SHAPES, SIZES
from vzero.data.pairs.clevr_render import COLORS

ATTRIBUTES = ("size", "color", "material", "shape")
"""CLEVR's attributes, in the order its phrases use."""
VALUES: dict[str, tuple[str, ...]] = {"size": SIZES, "color": tuple(COLORS), "material": MATERIALS, "shape": SHAPES}

Filter = dict[str, str]


def phrase(f: Filter, plural: bool = False) -> str:
    """``large red metal cube`` (``cubes`` when plural); ``object(s)`` when ``f`` names no shape."""
    noun = f.get("shape", "object") + ("s" if plural else "")
    return " ".join([*(f[a] for a in ATTRIBUTES[:-1] if a in f), noun])


def describe(obj: dict[str, Any], attrs: Sequence[str] = ATTRIBUTES) -> str:
    """An object's values of ``attrs``, in CLEVR's order and without article: ``large red metal cube``."""
    return " ".join(obj[a] for a in ATTRIBUTES if a in attrs)


def count(objects: Sequence[dict[str, Any]], f: Filter) -> int:
    """How many of ``objects`` have every value ``f`` names."""
    return sum(all(o[a] == v for a, v in f.items()) for o in objects)


def all_filters(min_attrs: int, max_attrs: int) -> list[Filter]:
    """Every filter naming between ``min_attrs`` and ``max_attrs`` attributes, in a fixed order."""
    out = []
    for k in range(min_attrs, max_attrs + 1):
        for attrs in itertools.combinations(ATTRIBUTES, k):
            out += [dict(zip(attrs, values)) for values in itertools.product(*(VALUES[a] for a in attrs))]
    return out


def unique_reference(
    rng: np.random.Generator, objects: Sequence[dict[str, Any]], k: int, exclude: Sequence[str] = ()
) -> Filter | None:
    """A shortest filter over the attributes not in ``exclude`` that names object ``k`` and no other; None if there
    is none. Among several shortest ones, ``rng`` picks."""
    usable = [a for a in ATTRIBUTES if a not in exclude]
    for size in range(1, len(usable) + 1):
        unique = [
            {a: objects[k][a] for a in attrs}
            for attrs in itertools.combinations(usable, size)
            if count(objects, {a: objects[k][a] for a in attrs}) == 1
        ]
        if unique:
            return unique[int(rng.integers(len(unique)))]
    return None
