"""Rollout throughput: vzero's batched engine against a reference-style baseline, and against the hardware ceiling.

Three ways to play the same games (4 civilians + 1 spy, 2 clue rounds, then the civilians' votes):

- engine: ``RolloutEngine.play`` on B games at once (one ``generate`` per round and speaker slot, one for all votes);
- baseline: the reference release's way: one game after another, one ``generate`` per player per turn at batch 1, each
  call preparing its own prompt and picture with the processor;
- ceiling: the engine's exact ``generate`` inputs replayed as plain ``model.generate`` calls with HF's own sampling,
  with no game logic, tokenisation, picture preprocessing or keyed noise. ``efficiency`` = engine tokens/s ÷ ceiling
  tokens/s.

The engine runs once per decoder (``--decoders``), interleaved within each repeat: ``vzero`` (vzero's own loop as
configured by default: prompts' states reused across turns), ``vzero-plain`` (the same loop reusing nothing),
``vzero-compiled`` (the default loop with its step compiled by ``torch.compile``: a CUDA graph on a GPU; each batch
size is played once untimed first, so compiling is not timed) and ``generate`` (HF ``generate``). Every completion
is exactly ``max_new_tokens`` long (EOS is suppressed until then), so all of them generate the same number of tokens
per turn. The baseline plays at most ``--baseline-games`` games per run: it plays games one by
one, so its rate does not depend on B. Figures are medians over ``--repeats`` runs, and ratios are taken within the
same run.

Decode steps: on the engine's largest clue batch, each decoder generates ``--step-tokens`` and 8 tokens; the
difference over the extra steps is the time of one decode step (prefill excluded). Its floor is the time to read the
weights once, ``weight bytes / copy rate`` (the rate measured here by copying a 1 GiB buffer, counting the bytes read
and written), and ``of floor`` = floor / measured step time.

    python benchmarks/rollout_throughput.py --model tiny --batches 1 8 32 --repeats 3
    python benchmarks/rollout_throughput.py --shape 7b --device cuda --dtype bfloat16 --batches 32 128 \
        --baseline-games 1
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
from vzero.model import LoraConfig, load_vlm
from vzero.model.decode import VzeroDecoder
from vzero.model.load import _DTYPES, _attach_lora
from vzero.model.policy import DecodingConfig, Policy
from vzero.model.sampling import SamplingByStage, SamplingConfig
from vzero.rollout import RolloutEngine
from vzero.tiny import resolve

VARIANTS = {
    "vzero": {"decoder": "vzero"},
    "vzero-plain": {"decoder": "vzero", "reuse_prompts_gb": 0.0},
    "vzero-compiled": {"decoder": "vzero", "compile": True},
    "generate": {"decoder": "generate"},
}
"""The engine's decoders: decoding settings by name."""
RATIOS = (("vzero", "generate"), ("vzero", "vzero-plain"), ("vzero-compiled", "vzero"))
"""Engine tokens/s ratios printed when both sides ran."""


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

    def _decode_batch(self, inputs, sampling, *args):
        self.calls.append((inputs, sampling))
        return super()._decode_batch(inputs, sampling, *args)


def seven_b(device: str, dtype: torch.dtype, layers: int | None = None, lora: bool = True):
    """A random-init model of Qwen2.5-VL-7B's exact shape (``layers`` shrinks its depth for a smoke run), with the
    tiny model's tokenizer and processor, and a LoRA r 64 adapter as training attaches it. Returns
    ``(model, processor)``."""
    from transformers import AutoConfig, AutoProcessor, GenerationConfig, Qwen2_5_VLForConditionalGeneration

    path = resolve("tiny-random")
    config = AutoConfig.from_pretrained(path)
    depth = layers or 28
    text = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=depth, num_attention_heads=28)
    for key, value in {
        **text,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "max_position_embeddings": 32768,
    }.items():
        setattr(config.text_config, key, value)
    config.text_config.layer_types = ["full_attention"] * depth
    config.text_config.rope_parameters = {**config.text_config.rope_parameters, "mrope_section": [16, 24, 24]}
    config.text_config.tie_word_embeddings = config.tie_word_embeddings = False
    vision = config.vision_config
    vision.depth, vision.hidden_size, vision.intermediate_size, vision.num_heads = layers or 32, 1280, 3420, 16
    vision.out_hidden_size, vision.fullatt_block_indexes = 3584, [7, 15, 23, 31][: (layers or 32) // 8 or 1]
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    model.generation_config = GenerationConfig.from_pretrained(path)  # the tiny model's EOS and pad ids
    processor = AutoProcessor.from_pretrained(path)
    return (_attach_lora(model.eval(), LoraConfig(r=64, alpha=128)) if lora else model), processor


def copy_rate(device: str, nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """Bytes per second the device moves in a copy (read + written), median of ``repeats``."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * nbytes / statistics.median(times[1:])


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def decode_step_ms(policy: Policy, inputs, decoder: str, tokens: int) -> float:
    """Milliseconds per decode step of ``decoder`` on ``inputs``: (time for ``tokens`` - time for 8) / (tokens - 8)."""
    inputs = inputs.to(policy.device)
    loop = policy.decode if isinstance(policy.decode, VzeroDecoder) else VzeroDecoder(policy.ids)

    def timed(n: int) -> float:
        sampling = SamplingConfig(max_new_tokens=n, min_new_tokens=n)
        keys = torch.arange(inputs.input_ids.shape[0])
        sync(policy.device)
        start = time.perf_counter()
        if decoder.startswith("vzero"):
            loop(policy.model, inputs, sampling, keys)
        else:
            policy.model.generate(**inputs.model_kwargs(), **hf_sampling(sampling), pad_token_id=policy.ids.pad)
        sync(policy.device)
        return time.perf_counter() - start

    timed(8), timed(tokens)  # warm-up (and compilation, for a compiled step)
    return 1000 * (timed(tokens) - timed(8)) / (tokens - 8)


def rows_of(call) -> int:
    return call[0].input_ids.shape[0]


def engine_run(policy: RecordingPolicy, pairs, config, sampling) -> tuple[float, int, float]:
    """Seconds, tokens generated, and the share of prompt tokens whose states came from earlier turns."""
    policy.calls.clear()
    start = time.perf_counter()
    rollout = RolloutEngine(policy).play(pairs, config, sampling)
    seconds = time.perf_counter() - start
    samples = [s for t in rollout.transcripts for s in t.samples]
    tokens = sum(len(s.completion_ids) for s in samples)
    return seconds, tokens, rollout.reused_prompt_tokens / sum(len(s.prompt_ids) for s in samples)


@torch.no_grad()
def ceiling_run(policy: RecordingPolicy) -> tuple[float, int]:
    seconds, tokens = 0.0, 0
    for inputs, sampling in policy.calls:
        kwargs = inputs.model_kwargs()
        start = time.perf_counter()
        out = policy.model.generate(**kwargs, **hf_sampling(sampling), pad_token_id=policy.ids.pad)
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
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=sorted(_DTYPES), default="float32")
    ap.add_argument(
        "--shape", choices=["model", "7b"], default="model", help="7b: random init at Qwen2.5-VL-7B's shape"
    )
    ap.add_argument("--layers", type=int, default=None, help="with --shape 7b: fewer layers, for a smoke run")
    ap.add_argument("--decoders", nargs="+", choices=list(VARIANTS), default=["vzero", "vzero-plain", "generate"])
    ap.add_argument("--step-tokens", type=int, default=40)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/rollout_throughput.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.shape == "7b":
        model, processor = seven_b(args.device, _DTYPES[args.dtype], args.layers)
        args.model = "qwen2.5-vl-7b-shape" + (f"-{args.layers}-layers" if args.layers else "")
    else:
        model, processor = load_vlm(resolve(args.model), dtype=args.dtype)
        model.to(args.device).eval()
    policies = {
        d: RecordingPolicy(model, processor, decoding=DecodingConfig(max_batch_size=256, **VARIANTS[d]))
        for d in args.decoders
    }
    policy = policies[args.decoders[0]]
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    rate = copy_rate(args.device)
    floor_ms = 1000 * weight_bytes / rate
    print(
        f"{args.model}: {weight_bytes / 1e9:.2f} GB of weights; copy rate {rate / 1e9:.1f} GB/s; "
        f"floor {floor_ms:.2f} ms/step"
    )
    config = GameConfig()
    sampling = SamplingByStage(
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
        for name, pol in policies.items():
            if name.endswith("compiled"):
                engine_run(pol, pairs, config, sampling)  # compiles for this batch's shapes
        for _ in range(args.repeats):
            run = {}
            for name, pol in policies.items():  # interleaved: each repeat runs every decoder
                e_s, e_tok, reuse = engine_run(pol, pairs, config, sampling)
                run[f"engine_{name}_tok_s"], run[f"engine_{name}_games_s"] = e_tok / e_s, b / e_s
                run[f"prompt_reuse_{name}"] = reuse
            c_s, c_tok = ceiling_run(policy)
            nb = min(b, args.baseline_games)
            b_s, b_tok = baseline_run(model, processor, pairs[:nb], config, sampling)
            e_tok_s, e_games_s = run[f"engine_{args.decoders[0]}_tok_s"], run[f"engine_{args.decoders[0]}_games_s"]
            clue_call = max((c for c in policy.calls if c[1].max_new_tokens == args.clue_tokens), key=rows_of)
            steps = {d: decode_step_ms(policy, clue_call[0], d, args.step_tokens) for d in args.decoders}
            run.update(
                {
                    "engine_games_s": e_games_s,
                    "engine_tok_s": e_tok_s,
                    "baseline_games_s": nb / b_s,
                    "baseline_tok_s": b_tok / b_s,
                    "ceiling_tok_s": c_tok / c_s,
                    "speedup": e_games_s / (nb / b_s),
                    "efficiency": e_tok_s / (c_tok / c_s),
                    # The speedup an engine with no overhead at all would reach: plain batched generate vs batch 1.
                    "ceiling_speedup": (c_tok / c_s) / (b_tok / b_s),
                    "step_rows": rows_of(clue_call),
                    **{f"step_ms_{d}": ms for d, ms in steps.items()},
                    **{f"of_floor_{d}": floor_ms / ms for d, ms in steps.items()},
                }
            )
            for fast, slow in RATIOS:
                if fast in policies and slow in policies:
                    run[f"{fast}_over_{slow}"] = run[f"engine_{fast}_tok_s"] / run[f"engine_{slow}_tok_s"]
            runs.append(run)
        row = {"games": b, **{k: statistics.median(r[k] for r in runs) for k in runs[0]}, "runs": runs}
        rows.append(row)
        print(
            f"B={b:>3}  engine {row['engine_games_s']:.3f} games/s {row['engine_tok_s']:.0f} tok/s | "
            f"baseline {row['baseline_games_s']:.3f} games/s | speedup {row['speedup']:.1f}x | "
            f"efficiency {row['efficiency']:.2f} | ceiling/baseline {row['ceiling_speedup']:.1f}x | "
            f"prompt reuse {row[f'prompt_reuse_{args.decoders[0]}']:.0%} | "
            + " | ".join(
                f"{d}: {row[f'step_ms_{d}']:.2f} ms/step ({row[f'of_floor_{d}']:.1%} of floor)" for d in args.decoders
            ),
            flush=True,
        )

    print(
        f"\nrollout throughput, model {args.model} on {args.device} ({args.dtype}), 5 players x 2 rounds + votes, "
        f"median of {args.repeats} runs; engine = decoder {args.decoders[0]}"
    )
    head = f"{'B':>3} {'engine games/s':>15} {'engine tok/s':>13} {'baseline games/s':>17} {'baseline tok/s':>15}"
    print(head + f" {'speedup':>8} {'ceiling tok/s':>14} {'efficiency':>11} {'ceiling/baseline':>17}")
    for r in rows:
        print(
            f"{r['games']:>3} {r['engine_games_s']:>15.3f} {r['engine_tok_s']:>13.0f} {r['baseline_games_s']:>17.3f} "
            f"{r['baseline_tok_s']:>15.0f} {r['speedup']:>7.1f}x {r['ceiling_tok_s']:>14.0f} {r['efficiency']:>11.2f} "
            f"{r['ceiling_speedup']:>16.1f}x"
        )
    print(
        f"\ndecode steps on the largest clue batch (floor {floor_ms:.2f} ms/step: {weight_bytes / 1e9:.2f} GB at "
        f"{rate / 1e9:.1f} GB/s)"
    )
    ratios = [f"{fast}_over_{slow}" for fast, slow in RATIOS if f"{fast}_over_{slow}" in rows[0]]
    print(
        f"{'B':>3} {'rows':>5} "
        + " ".join(f"{d + ' ms/step':>24} {d + ' tok/s':>22} {'of floor':>9}" for d in args.decoders)
        + "".join(f" {'engine ' + k.replace('_over_', '/'):>30}" for k in ratios)
    )
    for r in rows:
        cells = [
            f"{r[f'step_ms_{d}']:>24.2f} {r['step_rows'] * 1000 / r[f'step_ms_{d}']:>22.0f} {r[f'of_floor_{d}']:>9.1%}"
            for d in args.decoders
        ]
        print(
            f"{r['games']:>3} {r['step_rows']:>5.0f} " + " ".join(cells) + "".join(f" {r[k]:>29.2f}x" for k in ratios)
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
        "device_name": torch.cuda.get_device_name() if str(args.device).startswith("cuda") else platform.processor(),
        "dtype": args.dtype,
        "decoders": args.decoders,
        "weight_bytes": weight_bytes,
        "copy_rate_bytes_s": rate,
        "floor_ms_per_step": floor_ms,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
