"""The self-supervised stage that turns ``tiny-random`` into ``tiny``: captioning procedural scenes, in game format.

A real VLM arrives pretrained: it can describe a picture and answer in a requested format. A random-init model cannot,
so under RL every answer would be invalid, every reward equal and every advantage zero. This stage supplies that
starting point without labels, from the renderer's own scene metadata:

- clue turns: the real clue prompt, the speaker's own picture, and the target
  ``I see {n} objects. \\boxed{There is a {size} {color} {material} {shape}.}`` about an object in *that* picture;
- vote turns: the real decision prompt and a uniformly random valid answer (``\\boxed{k}`` or ``\\boxed{N/A}``), which
  teaches the format only. The model learns no spy-finding here; that is RL's job.

It then measures, on held-out scenes with greedy decoding, how often the output parses and how often the described
object (and each attribute) is really in the picture, and writes that to ``pretrain_report.json`` beside the weights.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vzero.data.pairs.clevr import ClevrPairs, describe_object
from vzero.game import Game, GameConfig, parse_clue, parse_vote, play_games
from vzero.model.policy import Picture, Policy
from vzero.model.sampling import SamplingConfig

log = logging.getLogger(__name__)

IMAGE_SIZE = (240, 160)
REPORT = "pretrain_report.json"


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 500
    batch_size: int = 24
    lr: float = 3e-3
    warmup: int = 30
    games_per_chunk: int = 48
    eval_games: int = 16
    seed: int = 1234


@dataclass
class _Sample:
    prompt: list[int]
    target: list[int]
    picture: Picture
    stage: str


def _teacher_games(pairs, first: int, n: int, rng: random.Random, config: GameConfig):
    """Play ``n`` games whose answers are the training targets; return (turn, target text) for every turn."""
    games = [Game(config, "clevr", seed=first + i, meta=pairs[first + i].meta, index=i) for i in range(n)]
    record = []

    def teacher(turns):
        outs = []
        for t in turns:
            if t.stage == "clue":
                scene = t.meta["modified_scene"] if t.view == "modified" else t.meta["scene"]
                outs.append(clue_target(scene["objects"], t.round))
            else:
                k = rng.randint(0, t.n_players)
                outs.append("I compare the clues with my picture. " + ("\\boxed{N/A}" if k == 0 else f"\\boxed{{{k}}}"))
        record.extend(zip(turns, outs))
        return outs

    play_games(games, teacher)
    return record


def nearest_first(objects: list[dict]) -> list[dict]:
    """Objects from the camera outwards: lower in the picture is nearer."""
    return sorted(objects, key=lambda o: -o["pixel"][1])


def clue_target(objects: list[dict], round_: int) -> str:
    """The caption a speaker learns to give in round ``round_``: the object count, then its nearest object, or the
    next nearest in later rounds. A deterministic target teaches faster than a random object would."""
    obj = nearest_first(objects)[round_ % len(objects)]
    return f"I see {len(objects)} objects. \\boxed{{There is a {describe_object(obj)}.}}"


def _chunk(policy: Policy, pairs, first: int, n: int, rng: random.Random, config: GameConfig) -> list[_Sample]:
    pics = policy.pictures([img for i in range(first, first + n) for img in (pairs[i].original, pairs[i].modified)])
    eos = policy.processor.tokenizer.eos_token
    samples = []
    for turn, target in _teacher_games(pairs, first, n, rng, config):
        picture = pics[2 * turn.game + (turn.view == "modified")]
        prompt = policy.prompt_ids(turn.messages, picture)
        ids = policy.processor.tokenizer(target + eos, add_special_tokens=False).input_ids
        samples.append(_Sample(prompt, ids, picture, turn.stage))
    rng.shuffle(samples)
    return samples


def _loss(policy: Policy, batch: list[_Sample]) -> torch.Tensor:
    inputs = policy.pack([s.prompt for s in batch], [s.picture for s in batch], [s.target for s in batch])
    logp = policy.logprobs(inputs)  # [B, C]
    return -(logp.sum() / inputs.completion_mask.sum())


def pretrain(source: Path, out: Path, config: PretrainConfig | None = None) -> Path:
    """Train the model at ``source`` on scene captions in game format and save it, with its report, to ``out``."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    cfg = config or PretrainConfig()
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(source)
    policy = Policy(model, processor)
    game_config = GameConfig()
    samples_per_game = game_config.n_players * game_config.clue_rounds + game_config.n_civilians
    n_games = math.ceil(cfg.steps * cfg.batch_size / samples_per_game)
    pairs = ClevrPairs(n=n_games + cfg.eval_games, seed=cfg.seed, size=IMAGE_SIZE)

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg.warmup, cfg.steps))
    model.train()
    pool: list[_Sample] = []
    next_game, losses = 0, []
    for step in range(cfg.steps):
        if len(pool) < cfg.batch_size:
            n = min(cfg.games_per_chunk, n_games - next_game) or cfg.games_per_chunk
            pool += _chunk(policy, pairs, next_game % n_games, n, rng, game_config)
            next_game += n
        batch, pool = pool[: cfg.batch_size], pool[cfg.batch_size :]
        loss = _loss(policy, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 50 == 0 or step == cfg.steps - 1:
            log.info("tiny pretraining step %d/%d: loss %.3f", step + 1, cfg.steps, loss.item())
    train_seconds = time.perf_counter() - start

    model.eval()
    report = evaluate(policy, pairs, range(n_games, n_games + cfg.eval_games), game_config)
    report.update(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        train_seconds=round(train_seconds, 1),
        final_loss=round(sum(losses[-20:]) / len(losses[-20:]), 4),
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / REPORT).write_text(json.dumps(report, indent=1))
    log.info("tiny pretraining done: %s", report)
    return out


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@torch.no_grad()
def evaluate(policy: Policy, pairs, indices, config: GameConfig) -> dict:
    """Greedy play on held-out scenes: format validity of clues and votes, and truth of the clues' content."""
    indices = list(indices)
    pics = policy.pictures([img for i in indices for img in (pairs[i].original, pairs[i].modified)])
    games = [Game(config, "clevr", seed=i, meta=pairs[i].meta, index=k) for k, i in enumerate(indices)]
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=48)
    counts = {"clues": 0, "clue_valid": 0, "object_true": 0, "count_true": 0, "votes": 0, "vote_valid": 0}
    attr_true = {"size": 0, "color": 0, "material": 0, "shape": 0}

    def answer(turns):
        prompts = [policy.prompt_ids(t.messages, pics[2 * t.game + (t.view == "modified")]) for t in turns]
        comps, _ = policy.generate(prompts, [pics[2 * t.game + (t.view == "modified")] for t in turns], greedy)
        texts = [policy.decode(c.ids) for c in comps]
        for t, text in zip(turns, texts):
            if t.stage == "decision":
                counts["votes"] += 1
                counts["vote_valid"] += parse_vote(text, t.n_players) != "invalid"
                continue
            objs = (t.meta["modified_scene"] if t.view == "modified" else t.meta["scene"])["objects"]
            target = nearest_first(objs)[t.round % len(objs)]
            counts["clues"] += 1
            clue = parse_clue(text)
            counts["clue_valid"] += clue is not None
            counts["count_true"] += f"I see {len(objs)} objects" in text
            if clue is None:
                continue
            words = set(clue.lower().replace(".", " ").split())
            counts["object_true"] += any(all(o[k] in words for k in attr_true) for o in objs)
            for k in attr_true:
                attr_true[k] += target[k] in words
        return texts

    play_games(games, answer)
    n_clues, n_votes = max(1, counts["clues"]), max(1, counts["votes"])
    return {
        "eval_games": len(indices),
        "clue_format_valid": round(counts["clue_valid"] / n_clues, 3),
        "vote_format_valid": round(counts["vote_valid"] / n_votes, 3),
        "clue_object_true": round(counts["object_true"] / n_clues, 3),
        "clue_count_true": round(counts["count_true"] / n_clues, 3),
        **{f"clue_{k}_true": round(v / n_clues, 3) for k, v in attr_true.items()},
    }
