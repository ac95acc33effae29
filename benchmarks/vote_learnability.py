"""What limits learning on the tiny model: is the spy findable from a vote prompt, and can the model learn to find it?

A diagnostic, not a recipe: it fits the vote to the true spy with direct supervision, which training never does
(spy-finding in vzero comes from RL only). If even direct supervision cannot teach the tiny model to name the spy
within a few hundred steps, RL with its far noisier signal cannot either, and the limit is the model, not the RL.

1. Information: the tiny model plays the games of ``configs/tiny_learn.yaml`` (its clues sampled as in training);
   simple rules on the colours the clues name say how findable the spy is from the clue text alone: the player
   whose colour differs from the voter's own clue, the odd colour out, "anyone but me", and chance.
2. Learnability: the vote turns of those games, split into train and held-out sets; LoRA (as in training) is fitted
   by cross-entropy on ``\\boxed{spy}`` for ``--steps`` steps of ``--batch`` turns; the held-out accuracy of greedy
   votes and the loss of the vote's tokens (against ln 3, a uniform guess among 3 players) are reported every
   ``--every`` steps.

    python benchmarks/vote_learnability.py --games 640 --steps 400
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from pathlib import Path

import torch

from vzero.data.pairs import ClevrPairs
from vzero.data.pairs.clevr import COLORS
from vzero.game import GameConfig, Stage, parse_vote
from vzero.model import LoraConfig, Policy, load_vlm
from vzero.model.sampling import SamplingByStage, SamplingConfig
from vzero.rollout import RolloutEngine
from vzero.tiny import resolve

ANSWER = "I compare the clues with my picture. \\boxed{{{k}}}"


def colour(clue: str | None) -> str | None:
    words = (clue or "").lower().replace(".", " ").split()
    return next((w for w in words if w in COLORS), None)


def rules(transcripts, rng: random.Random) -> dict[str, float]:
    """Accuracy of text-only voting rules, over every civilian's vote."""
    hits = {"differs from my clue": 0, "odd colour out": 0, "anyone but me": 0, "chance": 0}
    n = 0
    for t in transcripts:
        colours = [colour(c) for c in t.clues[-1]]
        players = range(len(colours))
        for voter in (p for p in players if p != t.spy):
            others = [p for p in players if p != voter]
            differs = [p for p in others if colours[p] != colours[voter]] or others
            odd = [p for p in players if colours.count(colours[p]) == 1] or list(players)
            hits["differs from my clue"] += rng.choice(differs) == t.spy
            hits["odd colour out"] += rng.choice(odd) == t.spy
            hits["anyone but me"] += rng.choice(others) == t.spy
            hits["chance"] += rng.choice(list(players)) == t.spy
            n += 1
    return {k: v / n for k, v in hits.items()}


@torch.no_grad()
def held_out_accuracy(policy: Policy, turns: list) -> float:
    greedy = SamplingConfig(temperature=0, max_new_tokens=24)
    hits = 0
    for lo in range(0, len(turns), 64):
        chunk = turns[lo : lo + 64]
        comps = policy.generate([x["prompt"] for x in chunk], [x["picture"] for x in chunk], greedy)
        hits += sum(parse_vote(policy.inputs.text(c.ids), x["players"]) == x["spy"] for c, x in zip(comps, chunk))
    return hits / len(turns)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--games", type=int, default=640)
    ap.add_argument("--held-out", type=int, default=256, help="vote turns kept for the accuracy")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/vote_learnability.json"))
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    model, processor = load_vlm(resolve(args.model), lora=LoraConfig())
    policy = Policy(model, processor)
    game = GameConfig(n_civilians=2, clue_rounds=1, spy_view="blank", votes_per_voter=1)
    sampling = SamplingByStage(SamplingConfig(temperature=0.5, max_new_tokens=32), SamplingConfig(max_new_tokens=24))
    pairs = ClevrPairs(n=args.games, seed=args.seed + 7, size=(240, 160))
    transcripts, turns = [], []
    for lo in range(0, args.games, 64):
        chunk = [pairs[i] for i in range(lo, min(args.games, lo + 64))]
        engine = RolloutEngine(policy)
        played = engine.play(chunk, game, sampling, seeds=range(lo, lo + len(chunk)), sample_seed=lo).transcripts
        transcripts += played
        for t in played:
            for s in t.samples:
                if s.turn.stage == Stage.DECISION:
                    turns.append({"prompt": s.prompt_ids, "picture": s.picture, "spy": t.spy, "players": 3})
    information = rules(transcripts, rng)
    rng.shuffle(turns)
    test, train = turns[: args.held_out], turns[args.held_out :]
    eos = processor.tokenizer.eos_token
    for x in train:
        x["target"] = processor.tokenizer(ANSWER.format(k=x["spy"] + 1) + eos, add_special_tokens=False).input_ids

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    curve = [{"step": 0, "held_out_accuracy": held_out_accuracy(policy, test), "vote_loss": None}]
    losses = []
    for step in range(1, args.steps + 1):
        batch = rng.sample(train, args.batch)
        inputs = policy.inputs.pack(
            [x["prompt"] for x in batch], [x["picture"] for x in batch], [x["target"] for x in batch]
        )
        logp = policy.logprobs(inputs)  # [B, C]
        vote = torch.zeros_like(logp)
        vote[:, -3] = 1.0  # the token naming the player: "...{k}" "}" EOS, counted from the end
        loss = -(logp * vote).sum() / len(batch)
        (-(logp * inputs.completion_mask).sum() / inputs.completion_mask.sum()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % args.every == 0:
            row = {"step": step, "held_out_accuracy": held_out_accuracy(policy, test)}
            row["vote_loss"] = statistics.fmean(losses[-args.every :])
            curve.append(row)
            print(f"step {step}: held-out accuracy {row['held_out_accuracy']:.3f}, vote loss {row['vote_loss']:.3f}")

    print(
        f"\nvote learnability, {len(transcripts)} games (2 civilians + a blank spy, 1 round), {len(turns)} vote turns"
    )
    print("information in the clue text (accuracy of text-only rules on the colours the clues name):")
    for k, v in information.items():
        print(f"  {k:<24} {v:.3f}")
    print(f"direct supervision of the vote (LoRA, lr {args.lr}, batch {args.batch}); ln 3 = {math.log(3):.3f}:")
    for r in curve:
        loss = "-" if r["vote_loss"] is None else f"{r['vote_loss']:.3f}"
        print(f"  step {r['step']:>4}: held-out accuracy {r['held_out_accuracy']:.3f}, vote-token loss {loss}")
    result = {"benchmark": "vote_learnability", "args": {k: str(v) for k, v in vars(args).items()}}
    result.update(information=information, supervised=curve, vote_turns=len(turns))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
