"""How much of the spy the base's notes can show: text rules applied to the clues of the shipped model's own games.

On the civilians' vote turns of held-out games of ``configs/tiny_learn.yaml`` (clues spoken by the frozen start at the
config's clue temperature), each rule picks the players it suspects from the clue text alone and votes uniformly among
them; its score is the expected fraction of votes that name the spy. No rule sees who the spy is; the score is what a
vote that followed the rule exactly would reach, an upper bound on what RL can draw from the same reading. Writes
``benchmarks/results/notes_rules.json`` and prints a table.

    python benchmarks/notes_rules.py                 # 100 games, 27 s on one thread
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def words(clue: str | None) -> list[str]:
    from vzero.tiny.targets import NONE, described

    text = described(clue)
    return [] if text == NONE else text.split()


def rules() -> dict:
    """name -> (voter's words, {other player: words}) -> the suspected players."""
    from vzero.data.pairs.clevr import COLORS

    def colour(ws: list[str]) -> str | None:
        return next((w for w in ws if w in COLORS), None)

    def different(mine, others):  # what the notes mark "different"
        return [p for p, ws in others.items() if not mine or ws != mine]

    def other_colour(mine, others):
        return [p for p, ws in others.items() if colour(ws) != colour(mine)]

    def fewest_shared(mine, others):
        shared = {p: len(set(mine) & set(ws)) for p, ws in others.items()}
        return [p for p in others if shared[p] == min(shared.values())]

    return {
        "anyone but me": lambda mine, others: list(others),
        "marked different (the notes)": different,
        "other colour": other_colour,
        "fewest shared words": fewest_shared,
    }


def main(argv: list[str] | None = None) -> dict:
    from vzero.game import GameConfig
    from vzero.model import Policy, load_vlm
    from vzero.model.sampling import SamplingByStage, SamplingConfig
    from vzero.rollout.votes import held_out_vote_turns
    from vzero.tiny import resolve

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--games", type=int, default=100)
    ap.add_argument("--seed", type=int, default=20_000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "notes_rules.json")
    args = ap.parse_args(argv)
    model, processor = load_vlm(resolve("tiny"), lora=None)
    game = GameConfig(n_civilians=2, clue_rounds=1, spy_view="blank", votes_per_voter=1)  # configs/tiny_learn.yaml
    sampling = SamplingByStage(clue=SamplingConfig(temperature=0.5, max_new_tokens=32))
    turns = held_out_vote_turns(Policy(model.eval(), processor), game, sampling, args.games, args.seed)
    scores, singled = {}, 0
    for name, rule in rules().items():
        total = 0.0
        for t in turns:
            others = {p: words(c) for p, c in t.clues.items() if p != t.player}
            suspects = rule(words(t.clues.get(t.player)), others)
            if not suspects or len(suspects) == len(others):
                suspects = list(others)  # no information: anyone but me
            elif name.startswith("marked"):
                singled += 1
            total += sum(p == t.spy for p in suspects) / len(suspects)
        scores[name] = round(total / len(turns), 3)
    result = {
        "benchmark": "notes_rules",
        "vote_turns": len(turns),
        "notes_single_out_some": round(singled / len(turns), 3),
        "spy_found": scores,
    }
    print(f"{len(turns)} vote turns; the notes single out some players in {result['notes_single_out_some']:.3f}")
    print(f"{'rule':<30} {'spy found':>9}")
    for name, score in scores.items():
        print(f"{name:<30} {score:>9.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
