"""How much of the spy the base's notes can show: text rules applied to the clues of the shipped model's own games.

On the civilians' vote turns of held-out games of ``configs/tiny_learn.yaml`` (clues spoken by the frozen start at the
config's clue temperature), each rule picks the players it suspects from the clue text alone and votes uniformly among
them; its score is the expected fraction of votes that name the spy. No rule sees who the spy is; the score is what a
vote that followed the rule exactly would reach, an upper bound on what RL can draw from the same reading. Writes
``benchmarks/results/notes_rules.json`` and prints a table, with how often the spy, speaking after others, names a
colour one of them already named (which leaves the colour verdicts nothing to see).

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
    """name -> (voter, {player: last clue}) -> the players it suspects."""
    from vzero.tiny.targets import verdicts

    def others(voter, clues):
        return {p: words(c) for p, c in clues.items() if p != voter}

    def whole(voter, clues):  # the previous base's verdict: the whole description differs
        mine = words(clues.get(voter))
        return [p for p, ws in others(voter, clues).items() if not mine or ws != mine]

    def marked(voter, clues):  # what the notes mark "different" (another colour than mine)
        return [p for p, v in verdicts(voter, clues).items() if v == "different"]

    def fewest_shared(voter, clues):
        mine, theirs = set(words(clues.get(voter))), others(voter, clues)
        shared = {p: len(mine & set(ws)) for p, ws in theirs.items()}
        return [p for p in theirs if shared[p] == min(shared.values())]

    return {
        "anyone but me": lambda voter, clues: list(others(voter, clues)),
        "whole description differs": whole,
        "marked different (the notes)": marked,
        "fewest shared words": fewest_shared,
    }


def main(argv: list[str] | None = None) -> dict:
    from vzero.model import Policy, load_vlm
    from vzero.rollout.votes import config_game, held_out_vote_turns
    from vzero.tiny import resolve
    from vzero.tiny.targets import colour, described

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="a model name or folder (default: the shipped tiny)")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny_learn.yaml", help="whose game is played")
    ap.add_argument("--games", type=int, default=100)
    ap.add_argument("--seed", type=int, default=20_000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "notes_rules.json")
    args = ap.parse_args(argv)
    model, processor = load_vlm(resolve(args.model), lora=None)
    game, sampling = config_game(args.config)
    turns = held_out_vote_turns(Policy(model.eval(), processor), game, sampling, args.games, args.seed)
    scores, singled = {}, 0
    for name, rule in rules().items():
        total = 0.0
        for t in turns:
            others = [p for p in t.clues if p != t.player]
            suspects = rule(t.player, t.clues)
            if not suspects or len(suspects) == len(others):
                suspects = others  # no information: anyone but me
            elif name.startswith("marked"):
                singled += 1
            total += sum(p == t.spy for p in suspects) / len(suspects)
        scores[name] = round(total / len(turns), 3)
    # The spy speaks in its seat's order (one round): does it repeat a colour an earlier player already named?
    games = {(t.spy, tuple(sorted(t.clues.items(), key=lambda kv: kv[0]))) for t in turns}
    later = [(spy, dict(clues)) for spy, clues in games if spy > 0]
    echoes = sum(
        colour(described(c[spy])) in {colour(described(c[p])) for p in range(spy)} - {None} for spy, c in later
    )
    result = {
        "benchmark": "notes_rules",
        "vote_turns": len(turns),
        "notes_single_out_some": round(singled / len(turns), 3),
        "spy_speaks_later": len(later),
        "spy_repeats_a_colour": round(echoes / max(1, len(later)), 3),
        "spy_found": scores,
    }
    print(f"{len(turns)} vote turns; the notes single out some players in {result['notes_single_out_some']:.3f}")
    print(f"the spy names a colour an earlier player named in {echoes} of the {len(later)} games where it speaks later")
    print(f"{'rule':<30} {'spy found':>9}")
    for name, score in scores.items():
        print(f"{name:<30} {score:>9.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
