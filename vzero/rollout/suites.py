"""A policy answers a question suite (:mod:`vzero.suites`): greedy by default, batched, sharded over ranks, counted.

Every question is one row of the same batched decoder the game uses (:meth:`Policy.generate`), in the trained
weights, in eval mode. Rank ``r`` of ``w`` answers questions ``r, r + w, ...``; a rank with fewer than the others
pads its share with repeats of one of its questions (a rank without any repeats question 0), whose answers are not
counted, so every rank makes the same ``generate`` calls with the same batch sizes, which FSDP's collectives need.
The counts (total, correct, unparsed; overall and per kind) are then summed over ranks before any rate is taken
(:func:`suite_metrics`).

Model output is untrusted: a response without a usable ``\\boxed{}`` is wrong and counted as unparsed
(:func:`vzero.suites.score.score`).

A :class:`~vzero.model.Policy` prompt holds one picture. A question with several pictures (``clevr-diff`` shows two) is
shown them side by side in one picture, left to right in the order its text names them, ``GAP`` pixels of white
between them, and its text starts with one sentence that says so (:func:`side_by_side`, :func:`question_text`).
Models that take several pictures per prompt would see them apart; a model's score on such a suite here is its score
on that combined layout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from vzero.model.policy import Policy
from vzero.model.sampling import SamplingConfig
from vzero.rollout.match import wilson
from vzero.suites import SUITES, Question, Suite, Tally

GAP = 8
"""Pixels of white between pictures shown side by side."""
COUNT_FIELDS = ("total", "correct", "unparsed")


@dataclass(frozen=True)
class SuiteSpec:
    """One suite an evaluation answers."""

    name: str
    """A generated suite (``clevr-qa``, ``clevr-diff``, ``chart-qa``) or a ``.jsonl`` file of questions."""
    questions: int = 100
    """How many questions a generated suite has (a file suite answers all of its own)."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a suite needs a non-empty name, got {self.name!r}")
        if isinstance(self.questions, bool) or not isinstance(self.questions, int) or self.questions < 1:
            raise ValueError(f"suite {self.name!r}: questions must be an int >= 1, got {self.questions!r}")
        if self.name not in SUITES and Path(self.name).suffix.lower() != ".jsonl" and not Path(self.name).exists():
            raise ValueError(f"{self.name!r} is neither a suite name ({', '.join(SUITES)}) nor a .jsonl file")

    @classmethod
    def parse(cls, value: str | dict | SuiteSpec, key: str = "eval.suites") -> SuiteSpec:
        """A spec from ``"clevr-qa"``, ``"clevr-qa:100"``, ``{"name": "clevr-qa", "questions": 100}`` or a spec;
        a bad value is a :class:`ValueError` naming ``key``."""
        try:
            if isinstance(value, SuiteSpec):
                return value
            if isinstance(value, str):
                name, colon, tail = value.strip().rpartition(":")
                if colon and not value.strip().lower().endswith(".jsonl"):
                    if not tail.strip().lstrip("+-").isdigit():
                        raise ValueError(f"{value!r}: after ':' comes the number of questions")
                    return cls(name.strip(), int(tail))
                return cls(value.strip())
            if isinstance(value, dict):
                unknown = set(value) - {"name", "questions"}
                if unknown:
                    raise ValueError(f"unknown field(s) {sorted(unknown)}; a suite has name and questions")
                if "name" not in value:
                    raise ValueError(f"{value!r} has no name")
                return cls(**value)
            raise ValueError(f"{value!r} is neither a name, 'name:questions', nor {{name, questions}}")
        except (TypeError, ValueError) as error:
            raise ValueError(f"{key}: {error}") from None


def parse_suites(values: Sequence[str | dict | SuiteSpec] | str | None, key: str = "eval.suites") -> list[SuiteSpec]:
    """Specs from a list of them (or one comma-separated string); names must not repeat (they key the metrics)."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{key} must be a list of suites, got {values!r}")
    specs = [SuiteSpec.parse(v, key) for v in values]
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{key}: {repeated} given more than once")
    return specs


def plan(n: int, world: int = 1, rank: int = 0, chunk: int = 16) -> tuple[list[list[int]], int]:
    """This rank's ``generate`` calls as question indices, and how many of them (the first ones) are counted.

    Every rank's share is padded to ``ceil(n / world)`` questions and cut into calls of ``chunk`` (the last call
    shorter), so every rank makes calls of the same sizes.
    """
    if world < 1 or not 0 <= rank < world or chunk < 1 or n < 1:
        raise ValueError(f"bad plan: n={n}, world={world}, rank={rank}, chunk={chunk}")
    share = math.ceil(n / world)
    mine = list(range(rank, n, world))
    counted = len(mine)
    mine += [mine[0] if mine else 0] * (share - counted)
    return [mine[lo : lo + chunk] for lo in range(0, share, chunk)], counted


def side_by_side(images: Sequence[Image.Image], gap: int = GAP) -> Image.Image:
    """The pictures left to right on a white canvas as tall as the tallest, ``gap`` pixels apart, top-aligned."""
    if len(images) == 1:
        return images[0]
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, max(im.height for im in images)), (255, 255, 255))
    x = 0
    for im in images:
        canvas.paste(im.convert("RGB"), (x, 0))
        x += im.width + gap
    return canvas


def question_text(question: Question) -> str:
    """The text a model is shown: the question's own, after one sentence on the layout when it has several pictures."""
    k = len(question.images)
    if k < 2:
        return question.text
    where = "the first on the left, the second on the right" if k == 2 else "in order from left to right"
    return f"This image shows {k} pictures side by side, separated by a white band: {where}. {question.text}"


def messages(question: Question) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question_text(question)}]}]


def _tally(suite: Suite, questions: Sequence[Question], responses: Sequence[str]) -> dict[str, Tally]:
    counts = {kind: [0, 0, 0] for kind in ("all", *suite.kinds)}
    for question, text in zip(questions, responses):
        correct, parsed = suite.score(text, question)
        for key in ("all", question.kind):
            counts[key][0] += 1
            counts[key][1] += correct
            counts[key][2] += not parsed
    return {kind: Tally(*c) for kind, c in counts.items()}


@torch.no_grad()
def answer_suite(
    policy: Policy,
    suite: Suite,
    world: int = 1,
    rank: int = 0,
    chunk: int = 16,
    sampling: SamplingConfig = SamplingConfig(temperature=0.0, max_new_tokens=128),
    responses: list | None = None,
) -> dict[str, Tally]:
    """This rank's share of ``suite`` answered by ``policy``: per kind and under ``"all"``, its counts.

    Args:
        chunk: the most questions per ``generate`` call.
        sampling: greedy (temperature 0) by default; with a temperature, row ``i`` is keyed by ``i``.
        responses: when given, ``(index, text)`` of every counted answer is appended to it.
    """
    calls, counted = plan(len(suite), world, rank, chunk)
    answered: list[int] = []
    asked: list[Question] = []
    texts: list[str] = []
    with policy.frozen():
        for indices in calls:
            unique = list(dict.fromkeys(indices))
            questions = {i: suite[i] for i in unique}
            encoded = policy.inputs.pictures([side_by_side(questions[i].images) for i in unique])
            picture = dict(zip(unique, encoded))
            prompts = [policy.inputs.prompt_ids(messages(questions[i]), picture[i]) for i in indices]
            completions = policy.generate(prompts, [picture[i] for i in indices], sampling, keys=list(indices))
            for i, completion in zip(indices, completions):
                if len(answered) < counted:
                    answered.append(i)
                    asked.append(questions[i])
                    texts.append(policy.inputs.text(completion.ids))
    if responses is not None:
        responses.extend(zip(answered, texts))
    return _tally(suite, asked, texts)


def response_rows(suite: Suite, responses: Sequence[tuple[int, str]]) -> list[dict]:
    """One row per ``(index, text)`` answer: the question's pictures (``images``), the text the model was shown, the
    reference answer, the response, and whether it was right and parsed."""
    rows = []
    for index, text in responses:
        question = suite[index]
        correct, parsed = suite.score(text, question)
        rows.append(
            {
                "suite": suite.name,
                "index": index,
                "kind": question.kind,
                "images": list(question.images),
                "question": question_text(question),
                "answer": question.answer,
                "response": text,
                "correct": correct,
                "parsed": parsed,
            }
        )
    return rows


def count_vector(tallies: dict[str, Tally], kinds: Sequence[str]) -> list[float]:
    """The counts as one flat list (``all`` then ``kinds``, each total, correct, unparsed), for summing over ranks."""
    zero = Tally(0, 0, 0)
    return [float(getattr(tallies.get(k, zero), f)) for k in ("all", *kinds) for f in COUNT_FIELDS]


def from_vector(values: Sequence[float], kinds: Sequence[str]) -> dict[str, Tally]:
    """The inverse of :func:`count_vector` (after a sum over ranks)."""
    keys = ("all", *kinds)
    if len(values) != len(keys) * len(COUNT_FIELDS):
        raise ValueError(f"{len(values)} counts for {len(keys)} kinds")
    step = len(COUNT_FIELDS)
    return {k: Tally(*(int(round(v)) for v in values[j * step : (j + 1) * step])) for j, k in enumerate(keys)}


def suite_metrics(name: str, tallies: dict[str, Tally], prefix: str = "eval") -> dict[str, float]:
    """``<prefix>/<name>/accuracy`` with its 95% Wilson interval (``_lo``, ``_hi``), ``unparseable`` (the share of
    answers without a usable box), ``questions``, and ``<prefix>/<name>/<kind>/accuracy`` per kind."""
    overall = tallies["all"]
    base = f"{prefix}/{name}"
    lo, hi = wilson(overall.correct, overall.total)
    out = {
        f"{base}/accuracy": overall.correct / overall.total if overall.total else 0.0,
        f"{base}/accuracy_lo": lo,
        f"{base}/accuracy_hi": hi,
        f"{base}/unparseable": overall.unparsed / overall.total if overall.total else 0.0,
        f"{base}/questions": float(overall.total),
    }
    for kind, tally in tallies.items():
        if kind != "all":
            out[f"{base}/{kind}/accuracy"] = tally.correct / tally.total if tally.total else 0.0
    return out
