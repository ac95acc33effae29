"""Does training make the model better? Win rate against the frozen initial policy, before and after a CPU budget.

Each run is an ordinary ``vzero fit --config configs/tiny_learn.yaml`` in its own process (the same code path as a 7B
run), with a training seed, a training mode and a wall-time budget (``trainer.max_time``); the evaluation games are
the same held-out games for every run. The win rate is measured against the frozen start: at step 0 (exactly 0.5, a
policy against itself), every ``eval.every_n_steps`` steps, and at the end, each with its 95% Wilson interval.

The main claim is the ``iterative`` mode (the paper's); ``clue`` (pure self-play) and ``decision`` (pure RLVR) run with
the same seeds and budget, for the paper's ablation. Writes ``learning_signal.json`` and ``learning_signal.png``
(curves per run), and prints a table.

    python benchmarks/learning_signal.py --jobs 2               # 3 seeds x 3 modes, two at a time: 60 minutes
    python benchmarks/learning_signal.py --seeds 1 --jobs 2     # 1 seed x 3 modes: 25 minutes
    python benchmarks/learning_signal.py --seeds 1 --modes clue --out clue_batch -- --model.loss.clue_scale batch

The timings are of 2 cores that other jobs shared for most of the run (each run's ``wall_s`` is in the JSON);
``--minutes`` caps each run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)
MODES = ("iterative", "clue", "decision")
EXPERIMENT = "vzero-learning-signal"
CURVES = ("eval/win_rate", "eval/win_rate_lo", "eval/win_rate_hi", "eval/decision_acc", "eval/na_rate")
CURVES += ("eval/win_rate_civilian", "eval/win_rate_spy")
TRAIN_CURVES = ("decision/acc", "decision/na_rate", "stage/clue")


def train(config: Path, mode: str, seed: int, minutes: float, extra: list[str], threads: int = 0) -> tuple[str, float]:
    """One ``vzero fit`` in its own process (on ``threads`` torch threads, if set); returns its MLflow run name and
    wall seconds."""
    name = f"{mode}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    hours, rest = divmod(int(minutes * 60), 3600)
    argv = [sys.executable, "-m", "vzero", "fit", "--config", str(config), "--model.mode", mode]
    argv += ["--seed_everything", str(seed), "--data.seed", str(seed), "--experiment", EXPERIMENT]
    argv += ["--run_name", name, "--checkpoint.dirpath", f"checkpoints/learning_signal/{name}"]
    argv += ["--trainer.max_time", f"00:{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"]
    argv += ["--trainer.enable_progress_bar", "false", *extra]
    start = time.perf_counter()
    print(f"== {name}: {' '.join(argv[2:])}", flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    subprocess.run(argv, cwd=ROOT, check=True, env=env)
    return name, time.perf_counter() - start


def read_run(name: str) -> dict:
    """Every curve of a finished run, from the local MLflow store."""
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{ROOT / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    curves = {}
    for key in (*CURVES, *TRAIN_CURVES):
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        curves[key] = [[m.step, m.value] for m in history]
    return curves


def summarise(seed: int, mode: str, wall: float, curves: dict) -> dict:
    win, lo, hi = (curves[k] for k in ("eval/win_rate", "eval/win_rate_lo", "eval/win_rate_hi"))
    acc = curves["eval/decision_acc"]
    return {
        "seed": seed,
        "mode": mode,
        "start_win_rate": win[0][1],
        "final_win_rate": win[-1][1],
        "final_win_rate_lo": lo[-1][1],
        "final_win_rate_hi": hi[-1][1],
        "start_decision_acc": acc[0][1],
        "final_decision_acc": acc[-1][1],
        "final_na_rate": curves["eval/na_rate"][-1][1],
        "start_win_rate_spy": curves["eval/win_rate_spy"][0][1],
        "final_win_rate_spy": curves["eval/win_rate_spy"][-1][1],
        "start_win_rate_civilian": curves["eval/win_rate_civilian"][0][1],
        "final_win_rate_civilian": curves["eval/win_rate_civilian"][-1][1],
        "steps": win[-1][0],
        "wall_s": round(wall, 1),
        "curves": curves,
    }


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    colours = {"iterative": "tab:blue", "clue": "tab:orange", "decision": "tab:green"}
    for r in runs:
        c, style = colours.get(r["mode"], "black"), ["-", "--", ":"][r["seed"] % 3]
        label = f"{r['mode']} seed {r['seed']}"
        steps, win = zip(*r["curves"]["eval/win_rate"])
        axes[0].plot(steps, win, style, color=c, marker="o", label=label)
        lo = [v for _, v in r["curves"]["eval/win_rate_lo"]]
        hi = [v for _, v in r["curves"]["eval/win_rate_hi"]]
        axes[0].fill_between(steps, lo, hi, color=c, alpha=0.08)
        for ax, key in zip(axes[1:], TRAIN_CURVES):
            if r["curves"][key]:
                x, y = zip(*r["curves"][key])
                ax.plot(x, y if key == "stage/clue" else _smooth(y), style, color=c, label=label)
    axes[0].axhline(0.5, color="grey", lw=0.8)
    titles = (
        "eval win rate vs frozen start (95% CI)",
        "decision accuracy (train, smoothed)",
        "N/A rate (train, smoothed)",
        "stage (1 = clue)",
    )
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _smooth(values, k: int = 9) -> list[float]:
    return [statistics.fmean(values[max(0, i - k + 1) : i + 1]) for i in range(len(values))]


def _moved(run: dict, side: str) -> str:
    """The win rate playing ``side`` at the start and at the end (``-`` for a JSON written before it was kept)."""
    start, final = run.get(f"start_win_rate_{side}"), run.get(f"final_win_rate_{side}")
    return "-" if start is None else f"{start:.2f}->{final:.2f}"


def table(runs: list[dict]) -> str:
    head = f"{'mode':<10} {'seed':>4} {'steps':>5} {'wall s':>7} {'win start':>9} {'win final [95% CI]':>24} "
    head += f"{'acc start':>9} {'acc final':>9} {'N/A final':>9} {'as civilians':>12} {'as spy':>11}"
    lines = [head]
    for r in runs:
        ci = f"{r['final_win_rate']:.3f} [{r['final_win_rate_lo']:.3f}, {r['final_win_rate_hi']:.3f}]"
        lines.append(
            f"{r['mode']:<10} {r['seed']:>4} {r['steps']:>5} {r['wall_s']:>7.0f} {r['start_win_rate']:>9.3f} {ci:>24} "
            f"{r['start_decision_acc']:>9.3f} {r['final_decision_acc']:>9.3f} {r['final_na_rate']:>9.3f} "
            f"{_moved(r, 'civilian'):>12} {_moved(r, 'spy'):>11}"
        )
    for mode in dict.fromkeys(r["mode"] for r in runs):
        mine = [r for r in runs if r["mode"] == mode]
        median = statistics.median(r["final_win_rate"] for r in mine)
        lines.append(f"{mode:<10} median final win rate over {len(mine)} seeds: {median:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny_learn.yaml")
    ap.add_argument("--seeds", type=int, default=len(SEEDS), help="run the first N of the seeds (0, 1, 2)")
    ap.add_argument(
        "--minutes",
        type=float,
        default=15.0,
        help="wall-time cap of each training run (the config's max_steps may end it first)",
    )
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time, the CPU's cores shared between them")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--replot", action="store_true", help="redraw the figure and table from the existing JSON")
    ap.add_argument("extra", nargs="*", help="more `vzero fit` options, after --")
    args = ap.parse_args(argv)
    if args.replot:
        result = json.loads((args.out / "learning_signal.json").read_text())
        runs = sorted(
            (r for mine in result["ablation"].values() for r in mine), key=lambda r: (r["seed"], MODES.index(r["mode"]))
        )
        plot(runs, args.out / "learning_signal.png")
        print(table(runs))
        return result

    plan = [(seed, mode) for seed in SEEDS[: args.seeds] for mode in args.modes]
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else 0

    def one(seed_mode: tuple[int, str]) -> dict:
        seed, mode = seed_mode
        time.sleep(plan.index(seed_mode) % args.jobs)  # distinct run names, which carry the second they start
        name, wall = train(args.config, mode, seed, args.minutes, args.extra, threads)
        run = summarise(seed, mode, wall, read_run(name))
        print(table([run]), flush=True)
        return run

    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(one, plan))
    args.out.mkdir(parents=True, exist_ok=True)
    plot(runs, args.out / "learning_signal.png")
    print("\nlearning signal: win rate against the frozen start, held-out games\n" + table(runs))
    result = {
        "benchmark": "learning_signal",
        "seeds": [r for r in runs if r["mode"] == "iterative"],
        "ablation": {mode: [r for r in runs if r["mode"] == mode] for mode in args.modes},
        "config": args.config.read_text(),
        "minutes": args.minutes,
        "jobs": args.jobs,
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count()},
    }
    (args.out / "learning_signal.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out / 'learning_signal.json'} and {args.out / 'learning_signal.png'}")
    return result


if __name__ == "__main__":
    main()
