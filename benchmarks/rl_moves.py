"""What does RL move on the embedded tiny model? Short decision-stage runs, measured exactly on held-out vote turns.

Each setting is an ordinary ``vzero fit --config configs/tiny_learn.yaml`` (pure decision training, 8 games per step)
with a few overrides, run in its own process on one thread. Before and after, :func:`vzero.rollout.votes.vote_values`
measures the civilians' votes on the 96 vote turns of 48 held-out games without sampling noise: the expected Eq. 4
reward, and the probability of naming the spy, oneself, abstaining, and of writing a listed vote at all. If P(spy)
rises above P(self), the votes have started to depend on the game; if both move together, only context-free habits
(abstaining, format) changed. Writes ``benchmarks/results/rl_moves.json`` and prints a table.

    python benchmarks/rl_moves.py                          # every setting, two at a time (about 10 minutes)
    python benchmarks/rl_moves.py --settings paper-s0,full-ft-1e-3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--model.mode", "decision", "--data.games_per_step", "8", "--eval.every_n_steps", "0"]
COMMON += ["--eval.at_start", "false", "--trainer.enable_progress_bar", "false"]
COMMON += ["--checkpoint.every_n_train_steps", "0"]
FULL = ["--model.vlm.lora", "null", "--model.loss.kl_coef", "0.05"]
SETTINGS = {  # name -> (steps, fit overrides)
    "paper-s0": (20, ["--seed_everything", "0", "--data.seed", "0"]),
    "paper-s1": (20, ["--seed_everything", "1", "--data.seed", "1"]),
    "paper-s2": (20, ["--seed_everything", "2", "--data.seed", "2"]),
    "paper-s0-40": (40, ["--seed_everything", "0", "--data.seed", "0"]),
    "lr-5e-3": (20, ["--model.optimizer.init_args.lr", "5e-3"]),
    "group-std-none": (20, ["--model.loss.group_std", "none"]),
    "full-ft-3e-4": (20, [*FULL, "--model.optimizer.init_args.lr", "3e-4"]),
    "full-ft-1e-3": (20, [*FULL, "--model.optimizer.init_args.lr", "1e-3"]),
    "full-ft-1e-3-official": (
        20,
        [*FULL, "--model.optimizer.init_args.lr", "1e-3", "--data.game.decision_reward", "official"],
    ),
    "lora-1e-2-kl-0.05": (20, ["--model.optimizer.init_args.lr", "1e-2", "--model.loss.kl_coef", "0.05"]),
}
TURNS = {"games": 48, "seed": 10_000}


def held_out_turns(policy):
    """The civilians' vote turns of the held-out games, clues spoken by ``policy`` (the frozen start)."""
    from vzero.rollout.votes import config_game, held_out_vote_turns

    game, sampling = config_game(ROOT / "configs" / "tiny_learn.yaml")
    return held_out_vote_turns(policy, game, sampling, TURNS["games"], TURNS["seed"])


def one(name: str, out: Path) -> None:
    """Run one setting in this process and write its measures to ``out``."""
    import torch

    torch.set_num_threads(1)
    from vzero.cli.train import VZeroCLI, quiet
    from vzero.model import Policy, load_vlm
    from vzero.rollout.votes import vote_values
    from vzero.tiny import resolve
    from vzero.tiny.targets import notes

    def lead(turn):  # the notes tiny writes before its vote, every clue read right
        return notes(turn.player, turn.clues)

    steps, extra = SETTINGS[name]
    model, processor = load_vlm(resolve("tiny"), lora=None)
    start_policy = Policy(model.eval(), processor)
    turns = held_out_turns(start_policy)
    before = vote_values(start_policy, turns, lead)
    work = out.parent / f"work-{name}"
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    quiet()
    t0 = time.perf_counter()
    config = ["--config", str(ROOT / "configs" / "tiny_learn.yaml"), *COMMON, "--trainer.max_steps", str(steps)]
    module = VZeroCLI(args=["fit", *config, *extra]).model
    seconds = time.perf_counter() - t0
    module.policy.model.eval()
    after = vote_values(module.policy, turns, lead)
    record = {"setting": name, "steps": steps, "overrides": extra, "fit_seconds": round(seconds, 1)}
    out.write_text(json.dumps({**record, "turns": len(turns), "before": before, "after": after}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names of SETTINGS")
    parser.add_argument("--jobs", type=int, default=2, help="settings run at once, one thread each")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rl_moves.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args.one, args.out)
    names = args.settings.split(",")
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        parser.error(f"unknown setting(s) {unknown}; choose from {list(SETTINGS)}")
    parts = args.out.parent / "rl_moves"
    parts.mkdir(parents=True, exist_ok=True)

    def run(name: str) -> dict:
        part = parts / f"{name}.json"
        cmd = [sys.executable, __file__, "--one", name, "--out", str(part)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return json.loads(part.read_text())

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, names))
    args.out.write_text(json.dumps({"turns": TURNS, "results": results}, indent=1))
    keys = ("reward", "spy", "self", "n/a", "listed")
    print(f"| setting | steps | fit s | {' | '.join(keys)} |")
    print("|---|---|---|" + "---|" * len(keys))
    start = results[0]["before"]
    print("| start (shipped tiny) | 0 | – | " + " | ".join(f"{start[k]:.3f}" for k in keys) + " |")
    for r in results:
        cells = " | ".join(f"{r['after'][k]:.3f}" for k in keys)
        print(f"| {r['setting']} | {r['steps']} | {r['fit_seconds']:.0f} | {cells} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
