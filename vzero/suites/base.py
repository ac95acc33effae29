"""The suite type every suite shares, and the baselines a suite's accuracy is read against.

A :class:`Suite` is a read-only sequence of :class:`~vzero.suites.question.Question`. Generated suites hold their
pictures; a suite read from files decodes each question's pictures when it is indexed (every file was already checked
when it was loaded).

Two baselines come with every suite, per question kind:

- :meth:`Suite.chance`: the accuracy of a uniform guess over the answers a question could have (its ``chance``, set by
  its generator or ``1 / len(choices)``; for an open question without one, one over the number of distinct answers
  its kind has in the suite).
- :meth:`Suite.blind`: the accuracy of the best *constant* answer, the one answer that, given to every question of the
  kind without looking at the pictures, scores highest (as scored, so within a chart's tolerance). A suite is balanced
  when this stays far below 100%.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from vzero.suites.question import Question, SuiteError
from vzero.suites.score import canonical, score


@dataclass(frozen=True)
class Tally:
    """Counts of one kind of question (or of all of them) over a run."""

    total: int
    correct: int
    unparsed: int
    """Answers without a usable ``\\boxed{}``: wrong, and counted here too."""

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")


class Suite(Sequence[Question]):
    """A named, read-only sequence of questions.

    Args:
        name: The suite's name, used in metric keys (``clevr-qa``, or a file's stem).
        questions: The questions; where ``images`` is given their own ``images`` may be empty.
        images: ``images(i)`` returns question ``i``'s pictures, for suites that decode them on access.
        skipped: ``(line, reason)`` of every input row left out at load time.
    """

    def __init__(
        self,
        name: str,
        questions: Sequence[Question],
        images: Callable[[int], tuple[Image.Image, ...]] | None = None,
        skipped: Iterable[tuple[int, str]] = (),
    ) -> None:
        if not isinstance(name, str) or not name:
            raise SuiteError(f"a suite needs a non-empty name, got {name!r}")
        if not questions:
            raise SuiteError(f"suite {name!r} has no questions")
        self.name = name
        self._questions = list(questions)
        self._images = images
        self.skipped: list[tuple[int, str]] = list(skipped)
        """``(line, reason)`` for every row left out (a file suite loaded with ``on_error="skip"``)."""

    def __len__(self) -> int:
        return len(self._questions)

    def __getitem__(self, index: int) -> Question:  # type: ignore[override]
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"suite indices must be int, not {type(index).__name__}")
        question = self._questions[index]
        if self._images is not None:
            question = replace(question, images=self._images(range(len(self))[index]))
        return question

    def __repr__(self) -> str:
        return f"Suite({self.name!r}, {len(self)} questions, kinds={list(self.kinds)})"

    @property
    def kinds(self) -> tuple[str, ...]:
        """The question kinds, in order of first appearance."""
        return tuple(dict.fromkeys(q.kind for q in self._questions))

    def answers(self) -> list[tuple[str, str]]:
        """``(kind, answer)`` of every question, without decoding any picture."""
        return [(q.kind, q.answer) for q in self._questions]

    def score(self, answer_text: str, question: Question) -> tuple[bool, bool]:
        """``(correct, parsed)`` of a model's whole response to ``question`` (see :mod:`vzero.suites.score`)."""
        return score(answer_text, question)

    def tally(self, responses: Sequence[str]) -> dict[str, Tally]:
        """Per kind, and under ``"all"``, how many of ``responses`` (one per question, in order) are right."""
        if len(responses) != len(self):
            raise SuiteError(f"suite {self.name!r}: {len(responses)} responses for {len(self)} questions")
        counts: dict[str, list[int]] = {kind: [0, 0, 0] for kind in ("all", *self.kinds)}
        for text, question in zip(responses, self._questions):
            correct, parsed = self.score(text, question)
            for key in ("all", question.kind):
                counts[key][0] += 1
                counts[key][1] += correct
                counts[key][2] += not parsed
        return {kind: Tally(*c) for kind, c in counts.items()}

    def chance(self) -> dict[str, float]:
        """Per kind, the mean accuracy of a uniform guess (see the module's docstring)."""
        out = {}
        for kind, questions in self._by_kind().items():
            distinct = len({_key(q) for q in questions})
            out[kind] = float(np.mean([1 / distinct if q.chance is None else q.chance for q in questions]))
        return out

    def blind(self) -> dict[str, tuple[str, float]]:
        """Per kind, the best constant answer and its accuracy (see the module's docstring)."""
        out = {}
        for kind, questions in self._by_kind().items():
            if all(q.match == "text" and not q.choices for q in questions):
                # Equal keys score equal: count them rather than scoring every candidate against every question.
                key, hits = Counter(_key(q) for q in questions).most_common(1)[0]
                best = (next(q.answer for q in questions if _key(q) == key), hits)
            else:
                candidates = dict.fromkeys(q.answer for q in questions)
                # A multiple-choice question can also be answered blind by always naming the same letter.
                width = max(len(q.choices or ()) for q in questions)
                candidates.update(dict.fromkeys(chr(ord("A") + k) for k in range(width)))
                hits_of = {c: sum(score(f"\\boxed{{{c}}}", q)[0] for q in questions) for c in candidates}
                best = max(hits_of.items(), key=lambda item: item[1])
            out[kind] = (best[0], best[1] / len(questions))
        return out

    def _by_kind(self) -> dict[str, list[Question]]:
        groups: dict[str, list[Question]] = {}
        for q in self._questions:
            groups.setdefault(q.kind, []).append(q)
        return groups


def _key(question: Question) -> str:
    return canonical(question.answer, question)


def balanced_choice(rng: np.random.Generator, counts: Counter, options: Mapping[str, Sequence[Any]]) -> tuple[str, Any]:
    """The answer used least so far among those ``options`` can give (ties broken by ``rng``), and one of its options.

    Generators call this once per question with every answer the picture allows, so each kind's answers stay as even
    as the pictures permit: CLEVR's answer balancing, done greedily instead of by rejection.
    """
    answers = [a for a in options if options[a]]
    order = rng.permutation(len(answers))
    answer = min((answers[i] for i in order), key=lambda a: counts[a])
    counts[answer] += 1
    candidates = options[answer]
    return answer, candidates[int(rng.integers(len(candidates)))]
