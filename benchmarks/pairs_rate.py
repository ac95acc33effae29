"""Pairs per second of the procedural pair sources on one CPU core.

Run ``python benchmarks/pairs_rate.py [--repeats 5] [--pairs 40] [--out benchmarks/results/pairs_rate.json]``. Thread
pools are pinned to one thread before numpy is imported and the process to one core where the OS allows, so the number
is a per-core rate: a data loader with ``k`` workers scales it by about ``k``. Besides wall-clock rates it records the
rate by process CPU time, which a busy or shared machine disturbs far less; the target is checked on the wall-clock
median.
"""

from __future__ import annotations

import os

for _var in (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

TARGETS = {"clevr": 20.0}
"""Minimum pairs/s on one core at 480x320."""


def _pin_one_core() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not available on this OS"
    try:
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    except OSError as err:
        return f"failed: {err}"


def _sources(size: tuple[int, int]) -> dict[str, Callable[[int], Any] | str]:
    """Each source's constructor, or why it is skipped."""
    out: dict[str, Callable[[int], Any] | str] = {}
    try:
        from vzero.data.pairs.clevr import ClevrPairs

        out["clevr"] = lambda n: ClevrPairs(n=n, seed=0, size=size)
    except Exception as err:  # report, don't crash: the other source may still be measurable
        out["clevr"] = f"import failed: {type(err).__name__}: {err}"
    try:
        from vzero.data.pairs.chart import ChartPairs

        out["chart"] = lambda n: ChartPairs(n=n, seed=0, size=size)
    except Exception as err:
        out["chart"] = f"import failed: {type(err).__name__}: {err}"
    return out


def measure(make: Callable[[int], Any], repeats: int, pairs: int, warmup: int = 5) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU-time pairs/s of ``repeats`` runs of ``pairs`` fresh pairs each (distinct indices)."""
    source = make(warmup + repeats * pairs)
    for i in range(warmup):
        source[i]
    wall, cpu = [], []
    for r in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        for i in range(warmup + r * pairs, warmup + (r + 1) * pairs):
            source[i]
        wall.append(pairs / (time.perf_counter() - start))
        cpu.append(pairs / max(time.process_time() - start_cpu, 1e-9))
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per source")
    parser.add_argument("--pairs", type=int, default=40, help="pairs per run")
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pairs_rate.json"))
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.pairs < 1:
        parser.error("--repeats and --pairs must be >= 1")

    affinity = _pin_one_core()
    size = (args.width, args.height)
    results: dict[str, dict[str, Any]] = {}
    for name, make in _sources(size).items():
        if isinstance(make, str):
            results[name] = {"skipped": make}
            continue
        try:
            rates, cpu_rates = measure(make, args.repeats, args.pairs)
        except Exception as err:
            results[name] = {"skipped": f"failed while generating: {type(err).__name__}: {err}"}
            continue
        med = statistics.median(rates)
        results[name] = {
            "median_pairs_per_s": med,
            "min_pairs_per_s": min(rates),
            "max_pairs_per_s": max(rates),
            "median_ms_per_pair": 1000 / med,
            "runs_pairs_per_s": rates,
            "cpu_time_median_pairs_per_s": statistics.median(cpu_rates),
            "cpu_time_runs_pairs_per_s": cpu_rates,
        }
        if name in TARGETS:
            results[name]["target_pairs_per_s"] = TARGETS[name]
            results[name]["meets_target"] = med >= TARGETS[name]

    print(f"pairs/s on one core at {size[0]}x{size[1]}, {args.repeats} runs x {args.pairs} pairs ({affinity})")
    print(f"{'source':<8} {'median':>8} {'min':>8} {'max':>8} {'ms/pair':>8} {'cpu-time':>8}  target")
    for name, res in results.items():
        if "skipped" in res:
            print(f"{name:<8} skipped: {res['skipped']}")
            continue
        target = f">= {TARGETS[name]:g} {'ok' if res['meets_target'] else 'MISSED'}" if name in TARGETS else "-"
        print(
            f"{name:<8} {res['median_pairs_per_s']:8.1f} {res['min_pairs_per_s']:8.1f} {res['max_pairs_per_s']:8.1f}"
            f" {res['median_ms_per_pair']:8.1f} {res['cpu_time_median_pairs_per_s']:8.1f}  {target}"
        )

    report = {
        "size": list(size),
        "repeats": args.repeats,
        "pairs_per_run": args.pairs,
        "threads": 1,
        "affinity": affinity,
        "targets_pairs_per_s": TARGETS,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": sys.version.split()[0],
            "cpu_count": os.cpu_count(),
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(r.get("meets_target", True) for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
