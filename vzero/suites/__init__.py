"""Question suites with exact answers, to measure what the game transfers to (plain Python, no torch).

Three suites are generated from the pair sources' own metadata, on pictures held out from training:

- ``clevr-qa`` (:mod:`vzero.suites.clevr_qa`): CLEVR's question families about one scene.
- ``clevr-diff`` (:mod:`vzero.suites.clevr_diff`): what changed between a game's two pictures.
- ``chart-qa`` (:mod:`vzero.suites.chart_qa`): ChartQA-style numeric questions about one chart.

A user's own suite is a JSONL file (:mod:`vzero.suites.jsonl`). Every question asks for its answer inside
``\\boxed{}``; :meth:`Suite.score` reads and compares it (:mod:`vzero.suites.score`), and :meth:`Suite.chance` and
:meth:`Suite.blind` give the two baselines its accuracy is read against.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vzero.data.pairs.base import OnError, is_int
from vzero.suites.base import Suite, Tally
from vzero.suites.chart_qa import chart_qa
from vzero.suites.clevr_diff import clevr_diff
from vzero.suites.clevr_qa import clevr_qa
from vzero.suites.jsonl import load_jsonl
from vzero.suites.question import Question, SuiteError
from vzero.suites.score import score

SUITES: dict[str, Callable[..., Suite]] = {"clevr-qa": clevr_qa, "clevr-diff": clevr_diff, "chart-qa": chart_qa}
"""The generated suites by name: each ``(n, seed, size) -> Suite``."""


def make_suite(name: str, n: int = 500, seed: int = 0, size: tuple[int, int] = (240, 160)) -> Suite:
    """A generated suite; the same arguments always give the same questions, pictures and answers.

    Args:
        name: One of :data:`SUITES`.
        n: Number of questions.
        seed: The training pairs' seed: pictures come from its held-out stream (``seed + HELD_OUT_SEED``, as the
            win-rate evaluation's do), never from training pictures.
        size: Picture size ``(width, height)``.
    """
    if name not in SUITES:
        raise SuiteError(f"unknown suite {name!r}; choose from {sorted(SUITES)} or give a .jsonl file")
    if not is_int(n) or n < 1:
        raise SuiteError(f"n must be a positive int, got {n!r}")
    if not is_int(seed) or seed < 0:
        raise SuiteError(f"seed must be a non-negative int, got {seed!r}")
    if not isinstance(size, (tuple, list)) or len(size) != 2 or not all(is_int(s) for s in size):
        raise SuiteError(f"size must be (width, height), two ints, got {size!r}")
    try:
        return SUITES[name](int(n), int(seed), (int(size[0]), int(size[1])))
    except ValueError as e:  # the pair source's own argument checks (e.g. a chart side under 96)
        raise SuiteError(f"suite {name!r}: {e}") from e


def load_suite(
    spec: str | Path,
    n: int = 500,
    seed: int = 0,
    size: tuple[int, int] = (240, 160),
    on_error: OnError = "raise",
) -> Suite:
    """A suite by name (generated with ``n``, ``seed``, ``size``) or from a JSONL file (read with ``on_error``)."""
    if isinstance(spec, str) and spec in SUITES:
        return make_suite(spec, n, seed, size)
    if isinstance(spec, (str, Path)) and (Path(spec).suffix.lower() == ".jsonl" or Path(spec).exists()):
        return load_jsonl(spec, on_error)
    raise SuiteError(f"{spec!r} is neither a suite name ({', '.join(sorted(SUITES))}) nor a .jsonl file")


__all__ = [
    "SUITES",
    "Question",
    "Suite",
    "SuiteError",
    "Tally",
    "load_jsonl",
    "load_suite",
    "make_suite",
    "score",
]
