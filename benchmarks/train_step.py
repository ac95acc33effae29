"""Training-step time, broken down into rollout, reference scoring and update, with peak memory.

Runs ``vzero fit`` (configs/tiny.yaml's settings, evaluation off) for ``--steps`` steps on a model and reads the step
timings the run logs to MLflow (``timing_s/rollout``, ``timing_s/ref``, ``timing_s/update``). The first step is a
warm-up and is left out of the medians. Peak memory is the device's peak allocation on CUDA and the process's peak
resident set on the CPU.

    python benchmarks/train_step.py --model tiny --games 8 --steps 4
    python benchmarks/train_step.py --shape 7b --device cuda --games 8 --steps 3 --workdir /tmp/vzero-7b

``--shape 7b`` saves a random-init model of Qwen2.5-VL-7B's exact shape in bf16 to ``--workdir`` first (16.6 GB) and
trains it with ``bf16-true`` precision.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

PARTS = ("rollout", "ref", "update")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--shape", choices=["model", "7b"], default="model")
    ap.add_argument("--layers", type=int, default=None, help="with --shape 7b: fewer layers, for a smoke run")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--games", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--decoder", choices=["auto", "vzero", "generate"], default="auto")
    ap.add_argument("--compile-decode", action="store_true", help="model.decoding.compile")
    ap.add_argument("--reuse-prompts-gb", type=float, default=4.0, help="model.decoding.reuse_prompts_gb (0: off)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/train_step.json")
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vzero-train-step-"))
    work.mkdir(parents=True, exist_ok=True)

    model, extra = args.model, []
    if args.shape == "7b":
        from rollout_throughput import seven_b

        folder = work / "qwen2.5-vl-7b-shape"
        if not (folder / "config.json").exists():
            net, processor = seven_b(args.device, torch.bfloat16, args.layers, lora=False)
            net.save_pretrained(folder)
            processor.save_pretrained(folder)
            del net
        model = str(folder)
        extra = ["--model.vlm.dtype", "bfloat16", "--trainer.precision", "bf16-true"]
    accelerator = "gpu" if args.device.startswith("cuda") else "cpu"
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    command = [
        "fit",
        "--config",
        str(ROOT / "configs/tiny.yaml"),
        "--model.vlm.name_or_path",
        model,
        "--data.games_per_step",
        str(args.games),
        "--trainer.max_steps",
        str(args.steps),
        "--trainer.accelerator",
        accelerator,
        "--model.loss.micro_batch_size",
        str(args.micro_batch),
        "--model.decoding.decoder",
        args.decoder,
        "--model.decoding.compile",
        str(args.compile_decode).lower(),
        "--model.decoding.reuse_prompts_gb",
        str(args.reuse_prompts_gb),
        "--eval.every_n_steps",
        "0",
        "--checkpoint.dirpath",
        str(work / "checkpoints"),
        "--tracking_uri",
        tracking,
        "--experiment",
        "train-step-benchmark",
        *extra,
    ]
    from vzero.__main__ import main as vzero

    if accelerator == "gpu":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    vzero(command)
    wall = time.perf_counter() - start
    peak = (
        torch.cuda.max_memory_allocated()
        if accelerator == "gpu"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )

    import mlflow

    client = mlflow.tracking.MlflowClient(tracking)
    experiment = client.get_experiment_by_name("train-step-benchmark")
    run = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
    history = {
        p: [m.value for m in sorted(client.get_metric_history(run.info.run_id, f"timing_s/{p}"), key=lambda m: m.step)]
        for p in PARTS
    }
    timed = {p: v[1:] or v for p, v in history.items()}  # the first step warms up
    medians = {p: statistics.median(v) for p, v in timed.items()}
    total = sum(medians.values())
    print(f"\ntraining step, {model} on {args.device}, {args.games} games per step, median of steps 2-{args.steps}")
    print(f"{'part':>8} {'seconds':>9} {'share':>7}")
    for p in PARTS:
        print(f"{p:>8} {medians[p]:>9.2f} {medians[p] / total:>7.1%}")
    print(f"{'step':>8} {total:>9.2f}\npeak memory {peak / 2**30:.2f} GiB; wall {wall:.0f} s for the whole command")
    result = {
        "benchmark": "train_step",
        "model": model,
        "shape": args.shape,
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if accelerator == "gpu" else platform.processor(),
        "games_per_step": args.games,
        "steps": args.steps,
        "decoder": args.decoder,
        "compile_decode": args.compile_decode,
        "reuse_prompts_gb": args.reuse_prompts_gb,
        "seconds": medians,
        "per_step": history,
        "peak_memory_bytes": peak,
        "wall_s": wall,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
