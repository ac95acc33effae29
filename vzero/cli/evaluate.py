"""``vzero evaluate``: answer question suites with a checkpoint, the base model or any model; print a table, write JSON.

::

    vzero evaluate --config configs/tiny.yaml --ckpt_path checkpoints/tiny/<run>/last.ckpt \\
        --suites clevr-qa,clevr-diff --questions 100 --out evaluate/
    vzero evaluate --ckpt_path checkpoints/tiny/<run>/last.ckpt --suites clevr-qa --out evaluate/  # no config
    vzero evaluate --model Qwen/Qwen2.5-VL-7B-Instruct --suites chart-qa:200 --out evaluate/

The model is, in this order: a ``--config`` run's model (the base model, with ``--ckpt_path``'s trained weights when
given; every other option is a ``vzero fit`` option, read the same way), a checkpoint alone (its own record names its
base model and adapter, as ``vzero export`` reads it), or ``--model`` (a hub id, a folder, ``tiny`` or ``tiny-random``).
Each suite (:mod:`vzero.suites`; a name, ``name:questions`` or a ``.jsonl`` file) is answered greedily through the
policy's batched decoder (:mod:`vzero.rollout.suites`). Generated suites take their pictures from the held-out stream
of ``--seed`` (default: a config's training pairs' seed, else 0), never from training pictures.

Prints one row per suite (accuracy with its 95% Wilson interval, the chance and blind baselines, the share of
unparseable answers, the questions, the seconds spent answering) and writes ``evaluate.json`` (the same, per question
kind too) and ``responses.jsonl`` (every question's text, answer and the model's response) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from vzero.cli.runs import CheckpointError, load_checkpoint, load_trained_weights
from vzero.cli.train import quiet
from vzero.model import Policy
from vzero.model.sampling import SamplingConfig
from vzero.rollout.suites import SuiteSpec, answer_suite, parse_suites, response_rows, suite_metrics
from vzero.suites import SUITES, Suite, SuiteError, load_suite

log = logging.getLogger(__name__)


def load_policy(args: argparse.Namespace, rest: list[str]) -> tuple[Policy, str, int | None, int | None]:
    """``(policy, who, seed, suite_tokens)``: the model to evaluate, a line naming it, and a config's training pairs'
    seed and ``eval.suite_tokens`` (None without a config)."""
    if rest:
        from vzero.callbacks import WinRateEvaluation
        from vzero.cli.train import VZeroCLI

        cli = VZeroCLI(args=[*rest, "--trainer.logger=false", "--trainer.enable_progress_bar=false"], run=False)
        module = cli.model
        evaluation = next(c for c in cli.trainer.callbacks if isinstance(c, WinRateEvaluation))
        module.configure_model()
        who = f"the base model ({module.vlm_config.name_or_path})"
        if args.ckpt_path:
            checkpoint = load_checkpoint(args.ckpt_path)
            load_trained_weights(module.net, checkpoint, args.ckpt_path)
            who = f"step {int(checkpoint.get('global_step', 0))} of {args.ckpt_path}"
        module.to(args.device)
        seed = getattr(cli.datamodule.pairs, "seed", None)
        return module.policy, who, seed if isinstance(seed, int) else None, evaluation.suite_tokens
    from vzero.model import load_vlm
    from vzero.tiny import resolve

    if args.ckpt_path:  # as `vzero export` reads it: the checkpoint's own record names the model and its adapter
        from vzero.cli.export import model_config

        checkpoint = load_checkpoint(args.ckpt_path)
        config = model_config(checkpoint.get("hyper_parameters") or {}, args.ckpt_path)
        net, processor = load_vlm(config, name_or_path=resolve(config.name_or_path))
        load_trained_weights(net, checkpoint, args.ckpt_path)
        who = f"step {int(checkpoint.get('global_step', 0))} of {args.ckpt_path}"
        return Policy(net.eval().to(args.device), processor), who, None, None
    net, processor = load_vlm(name_or_path=resolve(args.model), lora=None, dtype=args.dtype)
    return Policy(net.eval().to(args.device), processor), args.model, None, None


def suite_specs(value: str, questions: int) -> list[SuiteSpec]:
    """``--suites``: comma-separated names, ``name:questions`` or files; a name without a count gets ``questions``."""
    specs = parse_suites(value, "--suites")
    given = {s.strip().rpartition(":")[0].strip() for s in value.split(",") if ":" in s}
    return [s if s.name in given else SuiteSpec(s.name, questions) for s in specs]


def baselines(suite: Suite) -> tuple[dict[str, int], float, float]:
    """Questions per kind, and the suite's chance and blind accuracies (each kind's, weighted by its questions)."""
    counts: dict[str, int] = {}
    for kind, _ in suite.answers():
        counts[kind] = counts.get(kind, 0) + 1
    chance, blind = suite.chance(), suite.blind()
    n = len(suite)
    return (
        counts,
        sum(chance[k] * c for k, c in counts.items()) / n,
        sum(blind[k][1] * c for k, c in counts.items()) / n,
    )


def evaluate(policy: Policy, specs: list[SuiteSpec], seed: int, size: tuple[int, int], tokens: int, chunk: int):
    """Every suite's results (a dict per suite) and every response (a dict per question)."""
    results, rows = {}, []
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=tokens)
    for spec in specs:
        suite = load_suite(spec.name, spec.questions, seed, size)
        responses: list = []
        start = time.perf_counter()
        tallies = answer_suite(policy, suite, chunk=chunk, sampling=sampling, responses=responses)
        seconds = time.perf_counter() - start
        metrics = suite_metrics(suite.name, tallies, prefix="")
        counts, chance, blind = baselines(suite)
        kind_chance, kind_blind = suite.chance(), suite.blind()
        overall = tallies["all"]
        results[suite.name] = {
            "accuracy": metrics[f"/{suite.name}/accuracy"],
            "lo": metrics[f"/{suite.name}/accuracy_lo"],
            "hi": metrics[f"/{suite.name}/accuracy_hi"],
            "chance": chance,
            "blind": blind,
            "unparseable": metrics[f"/{suite.name}/unparseable"],
            "n": overall.total,
            "correct": overall.correct,
            "seconds": seconds,
            "kinds": {
                kind: {
                    "accuracy": tallies[kind].accuracy,
                    "n": tallies[kind].total,
                    "correct": tallies[kind].correct,
                    "unparsed": tallies[kind].unparsed,
                    "chance": kind_chance[kind],
                    "blind": kind_blind[kind][1],
                    "blind_answer": kind_blind[kind][0],
                }
                for kind in counts
            },
        }
        rows += [{k: v for k, v in r.items() if k != "images"} for r in response_rows(suite, responses)]
        log.info(f"{suite.name}: {overall.correct}/{overall.total} right in {seconds:.1f} s")
    return results, rows


def table(results: dict) -> str:
    """The results as a Markdown table."""
    lines = [
        "| suite | accuracy [95% CI] | chance | blind | unparseable | n | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['accuracy']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}] | {r['chance']:.3f} | {r['blind']:.3f} "
            f"| {r['unparseable']:.3f} | {r['n']} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def parse_size(value: str) -> tuple[int, int]:
    width, _, height = value.lower().partition("x")
    try:
        return int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be WIDTHxHEIGHT, e.g. 240x160; got {value!r}") from None


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(
        prog="vzero evaluate",
        description="Answer question suites with a checkpoint, the base model or any model: a table and JSON.",
        epilog="Any other option is read as a `vzero fit` option (e.g. --config, --model.*, --data.*).",
        allow_abbrev=False,
    )
    parser.add_argument("--ckpt_path", default=None, help="a checkpoint written by `vzero fit` (needs no config)")
    parser.add_argument("--model", default=None, help="without --config or --ckpt_path: a hub id, a folder or tiny")
    parser.add_argument(
        "--suites", default=",".join(SUITES), help=f"comma-separated: {', '.join(SUITES)}, name:N, or a .jsonl file"
    )
    parser.add_argument("--questions", type=int, default=100, help="questions per generated suite without its own :N")
    parser.add_argument("--out", required=True, help="the folder to write evaluate.json and responses.jsonl into")
    parser.add_argument("--seed", type=int, default=None, help="pictures from this seed's held-out stream")
    parser.add_argument("--size", type=parse_size, default=(240, 160), help="picture size WIDTHxHEIGHT")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="per answer (default: eval.suite_tokens, 128)")
    parser.add_argument("--batch_size", type=int, default=None, help="questions per generate call")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32", help="with --model")
    args, rest = parser.parse_known_args(argv)
    if not rest and not args.ckpt_path and not args.model:
        parser.error("give a model: --config (with --ckpt_path for trained weights), --ckpt_path alone, or --model")
    if rest and args.model:
        parser.error("--model is for evaluating without a config; with --config use --model.vlm.name_or_path")
    for name in ("questions", "max_new_tokens", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    try:
        specs = suite_specs(args.suites, args.questions)
    except ValueError as error:
        parser.error(str(error))
    quiet()
    try:
        policy, who, config_seed, config_tokens = load_policy(args, rest)
        seed = args.seed if args.seed is not None else config_seed or 0
        tokens = args.max_new_tokens or config_tokens or 128
        chunk = args.batch_size or policy.decoding.max_batch_size
        results, rows = evaluate(policy, specs, seed, args.size, tokens, chunk)
    except (CheckpointError, SuiteError) as error:
        raise SystemExit(f"vzero evaluate: error: {error}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": who, "seed": seed, "size": list(args.size), "max_new_tokens": tokens, "suites": results}
    (out / "evaluate.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{who}, greedy, at most {tokens} new tokens per answer:\n")
    print(table(results))
    print(f"\nwrote {out / 'evaluate.json'} and {out / 'responses.jsonl'}")
    return report
