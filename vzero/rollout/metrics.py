"""What a rollout batch says about the game, as ``name -> (value, weight)`` for weighted, cross-rank means."""

from __future__ import annotations

from collections.abc import Sequence

from vzero.game import Stage, Transcript
from vzero.rollout.batch import TrainBatch

ROLLOUT_KEYS = (
    "decision/acc",
    "decision/na_rate",
    "decision/invalid_rate",
    "decision/self_rate",
    "clue/invalid_rate",
    "reward/spy",
    "reward/civilian",
    "reward/decision",
    "len/clue",
    "len/decision",
    "len/truncated_frac",
    "perf/gen_tokens_per_s",
    "perf/prompt_reuse",
)


def _mean(values: list[float]) -> tuple[float, float]:
    return (sum(values) / len(values), float(len(values))) if values else (0.0, 0.0)


def _ratio(part: int, whole: int) -> tuple[float, float]:
    return (part / whole, float(whole)) if whole else (0.0, 0.0)


def vote_counts(transcripts: Sequence[Transcript]) -> dict[str, int]:
    """Votes cast over ``transcripts``: all of them, those for the spy, N/A, invalid ones, and voters' own numbers."""
    counts = {"votes": 0, "correct": 0, "na": 0, "invalid": 0, "self": 0}
    for t in transcripts:
        voters = [turn.player for turn in t.turns if turn.stage == Stage.DECISION]
        counts["votes"] += len(t.votes)
        counts["correct"] += sum(v == t.spy for v in t.votes)
        counts["na"] += sum(v == "n/a" for v in t.votes)
        counts["invalid"] += sum(v == "invalid" for v in t.votes)
        counts["self"] += sum(v == voter for v, voter in zip(t.votes, voters))
    return counts


def rollout_metrics(batch: TrainBatch, votes: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Decision accuracy and N/A rate (the stage rule's inputs), invalid rates, rewards, baselines-free lengths.

    Args:
        votes: the batch's :func:`vote_counts`.
    """
    clues, spy_r, civ_r, dec_r = [], [], [], []
    for t in batch.rollout.transcripts:
        clues.extend(c for rnd in t.clues for c in rnd)
        spy_r.append(t.clue_rewards[t.spy])
        civ_r.extend(r for p, r in enumerate(t.clue_rewards) if p != t.spy)
        dec_r.extend(t.decision_rewards)
    lengths = {"clue": [], "decision": []}
    for s in batch.samples:
        lengths[s.turn.stage].append(float(len(s.completion_ids)))
    gen_tokens = sum(len(s.completion_ids) for s in batch.samples)
    rollout_s = batch.rollout.seconds
    return {
        "decision/acc": _ratio(votes["correct"], votes["votes"]),
        "decision/na_rate": _ratio(votes["na"], votes["votes"]),
        "decision/invalid_rate": _ratio(votes["invalid"], votes["votes"]),
        "decision/self_rate": _ratio(votes["self"], votes["votes"]),
        "clue/invalid_rate": _mean([float(c is None) for c in clues]),
        "reward/spy": _mean(spy_r),
        "reward/civilian": _mean(civ_r),
        "reward/decision": _mean(dec_r),
        "len/clue": _mean(lengths["clue"]),
        "len/decision": _mean(lengths["decision"]),
        "len/truncated_frac": _mean([float(s.truncated) for s in batch.samples]),
        "perf/gen_tokens_per_s": (gen_tokens / rollout_s if rollout_s else 0.0, 1.0),
        # The share of prompt tokens whose keys and values came from an earlier turn (vzero.model.prefix).
        "perf/prompt_reuse": _ratio(batch.rollout.reused_prompt_tokens, sum(len(s.prompt_ids) for s in batch.samples)),
    }
