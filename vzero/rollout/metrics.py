"""What a rollout batch says about the game, as ``name -> (value, weight)`` for weighted, cross-rank means."""

from __future__ import annotations

from vzero.rollout.batch import TrainBatch

ROLLOUT_KEYS = (
    "decision/acc",
    "decision/na_rate",
    "decision/invalid_rate",
    "clue/invalid_rate",
    "reward/spy",
    "reward/civilian",
    "reward/decision",
    "len/clue",
    "len/decision",
    "len/truncated_frac",
    "perf/gen_tokens_per_s",
)


def _mean(values: list[float]) -> tuple[float, float]:
    return (sum(values) / len(values), float(len(values))) if values else (0.0, 0.0)


def rollout_metrics(batch: TrainBatch) -> dict[str, tuple[float, float]]:
    """Decision accuracy and N/A rate (the stage rule's inputs), invalid rates, rewards, baselines-free lengths."""
    votes, spies, clues, spy_r, civ_r, dec_r = [], [], [], [], [], []
    for t in batch.transcripts:
        votes.extend(t.votes)
        spies.extend([t.spy] * len(t.votes))
        clues.extend(c for rnd in t.clues for c in rnd)
        spy_r.append(t.clue_rewards[t.spy])
        civ_r.extend(r for p, r in enumerate(t.clue_rewards) if p != t.spy)
        dec_r.extend(t.decision_rewards)
    lengths = {"clue": [], "decision": []}
    for s in batch.samples:
        lengths[s.turn.stage].append(float(len(s.completion_ids)))
    gen_tokens = sum(len(s.completion_ids) for s in batch.samples)
    rollout_s = batch.timings.get("rollout", 0.0)
    return {
        "decision/acc": _mean([float(v == s) for v, s in zip(votes, spies)]),
        "decision/na_rate": _mean([float(v == "n/a") for v in votes]),
        "decision/invalid_rate": _mean([float(v == "invalid") for v in votes]),
        "clue/invalid_rate": _mean([float(c is None) for c in clues]),
        "reward/spy": _mean(spy_r),
        "reward/civilian": _mean(civ_r),
        "reward/decision": _mean(dec_r),
        "len/clue": _mean(lengths["clue"]),
        "len/decision": _mean(lengths["decision"]),
        "len/truncated_frac": _mean([float(s.truncated) for s in batch.samples]),
        "perf/gen_tokens_per_s": (gen_tokens / rollout_s if rollout_s else 0.0, 1.0),
    }
