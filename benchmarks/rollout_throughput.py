"""Rollout throughput: vzero's batched engine against a reference-style baseline, and against the hardware ceiling.

Three ways to play the same games (4 civilians + 1 spy, 2 clue rounds, then the civilians' votes):

- engine: ``RolloutEngine.play`` on B games at once (one ``generate`` per round and speaker slot, one for all votes);
- baseline: the reference release's way: one game after another, one ``generate`` per player per turn at batch 1, each
  call preparing its own prompt and picture with the processor;
- ceiling: the engine's exact ``generate`` inputs replayed as plain ``model.generate`` calls with HF's own sampling,
  with no game logic, tokenisation, picture preprocessing or keyed noise. ``efficiency`` = engine tokens/s ÷ ceiling
  tokens/s.

Every completion is exactly ``max_new_tokens`` long (EOS is suppressed until then), so all three generate the same
number of tokens per turn. The baseline plays at most ``--baseline-games`` games per run: it plays games one by one, so
its rate does not depend on B. Figures are medians over ``--repeats`` runs, and ratios are taken within the same run.

    python benchmarks/rollout_throughput.py --model tiny --batches 1 8 32 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from vzero.data.pairs import ClevrPairs
from vzero.game import GameConfig, play_games
from vzero.game.game import Game
from vzero.model import load_vlm
from vzero.model.policy import Policy
from vzero.model.sampling import Sampling, SamplingConfig
from vzero.rollout import RolloutEngine
from vzero.tiny import resolve


def hf_sampling(sampling: SamplingConfig) -> dict:
    """HF ``generate``'s own sampling with the same settings (what a plain HF loop would call)."""
    return {
        "do_sample": True,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": 0,
        "max_new_tokens": sampling.max_new_tokens,
        "min_new_tokens": sampling.min_new_tokens,
    }


class RecordingPolicy(Policy):
    """A Policy that keeps every generate call's packed inputs, for the ceiling replay."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple] = []

    def _generate_call(self, inputs, sampling, *args):
        self.calls.append((inputs, sampling))
        return super()._generate_call(inputs, sampling, *args)


def engine_run(policy: RecordingPolicy, pairs, config, sampling) -> tuple[float, int]:
    policy.calls.clear()
    start = time.perf_counter()
    transcripts = RolloutEngine(policy).play(pairs, config, sampling)
    seconds = time.perf_counter() - start
    tokens = sum(len(s.completion_ids) for t in transcripts for s in t.samples)
    return seconds, tokens


@torch.no_grad()
def ceiling_run(policy: RecordingPolicy) -> tuple[float, int]:
    seconds, tokens = 0.0, 0
    for inputs, sampling in policy.calls:
        kwargs = inputs.model_kwargs()
        start = time.perf_counter()
        out = policy.model.generate(**kwargs, **hf_sampling(sampling), pad_token_id=policy.pad_id)
        seconds += time.perf_counter() - start
        tokens += (out.shape[1] - inputs.input_ids.shape[1]) * out.shape[0]
    return seconds, tokens


@torch.no_grad()
def baseline_run(model, processor, pairs, config, sampling) -> tuple[float, int]:
    """One generate per player per turn at batch 1; the processor prepares each call's prompt and picture."""
    tokens = 0

    def one_at_a_time(turns):
        nonlocal tokens
        texts = []
        for t in turns:
            pair = pairs[t.game]
            image = pair.original if t.view == "original" else pair.modified
            chat = processor.apply_chat_template(t.messages, add_generation_prompt=True)
            inputs = processor(text=[chat], images=[image], return_tensors="pt")
            out = model.generate(**inputs, **hf_sampling(sampling.for_stage(t.stage)))
            new = out[0, inputs["input_ids"].shape[1] :]
            tokens += len(new)
            texts.append(processor.tokenizer.decode(new, skip_special_tokens=True))
        return texts

    start = time.perf_counter()
    for i in range(len(pairs)):
        game = Game(config, pairs[i].domain, seed=i, meta=pairs[i].meta, index=i)
        play_games([game], one_at_a_time)
    return time.perf_counter() - start, tokens


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-games", type=int, default=8)
    ap.add_argument("--clue-tokens", type=int, default=32)
    ap.add_argument("--decision-tokens", type=int, default=24)
    ap.add_argument("--size", type=int, nargs=2, default=[240, 160])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/rollout_throughput.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, processor = load_vlm(resolve(args.model))
    model.eval()
    policy = RecordingPolicy(model, processor, max_batch_size=256)
    config = GameConfig()
    sampling = Sampling(
        clue=SamplingConfig(max_new_tokens=args.clue_tokens, min_new_tokens=args.clue_tokens),
        decision=SamplingConfig(max_new_tokens=args.decision_tokens, min_new_tokens=args.decision_tokens),
    )
    source = ClevrPairs(n=max(args.batches), seed=0, size=tuple(args.size))
    all_pairs = [source[i] for i in range(max(args.batches))]
    engine_run(policy, all_pairs[:2], config, sampling)  # warm-up

    rows = []
    for b in args.batches:
        pairs = all_pairs[:b]
        runs = []
        for _ in range(args.repeats):
            e_s, e_tok = engine_run(policy, pairs, config, sampling)
            c_s, c_tok = ceiling_run(policy)
            nb = min(b, args.baseline_games)
            b_s, b_tok = baseline_run(model, processor, pairs[:nb], config, sampling)
            runs.append(
                {
                    "engine_games_s": b / e_s,
                    "engine_tok_s": e_tok / e_s,
                    "baseline_games_s": nb / b_s,
                    "baseline_tok_s": b_tok / b_s,
                    "ceiling_tok_s": c_tok / c_s,
                    "speedup": (b / e_s) / (nb / b_s),
                    "efficiency": (e_tok / e_s) / (c_tok / c_s),
                    # The speedup an engine with no overhead at all would reach: plain batched generate vs batch 1.
                    "ceiling_speedup": (c_tok / c_s) / (b_tok / b_s),
                }
            )
        row = {"games": b, **{k: statistics.median(r[k] for r in runs) for k in runs[0]}, "runs": runs}
        rows.append(row)
        print(
            f"B={b:>3}  engine {row['engine_games_s']:.3f} games/s {row['engine_tok_s']:.0f} tok/s | "
            f"baseline {row['baseline_games_s']:.3f} games/s | speedup {row['speedup']:.1f}x | "
            f"efficiency {row['efficiency']:.2f} | ceiling/baseline {row['ceiling_speedup']:.1f}x",
            flush=True,
        )

    print(f"\nrollout throughput, model {args.model}, 5 players x 2 rounds + votes, median of {args.repeats} runs")
    head = f"{'B':>3} {'engine games/s':>15} {'engine tok/s':>13} {'baseline games/s':>17} {'baseline tok/s':>15}"
    print(head + f" {'speedup':>8} {'ceiling tok/s':>14} {'efficiency':>11} {'ceiling/baseline':>17}")
    for r in rows:
        print(
            f"{r['games']:>3} {r['engine_games_s']:>15.3f} {r['engine_tok_s']:>13.0f} {r['baseline_games_s']:>17.3f} "
            f"{r['baseline_tok_s']:>15.0f} {r['speedup']:>7.1f}x {r['ceiling_tok_s']:>14.0f} {r['efficiency']:>11.2f} "
            f"{r['ceiling_speedup']:>16.1f}x"
        )
    result = {
        "benchmark": "rollout_throughput",
        "model": args.model,
        "clue_tokens": args.clue_tokens,
        "decision_tokens": args.decision_tokens,
        "image_size": args.size,
        "threads": args.threads,
        "repeats": args.repeats,
        "targets": {"speedup_at_32": 12.0, "efficiency": 0.8},
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count()},
        "device": str(policy.device),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
