"""The one command that rebuilds the shipped ``tiny`` from scratch: the random-init build, the self-supervised stage,
and the manifest of SHA-256s that every load checks (:mod:`vzero.tiny.manifest`)::

    python -m vzero.tiny.recipe                      # rewrite vzero/tiny/shipped (about 22 minutes on 2 cores)
    python -m vzero.tiny.recipe --out /tmp/tiny      # elsewhere, e.g. to compare with the shipped files
    python -m vzero.tiny.recipe --remeasure          # only measure the shipped model again (its report and manifest)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from vzero.tiny import build, pretrain, report
from vzero.tiny.cache import PRETRAINED_RECIPE, recipe_fingerprint
from vzero.tiny.manifest import REBUILD, SHIPPED, write_manifest


def rebuild(out: Path, config=None, seed: int = 0) -> dict:
    """Build ``tiny`` from scratch into ``out`` (the random-init model, then pretraining) and write its manifest.

    ``out`` is replaced only once the new files are complete."""
    cfg = config or pretrain.PretrainConfig()
    start, cpu = time.perf_counter(), time.process_time()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        source = build.build_random(Path(tmp) / "random", seed)
        built = pretrain.pretrain(source, Path(tmp) / "tiny", cfg)
        manifest = write_manifest(
            built,
            recipe=REBUILD,
            random_seed=seed,
            pretrain=dataclasses.asdict(cfg),
            fingerprint=recipe_fingerprint(PRETRAINED_RECIPE),
            build_seconds=round(time.perf_counter() - start, 1),
            build_cpu_seconds=round(time.process_time() - cpu, 1),
            threads=torch.get_num_threads(),
        )
        if out.exists():
            shutil.rmtree(out)
        os.replace(built, out)
    return manifest


def main(argv: list[str] | None = None) -> None:
    PretrainConfig = pretrain.PretrainConfig
    parser = argparse.ArgumentParser(prog=REBUILD, description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SHIPPED, help="folder to write (default: the shipped one)")
    parser.add_argument("--steps", type=int, help="override PretrainConfig.steps (for a quick check)")
    parser.add_argument("--reading-steps", type=int, help="override PretrainConfig.reading_steps")
    parser.add_argument("--vision-steps", type=int, help="override PretrainConfig.vision_steps")
    parser.add_argument("--train-games", type=int, help="override PretrainConfig.train_games")
    parser.add_argument("--eval-games", type=int, help="override PretrainConfig.eval_games")
    parser.add_argument("--prior", type=float, help="override PretrainConfig.prior")
    parser.add_argument("--remeasure", action="store_true", help="rewrite the report of the model at --out, untrained")
    args = parser.parse_args(argv)
    if args.remeasure:
        measured = report.remeasure(args.out, pretrain.GAME_CONFIGS[1:], pretrain.IMAGE_SIZE)
        print(f"{args.out}: remeasured on {measured['eval_games']} held-out games")
        return
    overrides = {
        k: v
        for k, v in {
            "steps": args.steps,
            "reading_steps": args.reading_steps,
            "vision_steps": args.vision_steps,
            "train_games": args.train_games,
            "eval_games": args.eval_games,
            "prior": args.prior,
        }.items()
        if v is not None
    }
    if args.steps is not None:  # the warm-up keeps its share of a shortened run
        overrides["warmup"] = min(PretrainConfig.warmup, args.steps // 10)
    manifest = rebuild(args.out, PretrainConfig(**overrides))
    total = sum(f["bytes"] for f in manifest["files"].values()) / 2**20
    print(f"{args.out}: {len(manifest['files'])} files, {total:.1f} MiB, built in {manifest['build_seconds']} s")


if __name__ == "__main__":
    main()
