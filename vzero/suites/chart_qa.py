"""``chart-qa``: numeric questions about one chart, in the style of ChartQA's, answered from the chart's own table.

Kinds (``answer`` in brackets):

- ``value`` (bar and line charts): "What is the value of Store A for Q3?" [``412``]
- ``share`` (pie charts): "What percentage of the total is Lima?" [``23``]
- ``largest``, ``smallest``: "Which month has the largest value of Actual?" [a category], asked only where the extreme
  stands out by at least 5% of the chart's peak.
- ``compare``: "Is the value for Mar greater than the value for May?" [yes / no], asked only of two values at least
  10% of the peak apart; ``greater`` and ``less`` are both used, and yes / no balanced within each.

The pictures are the originals of ``ChartPairs(..., seed).held_out(...)`` (the win-rate evaluation's held-out stream),
six questions per chart: a value or share and a comparison twice each (about different values), the largest and the
smallest once. Category answers and yes / no are balanced greedily (:func:`vzero.suites.base.balanced_choice`).

Numbers follow ChartQA's relaxed accuracy: a number within 5% of the answer is right. Where a chart prints values they
are rounded to the table's precision (0 or 1 decimal, pie percentages to whole numbers), so the tolerance is never
below half that unit. The 5% stays where ChartQA would have it, because whether a chart prints its values is a style
choice of :class:`~vzero.data.pairs.ChartPairs` that its ``meta`` does not record: an unprinted value can only be read
off the axis. Departures from ChartQA: template questions on synthetic charts, and none of its compositional
questions (sums, differences, averages over several values).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from typing import Any

import numpy as np

from vzero.data.pairs.base import ImagePair
from vzero.data.pairs.chart import ChartPairs
from vzero.suites.base import Suite, balanced_choice
from vzero.suites.question import Question

KINDS = ("value", "share", "largest", "smallest", "compare")
RELAXED = 0.05
"""ChartQA's relative tolerance for numeric answers."""
EXTREME_GAP, COMPARE_GAP = 0.05, 0.10
"""How far (as a share of the chart's peak) an extreme must stand out, and two compared values lie apart."""
NUMBER = "Answer with a number inside \\boxed{}."
YES_NO = "Answer yes or no inside \\boxed{}."
NAME = "Answer with its label inside \\boxed{}."


def chart_qa(n: int = 500, seed: int = 0, size: tuple[int, int] = (240, 160)) -> Suite:
    """``n`` questions on held-out charts; the same arguments give the same suite.

    Args:
        n: Number of questions.
        seed: The training pairs' seed; charts come from its held-out stream, questions from ``seed`` too.
        size: Picture size ``(width, height)``, each side at least 96.
    """
    source = ChartPairs(n + 8, seed, size).held_out(n + 8)  # every chart asks for a value or a share
    rng = np.random.default_rng([seed, 23, 3])
    counts: dict[str, Counter] = {kind: Counter() for kind in KINDS}
    questions: list[Question] = []
    for p in range(len(source)):
        pair = source[p]
        number = "share" if pair.meta["chart"] == "pie" else "value"
        used: set = set()  # what this chart was already asked
        for kind in (number, "largest", "smallest", "compare", number, "compare"):
            question = _ask(kind, pair, p, rng, counts[kind], used)
            if question is not None:
                questions.append(question)
                if len(questions) == n:
                    return Suite("chart-qa", questions)
    raise RuntimeError(f"chart-qa: {len(source)} charts gave only {len(questions)} of {n} questions")


def decimals(table: dict[str, Any]) -> int:
    """The table's precision: 0 where every value is an int (how ChartPairs rounds them), else 1."""
    return 0 if all(isinstance(v, int) for values in table["series"].values() for v in values) else 1


def tolerance(value: float, unit: float) -> float:
    """Within ChartQA's 5%, and never below half the printed unit."""
    return max(RELAXED * abs(value), unit / 2)


def _ask(kind: str, pair: ImagePair, p: int, rng: np.random.Generator, counts: Counter, used: set) -> Question | None:
    """One question of ``kind`` about ``pair``'s chart, not about what ``used`` holds (which it then adds to)."""
    table, chart = pair.meta["table"], pair.meta["chart"]
    categories, series = table["categories"], table["series"]
    m = re.search(r"\bby (\w+)$", table["title"])
    dim = m.group(1) if m else "category"
    of = {name: (f" of {name}" if len(series) > 1 else "") for name in series}
    meta: dict[str, Any] = {"pair": pair.meta, "picture": p}
    images = (pair.original,)

    if kind == "value":
        name, j = _fresh(rng, [(name, j) for name in series for j in range(len(categories))], used)
        d = decimals(table)
        value, tol = series[name][j], tolerance(series[name][j], 10.0**-d)
        text = f"What is the value{of[name]} for {categories[j]}? {NUMBER}"
        everything = [v for values in series.values() for v in values]
        chance = float(np.mean([abs(v - value) <= tol for v in everything]))
        return Question(images, text, f"{value:.{d}f}", kind, None, "number", tol, chance, meta)

    if kind == "share":
        values = next(iter(series.values()))
        shares = [100 * v / sum(values) for v in values]
        _, j = _fresh(rng, [("share", j) for j in range(len(categories))], used)
        answer = f"{shares[j]:.0f}"
        tol = tolerance(float(answer), 1.0)
        chance = float(np.mean([abs(s - float(answer)) <= tol for s in shares]))
        text = f"What percentage of the total is {categories[j]}? {NUMBER}"
        return Question(images, text, answer, kind, None, "number", tol, chance, meta)

    peak = max(max(values) for values in series.values())
    options: dict[str, list] = {}
    if kind in ("largest", "smallest"):
        sign = 1 if kind == "largest" else -1
        for name, values in series.items():
            ranked = sorted(range(len(values)), key=lambda i: sign * values[i], reverse=True)
            if abs(values[ranked[0]] - values[ranked[1]]) >= EXTREME_GAP * peak:
                options.setdefault(categories[ranked[0]], []).append(name)
        if not options:
            return None
        answer, name = balanced_choice(rng, counts, options)
        what = "share" if chart == "pie" else f"value{of[name]}"
        text = f"Which {dim} has the {kind} {what}? {NAME}"
        return Question(images, text, answer, kind, None, "text", 0.0, 1 / len(categories), meta)

    for name, values in series.items():
        for a, b in itertools.permutations(range(len(values)), 2):
            if abs(values[a] - values[b]) >= COMPARE_GAP * peak and (name, min(a, b), max(a, b)) not in used:
                for word in ("greater", "less"):
                    truth = values[a] > values[b] if word == "greater" else values[a] < values[b]
                    options.setdefault(f"{'yes' if truth else 'no'}|{word}", []).append((name, a, b, word))
    if not options:
        return None
    key, (name, a, b, word) = balanced_choice(rng, counts, options)  # yes / no balanced within each wording
    answer = key.partition("|")[0]
    used.add((name, min(a, b), max(a, b)))
    if chart == "pie":
        text = f"Is the share of {categories[a]} {word} than the share of {categories[b]}?"
    elif len(series) > 1:
        text = f"Is the value of {name} for {categories[a]} {word} than for {categories[b]}?"
    else:
        text = f"Is the value for {categories[a]} {word} than the value for {categories[b]}?"
    return Question(images, f"{text} {YES_NO}", answer, kind, None, "text", 0.0, 0.5, meta)


def _fresh(rng: np.random.Generator, keys: list[tuple[str, int]], used: set) -> tuple[str, int]:
    """A random one of ``keys`` not yet in ``used`` (any one if all are), now added to it."""
    fresh = [key for key in keys if key not in used] or keys
    key = fresh[int(rng.integers(len(fresh)))]
    used.add(key)
    return key
