"""Do LoRA adapters still train when the base model is bf16? LoRA-A entries that change, and how far they move.

Three runs of ``vzero fit --config configs/tiny.yaml`` (each in its own process, on one thread), alike but for the
precision: mode ``both`` (every sample trains every step), a constant learning rate (``--lr``, 1e-5 as in the 7B
recipes), ``--steps`` optimizer steps, no evaluation and no checkpoints.

- ``fp32``: ``trainer.precision 32-true``, ``model.vlm.dtype float32``: the reference.
- ``bf16 adapters``: ``bf16-true`` and a bf16 base, with the adapters converted to bf16 along with the base, as
  Lightning does when nothing exempts them (vzero before its adapters stayed fp32): AdamW's weights and moments bf16.
- ``fp32 adapters``: ``bf16-true`` and a bf16 base; vzero keeps the adapters, so AdamW's state, in fp32.

For each run: the adapters as the optimizer receives them (at ``on_fit_start``) and after the last step; per LoRA
matrix (A, B), the fraction of entries that changed at all (bitwise) and the total movement, the sum of
``|after - before|``, also as a ratio to the fp32 run's. LoRA-B starts at zero, so LoRA-A gets no gradient in the first
step. bf16 rounds a step away where it is under half its spacing at the weight, so at a given rate what share of
LoRA-A moves depends on the init's range, +-1/sqrt(fan-in): the tiny model's fan-in is 128 or 512, the 7B's 3584 or
18944. The runs differ from the first rollout on (the bf16 base samples other completions), so compare movement, not
trajectories. Prints a Markdown table and writes ``benchmarks/results/bf16_adapters.json``.

    python benchmarks/bf16_adapters.py                         # 3 runs x 20 steps, 4 games per step
    python benchmarks/bf16_adapters.py --steps 40 --lr 1e-4
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
RUNS = {  # name -> (trainer.precision, model.vlm.dtype, adapters follow the base's conversion)
    "fp32": ("32-true", "float32", False),
    "bf16 adapters": ("bf16-true", "bfloat16", True),
    "fp32 adapters": ("bf16-true", "bfloat16", False),
}


def lora(net, kind: str) -> dict:
    """The ``kind`` (``A`` or ``B``) matrices of the adapter, copied as they are."""
    return {n: p.detach().clone() for n, p in net.named_parameters() if f"lora_{kind}." in n}


def one(name: str, args: argparse.Namespace) -> dict:
    """Run one setting in this process; returns its measures."""
    import torch

    torch.set_num_threads(1)
    import vzero.module
    from vzero.cli.train import VZeroCLI, quiet

    precision, dtype, converted = RUNS[name]
    if converted:  # no exemption: the adapters are converted with the base, as by Lightning alone
        vzero.module.keep_adapter_dtype = lambda fn, model: fn
    start = {}
    on_fit_start = vzero.module.VisionZeroModule.on_fit_start

    def snapshot(module) -> None:
        start.update({kind: lora(module.net, kind) for kind in "AB"})
        on_fit_start(module)

    vzero.module.VisionZeroModule.on_fit_start = snapshot
    work = args.out.parent / name.replace(" ", "-")
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    quiet()
    command = ["fit", "--config", str(ROOT / "configs" / "tiny.yaml"), "--model.vlm.name_or_path", args.model]
    command += ["--trainer.precision", precision, "--model.vlm.dtype", dtype, "--trainer.max_steps", str(args.steps)]
    command += ["--model.mode", "both", "--data.games_per_step", str(args.games), "--seed_everything", str(args.seed)]
    command += ["--model.optimizer.init_args.lr", str(args.lr), "--model.schedule", "null"]
    command += ["--eval.every_n_steps", "0", "--eval.at_start", "false", "--eval.at_end", "false"]
    command += ["--checkpoint.every_n_train_steps", "0"]
    command += ["--trainer.enable_progress_bar", "false", "--tracking_uri", f"sqlite:///{work / 'mlflow.db'}"]
    t0 = time.perf_counter()
    cli = VZeroCLI(args=command)
    seconds = time.perf_counter() - t0
    state = cli.trainer.optimizers[0].state.values()
    record = {
        "run": name,
        "precision": precision,
        "base_dtype": dtype,
        "fit_seconds": round(seconds, 1),
        "adapter_dtypes": sorted({str(p.dtype) for p in lora(cli.model.net, "A").values()}),
        "optimizer_state_dtypes": sorted({str(v.dtype) for s in state for k, v in s.items() if k != "step"}),
    }
    for kind in "AB":
        end = lora(cli.model.net, kind)
        changed = sum(int((end[n] != start[kind][n]).sum()) for n in end)
        total = sum(v.numel() for v in end.values())
        moved = sum(float((end[n].float() - start[kind][n].float()).abs().sum()) for n in end)
        record[kind] = {"entries": total, "changed": changed, "changed_fraction": changed / total, "movement": moved}
    return record


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="model.vlm.name_or_path")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per run")
    parser.add_argument("--lr", type=float, default=1e-5, help="AdamW's learning rate, constant")
    parser.add_argument("--games", type=int, default=4, help="data.games_per_step")
    parser.add_argument("--seed", type=int, default=0, help="seed_everything")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bf16_adapters.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.one:
        args.out.write_text(json.dumps(one(args.one, args), indent=1))
        return {}
    parts = args.out.parent / "bf16_adapters"
    parts.mkdir(exist_ok=True)

    def run(name: str) -> dict:
        part = parts / f"{name.replace(' ', '-')}.json"
        options = ["--model", args.model, "--steps", str(args.steps), "--lr", str(args.lr), "--games", str(args.games)]
        cmd = [sys.executable, __file__, "--one", name, "--seed", str(args.seed), "--out", str(part)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run([*cmd, *options], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise SystemExit(f"the {name!r} run failed:\n{done.stderr[-3000:]}")
        return json.loads(part.read_text())

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, RUNS))
    reference = results[0]
    for r in results:
        for kind in "AB":
            r[kind]["movement_vs_fp32"] = r[kind]["movement"] / reference[kind]["movement"]
    print(f"\n{args.model}, {args.steps} steps at lr {args.lr:g} (constant), {args.games} games per step, mode both\n")
    head = ["run", "precision", "base", "adapters", "AdamW state", "A changed", "A movement vs fp32"]
    head += ["B changed", "B movement vs fp32", "fit s"]
    print("| " + " | ".join(head) + " |\n" + "|---" * len(head) + "|")
    for r in results:
        cells = [r["run"], r["precision"], r["base_dtype"], ",".join(r["adapter_dtypes"])]
        cells += [",".join(r["optimizer_state_dtypes"])]
        for kind in "AB":
            cells += [f"{r[kind]['changed_fraction']:.1%}", f"{r[kind]['movement_vs_fp32']:.2f}x"]
        cells += [f"{r['fit_seconds']:.0f}"]
        print("| " + " | ".join(c.replace("torch.", "") for c in cells) + " |")
    settings = {"model": args.model, "steps": args.steps, "lr": args.lr, "games_per_step": args.games}
    args.out.write_text(json.dumps({**settings, "seed": args.seed, "results": results}, indent=1))
    print(f"wrote {args.out}")
    return {**settings, "results": results}


if __name__ == "__main__":
    main()
