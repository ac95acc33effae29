"""What ``tiny`` can do, measured by greedy play on held-out games: ``pretrain_report.json``.

Every skill comes with the level a model without it would reach: ``*_chance`` (a uniformly random answer) and, where
defined, ``*_blind`` (the best constant answer, chosen on these very turns: the most a model blind to the picture, or
to the clues, could score).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from vzero.game import Game, GameConfig, last_clues, parse_clue, parse_vote, play_games
from vzero.model.policy import Policy
from vzero.model.sampling import SamplingConfig
from vzero.tiny.targets import ATTRIBUTES, biggest_first, score_notes, verdicts

NOTES_TOKENS = 64
"""Room for the notes of five players and the vote."""


def game_name(config: GameConfig) -> str:
    return f"{config.n_civilians} civilians, {config.clue_rounds} rounds, {config.spy_view} spy"


def measure(model, processor, pairs, indices, others: Sequence[GameConfig]) -> dict:
    """The report: :func:`evaluate` on the default rules, and the vote and notes figures of each of ``others``
    under ``by_game``."""
    report = evaluate(Policy(model, processor), pairs, indices, GameConfig())
    keys = ("vote_format_valid", "vote_self", "vote_spy", "vote_spy_chance", "notes_copy", "notes_judge")
    report["by_game"] = {}
    for config in others:
        measured = evaluate(Policy(model, processor), pairs, indices, config)
        report["by_game"][game_name(config)] = {k: measured[k] for k in keys}
    return report


def remeasure(folder: Path, others: Sequence[GameConfig], size: tuple[int, int]) -> dict:
    """Measure the model in ``folder`` again on the held-out games its manifest's settings name (pictures of
    ``size``, as it was trained on), and rewrite its report (keeping the training figures) and its manifest; the
    weights are not touched."""
    from vzero.data.pairs.clevr import ClevrPairs
    from vzero.model import load_vlm
    from vzero.tiny.manifest import MANIFEST, write_manifest

    old = json.loads((folder / MANIFEST).read_text())
    settings = old["pretrain"]
    model, processor = load_vlm(str(folder), lora=None)
    n = settings["train_games"]
    pairs = ClevrPairs(n=n + settings["eval_games"], seed=settings["seed"], size=size)
    report = json.loads((folder / "pretrain_report.json").read_text())
    report.update(measure(model.eval(), processor, pairs, range(n, n + settings["eval_games"]), others))
    (folder / "pretrain_report.json").write_text(json.dumps(report, indent=1))
    write_manifest(folder, **{k: v for k, v in old.items() if k != "files"})
    return report


@torch.no_grad()
def evaluate(policy: Policy, pairs, indices, config: GameConfig) -> dict:
    """Greedy play of ``config`` on the pairs at ``indices``: format validity of clues and votes, truth of the clues'
    content, the voters' notes scored against the clues the model itself gave (:mod:`vzero.tiny.targets`), and the
    votes' spy-finding (measured only: nothing ``tiny`` is taught depends on who the spy is)."""
    chosen = [pairs[i] for i in indices]  # each access renders, so once
    pics = policy.inputs.pictures([img for p in chosen for img in (p.original, p.modified)])
    games = [Game(config, "clevr", seed=i, meta=p.meta, index=k) for k, (i, p) in enumerate(zip(indices, chosen))]
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=NOTES_TOKENS)
    counts, targets, said_verdicts = Counter(), [], Counter()
    lo, hi = getattr(pairs, "n_objects", (4, 6))
    n_kinds = math.prod(len(v) for v in ATTRIBUTES.values())

    def answer(turns):
        shown = [pics[2 * t.game + (t.view == "modified")] for t in turns]
        comps = policy.generate([policy.inputs.prompt_ids(t.messages, p) for t, p in zip(turns, shown)], shown, greedy)
        texts = [policy.inputs.text(c.ids) for c in comps]
        for t, text in zip(turns, texts):
            if t.stage == "decision":
                counts["votes"] += 1
                vote = parse_vote(text, t.n_players)
                counts["vote_valid"] += vote != "invalid"
                counts["vote_self"] += vote == t.player
                counts["vote_na"] += vote == "n/a"
                counts["vote_spy"] += vote == games[t.game].spy  # measured only: no target depends on it
                counts["vote_spy_chance"] += 1 / (t.n_players - 1)  # another player, uniformly
                said = last_clues(games[t.game].clues)  # the game has all the clues by now
                counts.update({f"notes_{k}": v for k, v in score_notes(text, t.player, said).items()})
                said_verdicts.update(verdicts(t.player, said).values())
                continue
            if t.view == "blank":
                continue  # no objects to be true about
            objs = biggest_first(t.meta["modified_scene"] if t.view == "modified" else t.meta["scene"])
            target = objs[0]
            targets.append({**{k: target[k] for k in ATTRIBUTES}, "count": len(objs)})
            kinds = {tuple(o[k] for k in ATTRIBUTES) for o in objs}
            counts["clues"] += 1
            counts["count_true"] += f"I see {len(objs)} objects" in text
            counts["object_chance"] += len(kinds) / n_kinds
            clue = parse_clue(text)
            counts["clue_valid"] += clue is not None
            if clue is None:
                continue
            words = set(clue.lower().replace(".", " ").split())
            counts["object_true"] += any(all(w in words for w in kind) for kind in kinds)
            for k in ATTRIBUTES:
                counts[f"{k}_true"] += target[k] in words
        return texts

    play_games(games, answer)
    n_clues, n_votes = max(1, counts["clues"]), max(1, counts["votes"])
    n_entries = max(1, counts["notes_copy_n"])

    def ratio(a: float, b: float) -> float:
        return round(a / b, 3)

    report = {
        "eval_games": len(chosen),
        "clue_format_valid": ratio(counts["clue_valid"], n_clues),
        "vote_format_valid": ratio(counts["vote_valid"], n_votes),
        "vote_self": ratio(counts["vote_self"], n_votes),
        "vote_na": ratio(counts["vote_na"], n_votes),
        "vote_spy": ratio(counts["vote_spy"], n_votes),
        "vote_spy_chance": ratio(counts["vote_spy_chance"], n_votes),
        "notes_mine": ratio(counts["notes_mine"], n_votes),
        "notes_copy": ratio(counts["notes_copy"], n_entries),
        "notes_copy_chance": round(1 / n_kinds, 3),  # a random object's description
        "notes_judge": ratio(counts["notes_judge"], n_entries),
        "notes_judge_blind": ratio(max(said_verdicts.values(), default=0), n_entries),  # always the commoner verdict
        "clue_object_true": ratio(counts["object_true"], n_clues),
        "clue_object_chance": ratio(counts["object_chance"], n_clues),
    }
    for k in ("count", *ATTRIBUTES):
        blind = max(Counter(t[k] for t in targets).values(), default=0) / n_clues
        chance = 1 / (hi - lo + 1) if k == "count" else 1 / len(ATTRIBUTES[k])
        report[f"clue_{k}_true"] = ratio(counts[f"{k}_true"], n_clues)
        report[f"clue_{k}_chance"], report[f"clue_{k}_blind"] = round(chance, 3), round(blind, 3)
    return report
