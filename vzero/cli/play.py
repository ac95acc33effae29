"""``vzero play``: play games with a checkpoint (or the base model) and write their transcripts.

::

    vzero play --config configs/tiny.yaml --ckpt_path checkpoints/tiny/<run>/last.ckpt --games 8 --out play/

plays ``--games`` games on the evaluation's held-out pairs (``eval.pairs``, or pairs the training source holds out),
seated and keyed as the evaluation seats and keys them. ``--against self`` (the default) lets the policy play every
seat; ``--against reference`` plays half the games with it as the civilians against the frozen reference as the spy,
and half the other way round, as the win-rate evaluation does. Writes ``transcripts.html`` and ``transcripts.jsonl``
into ``--out`` and prints a one-line summary. Every other option is a ``vzero fit`` option (``--model.*``, ``--data.*``,
``--eval.*``), read the same way; nothing is logged to MLflow.
"""

from __future__ import annotations

import argparse
import logging
import math

import torch

from vzero.callbacks import WinRateEvaluation
from vzero.cli.runs import CheckpointError, load_checkpoint, load_trained_weights
from vzero.cli.train import VZeroCLI, quiet
from vzero.rollout.engine import RolloutEngine
from vzero.rollout.match import play_match, summary, win_counts, win_rates
from vzero.rollout.metrics import vote_counts
from vzero.rollout.transcripts import write_transcripts

log = logging.getLogger(__name__)


def self_summary(transcripts: list) -> str:
    """One line: who won, and how the votes went."""
    n = len(transcripts)
    found = sum(t.civilians_win for t in transcripts)
    votes = vote_counts(transcripts)
    total = max(1, votes["votes"])
    return (
        f"{n} games against itself: the civilians found the spy in {found} ({found / max(1, n):.3f}); "
        f"votes: spy found {votes['correct'] / total:.3f}, N/A {votes['na'] / total:.3f}"
    )


def play(argv: list[str]) -> str:
    parser = argparse.ArgumentParser(
        prog="vzero play",
        description="Play games with a checkpoint (or the base model) and write their transcripts.",
        epilog="Any other option is read as a `vzero fit` option (e.g. --config, --model.*, --data.*).",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--ckpt_path", default=None, help="a checkpoint written by `vzero fit`; default: the base model"
    )
    parser.add_argument("--games", type=int, default=8, help="games to play (even with --against reference)")
    parser.add_argument("--out", required=True, help="the folder to write transcripts.html and transcripts.jsonl into")
    parser.add_argument("--against", choices=("self", "reference"), default="self", help="who the policy plays")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args, rest = parser.parse_known_args(argv)
    if args.games < 1 or (args.against == "reference" and args.games % 2):
        parser.error(f"--games must be >= 1, and even with --against reference; got {args.games}")

    cli = VZeroCLI(args=[*rest, "--trainer.logger=false", "--trainer.enable_progress_bar=false"], run=False)
    module, datamodule = cli.model, cli.datamodule
    evaluation = next(c for c in cli.trainer.callbacks if isinstance(c, WinRateEvaluation))
    module.configure_model()
    step = 0
    if args.ckpt_path:
        try:
            checkpoint = load_checkpoint(args.ckpt_path)
            load_trained_weights(module.net, checkpoint, args.ckpt_path)
            step = int(checkpoint.get("global_step", 0))
        except CheckpointError as error:
            raise SystemExit(f"vzero play: error: {error}") from None
    module.to(args.device)
    if module.policy.reference_copy is not None:
        module.policy.reference_copy.to(args.device)

    n_pairs = math.ceil(args.games / 2) if args.against == "reference" else args.games
    try:
        pairs = evaluation.evaluation_pairs(datamodule.pairs, n_pairs)
    except ValueError as error:
        raise SystemExit(f"vzero play: error: --games {args.games}: {error}") from None
    seeds = [evaluation.seed + i for i in range(n_pairs)]
    engine = RolloutEngine(module.policy)
    sampling = evaluation.sampling or datamodule.sampling
    who = f"step {step} of {args.ckpt_path}" if args.ckpt_path else "the base model"

    if args.against == "self":
        with torch.no_grad(), module.policy.frozen():
            transcripts = engine.play(pairs, datamodule.game, sampling, seeds, sample_seed=evaluation.seed).transcripts
        write_transcripts(args.out, pairs, transcripts, f"{who}, against itself")
        line = self_summary(transcripts)
    else:
        as_civilians, as_spy = play_match(engine, pairs, datamodule.game, sampling, seeds, evaluation.seed)
        title = f"{who} against the frozen reference (games 1-{n_pairs}: as civilians; then as the spy)"
        write_transcripts(args.out, [*pairs, *pairs], [*as_civilians, *as_spy], title)
        line = summary(step, win_rates(win_counts(as_civilians, as_spy)))
    print(line)
    print(f"wrote {args.out}/transcripts.html and transcripts.jsonl")
    return line


def main(argv: list[str]) -> None:
    quiet()
    play(argv)
