"""Does the game transfer? The shipped tiny model and the ends of its training runs on the question suites.

Trains ``configs/tiny_learn.yaml`` in each mode (``iterative``, ``clue``, ``decision``; an ordinary ``vzero fit`` per
mode, in its own process on one thread, two at a time), then answers the three generated suites (500 questions each,
greedy, pictures from the held-out stream of the config's seed) with ``vzero evaluate`` for the start and for each
run's last checkpoint. Prints a table (accuracy with its 95% interval; chance and the best blind answer in the header
row) and writes ``benchmarks/results/suite_transfer.json``.

    python benchmarks/suite_transfer.py                     # 100 steps per mode
    python benchmarks/suite_transfer.py --steps 30          # shorter runs
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
CONFIG = ROOT / "configs" / "tiny_learn.yaml"
MODES = ("iterative", "clue", "decision")
SUITES = ("clevr-qa", "clevr-diff", "chart-qa")


def vzero(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "vzero", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"vzero {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def fit(mode: str, steps: int, work: Path) -> Path:
    """One training run; returns its last checkpoint."""
    run = work / f"fit-{mode}"  # its own folder, so each run has its own MLflow store
    run.mkdir(parents=True, exist_ok=True)
    ckpts = run / "checkpoints"
    vzero(
        [
            "fit",
            "--config",
            str(CONFIG),
            "--model.mode",
            mode,
            "--trainer.max_steps",
            str(steps),
            "--eval.every_n_steps",
            "0",
            "--eval.at_start",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--checkpoint.dirpath",
            str(ckpts),
            "--experiment",
            "vzero-suite-transfer",
            "--run_name",
            f"{mode}-{steps}-{time.strftime('%Y%m%d-%H%M%S')}",
        ],
        run,
    )
    (last,) = sorted(ckpts.glob("*/last.ckpt"))[-1:]
    return last


def evaluate(name: str, ckpt: Path | None, questions: int, work: Path) -> dict:
    out = work / f"eval-{name}"
    args = ["evaluate", "--config", str(CONFIG), "--suites", ",".join(SUITES), "--questions", str(questions)]
    args += ["--out", str(out)] + (["--ckpt_path", str(ckpt)] if ckpt else [])
    vzero(args, work)
    return json.loads((out / "evaluate.json").read_text())["suites"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "suite_transfer")
    args = parser.parse_args()
    modes = args.modes.split(",")
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        ckpts = dict(zip(modes, pool.map(lambda m: fit(m, args.steps, args.work), modes)))
        train_seconds = time.perf_counter() - start
        names = ["start", *modes]
        results = dict(zip(names, pool.map(lambda n: evaluate(n, ckpts.get(n), args.questions, args.work), names)))
    record = {
        "config": str(CONFIG.relative_to(ROOT)),
        "steps": args.steps,
        "questions": args.questions,
        "train_seconds": round(train_seconds, 1),
        "results": results,
    }
    (args.work.parent / "suite_transfer.json").write_text(json.dumps(record, indent=1))
    base = results["start"]
    head = " | ".join(f"{s} (chance {base[s]['chance']:.3f}, blind {base[s]['blind']:.3f})" for s in SUITES)
    print(f"| model | {head} |")
    print("|---|" + "---|" * len(SUITES))
    for name in names:
        label = "start (shipped tiny)" if name == "start" else f"{name}, {args.steps} steps"
        cells = " | ".join(
            f"{results[name][s]['accuracy']:.3f} [{results[name][s]['lo']:.3f}, {results[name][s]['hi']:.3f}]"
            for s in SUITES
        )
        print(f"| {label} | {cells} |")
    seconds = {s: round(base[s]["seconds"], 1) for s in SUITES}
    print(f"seconds to answer {args.questions} questions, start model, one thread: {seconds}")


if __name__ == "__main__":
    main()
