"""The self-supervised stage that turns ``tiny-random`` into ``tiny``: captioning procedural scenes, in game format.

A real VLM arrives pretrained: it can describe a picture and answer in a requested format. A random-init model cannot,
so under RL every answer would be invalid, every reward equal and every advantage zero. This stage supplies that
starting point without labels, from the renderer's own scene metadata:

- clue turns: the real clue prompt, the speaker's own picture, and the target
  ``I see {n} objects. \\boxed{There is a {size} {color} {material} {shape}.}`` about the biggest-looking object of
  *that* picture (it covers the most visual tokens);
- vote turns: the real decision prompt and a random valid answer: ``\\boxed{N/A}`` one time in ten, otherwise
  ``\\boxed{k}`` for another player chosen uniformly (a civilian knows it is not the spy). That teaches the format
  and the rule only; the model learns no spy-finding here, which is RL's job.

Games are drawn from several rule sets (:data:`GAME_CONFIGS`: 2-4 civilians, 1-2 rounds, modified or blank spy), so
the formats hold whichever game RL then plays. A blank picture shows no object, so a blank spy's turn has no caption
and is not trained.

Reading one small object out of ~54 visual tokens behind ~200 text tokens is a needle that a random-init model does
not find in a few hundred steps, so three scaffolds help, none of them in the saved model:

- the vision tower first learns alone, through a linear head that names each visual token's object (or the ground);
- while the language model learns, each object's centre token is copied over its neighbours (the sample's target
  object first), over a radius that shrinks to zero: the model learns to read before it must learn to find;
- the earlier speakers in a prompt's history say a random true clue, so that no target can be copied from them.

It then measures, on held-out scenes with greedy decoding, how often the output parses and how often the clue is true,
next to the chance level and the best blind answer, and writes that to ``pretrain_report.json`` beside the weights.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vzero.data.pairs.clevr import COLORS, MATERIALS, RADIUS, SHAPES, SIZES, ClevrPairs, describe_object
from vzero.game import Game, GameConfig, parse_clue, parse_vote, play_games
from vzero.model.inputs import Picture
from vzero.model.policy import Policy
from vzero.model.sampling import SamplingConfig
from vzero.rl.schedule import WarmupCosine

log = logging.getLogger(__name__)

IMAGE_SIZE = (240, 160)
GAME_CONFIGS = (
    GameConfig(),
    GameConfig(n_civilians=2, clue_rounds=1, spy_view="blank"),
    GameConfig(n_civilians=3, spy_view="blank"),
    GameConfig(n_civilians=2, clue_rounds=2),
)
"""The rule sets the training games are drawn from."""
REPORT = "pretrain_report.json"
ATTRIBUTES = {"size": SIZES, "color": tuple(COLORS), "material": MATERIALS, "shape": SHAPES}


@dataclass(frozen=True)
class PretrainConfig:
    """The recipe of ``tiny``; a changed default changes the cache fingerprint, so the model is rebuilt."""

    steps: int = 200
    """Steps of the whole model on the game's turns, ``batch_size`` turns each."""
    batch_size: int = 24
    lr: float = 3e-3
    vision_lr: float = 1e-3
    """For the vision tower and merger: at the language model's rate their features collapse to a constant."""
    warmup: int = 20
    vision_steps: int = 200
    """Steps of the vision tower alone, on ``batch_size`` pictures each, before the language model joins."""
    train_games: int = 480
    """Distinct training games, replayed with fresh histories and turns (each of its two pictures holds ~0.5 MB)."""
    spread: int = 4
    """Initial radius, in visual tokens, over which each object's centre token is copied."""
    spread_until: float = 0.6
    """Fraction of ``steps`` after which the radius is zero."""
    aux_weight: float = 1.0
    """Weight of the vision tower's naming loss beside the language-model loss while the whole model trains."""
    votes_per_game: int = 2
    """Vote turns kept per game: a few teach the format, and each costs a ~270-token prompt."""
    abstain: float = 0.1
    """How often a vote target is N/A; the others name another player uniformly."""
    games_per_chunk: int = 24
    eval_games: int = 32
    seed: int = 1234


@dataclass
class _Scene:
    picture: Picture
    labels: torch.Tensor  # [h*w, 4]: attribute index + 1 of the object seen at each visual token, 0 for the ground
    cells: list[int]  # each object's centre token, biggest-looking first


@dataclass
class _Sample:
    prompt: list[int]
    target: list[int]
    scene: _Scene


def _depth(scene: dict, obj: dict) -> float:
    cam = scene["camera"]
    pos, fwd = np.asarray(cam["position"]), np.asarray(cam["target"]) - np.asarray(cam["position"])
    return float((np.array([*obj["position"], RADIUS[obj["size"]]]) - pos) @ fwd / np.linalg.norm(fwd))


def biggest_first(scene: dict) -> list[dict]:
    """Objects by apparent size (world radius over depth), biggest first."""
    return sorted(scene["objects"], key=lambda o: -RADIUS[o["size"]] / _depth(scene, o))


def clue_text(obj: dict, n_objects: int) -> str:
    return f"I see {n_objects} objects. \\boxed{{There is {describe_object(obj)}.}}"


def clue_target(scene: dict) -> str:
    """The caption: the object count, then the biggest-looking object, which covers the most visual tokens."""
    objs = biggest_first(scene)
    return clue_text(objs[0], len(objs))


def _scene_info(scene: dict, picture: Picture, size: tuple[int, int]) -> _Scene:
    h, w = int(picture.grid[1]) // 2, int(picture.grid[2]) // 2  # a visual token merges 2x2 patches
    ys, xs = (torch.arange(h) + 0.5) * size[1] / h, (torch.arange(w) + 0.5) * size[0] / w
    focal = min(size[0], 1.5 * size[1]) / 2 / math.tan(math.radians(scene["camera"]["fov"]) / 2)
    labels = torch.zeros(h * w, len(ATTRIBUTES), dtype=torch.long)

    def cell(o):
        return min(h - 1, int(o["pixel"][1] * h / size[1])) * w + min(w - 1, int(o["pixel"][0] * w / size[0]))

    for o in sorted(scene["objects"], key=lambda o: -_depth(scene, o)):  # far to near: a nearer object hides
        r = focal * RADIUS[o["size"]] / _depth(scene, o)
        mask = ((ys[:, None] - o["pixel"][1]) ** 2 + (xs[None, :] - o["pixel"][0]) ** 2 <= r * r).flatten()
        mask[cell(o)] = True
        labels[mask] = torch.tensor([vals.index(o[k]) + 1 for k, vals in ATTRIBUTES.items()])
    # Kept in half precision: hundreds of pictures stay cached for the whole run.
    picture = dataclasses.replace(picture, pixel_values=picture.pixel_values.half())
    return _Scene(picture, labels, [cell(o) for o in biggest_first(scene)])


def _games(policy: Policy, pairs, first: int, n: int) -> list[tuple[dict, list[_Scene]]]:
    """Games ``first .. first + n - 1``: each one's meta and its pictures, original then modified."""
    chosen = [pairs[i] for i in range(first, first + n)]  # each access renders, so once
    pics = iter(policy.inputs.pictures([img for p in chosen for img in (p.original, p.modified)]))
    return [
        (p.meta, [_scene_info(p.meta[k], next(pics), IMAGE_SIZE) for k in ("scene", "modified_scene")]) for p in chosen
    ]


def _chunk(policy: Policy, games: list, first: int, rng: random.Random, cfg: PretrainConfig) -> list[_Sample]:
    """Play the teacher on ``games`` (seeded from ``first``); return their training samples: every clue turn, and
    ``votes_per_game`` vote turns of each game."""
    record: list[list] = [[] for _ in games]

    def teacher(turns):
        outs, votes = [], {}
        for t in turns:
            if t.stage == "clue" and t.view == "blank":
                # Nothing to caption: the game hears a random plausible clue, and the turn is not trained.
                outs.append(clue_text({k: rng.choice(v) for k, v in ATTRIBUTES.items()}, rng.randint(4, 6)))
            elif t.stage == "clue":
                scene = t.meta["modified_scene"] if t.view == "modified" else t.meta["scene"]
                record[t.game].append((t, clue_target(scene)))
                # The game hears a random true clue, so that a later speaker cannot copy its target from the history.
                outs.append(clue_text(rng.choice(scene["objects"]), len(scene["objects"])))
            else:
                # A civilian knows it is not the spy: it names another player, or (one time in ten) abstains.
                others = [p + 1 for p in range(t.n_players) if p != t.player]
                k = 0 if rng.random() < cfg.abstain else rng.choice(others)
                outs.append("I compare the clues with my picture. " + ("\\boxed{N/A}" if k == 0 else f"\\boxed{{{k}}}"))
                votes.setdefault(t.game, []).append((t, outs[-1]))
        for g, cast in votes.items():
            record[g] += rng.sample(cast, min(cfg.votes_per_game, len(cast)))
        return outs

    play_games(
        [Game(rng.choice(GAME_CONFIGS), "clevr", seed=first + i, meta=m, index=i) for i, (m, _) in enumerate(games)],
        teacher,
    )
    eos = policy.processor.tokenizer.eos_token
    samples = []
    for (_, scenes), turns in zip(games, record):
        for turn, target in turns:
            info = scenes[turn.view == "modified"]
            ids = policy.processor.tokenizer(target + eos, add_special_tokens=False).input_ids
            samples.append(_Sample(policy.inputs.prompt_ids(turn.messages, info.picture), ids, info))
    return samples


def _spread(h: int, w: int, cells: list[int], radius: int) -> torch.Tensor:
    """A token index map that copies each cell over the block of ``radius`` around it; earlier cells claim first."""
    index, taken = torch.arange(h * w), torch.zeros(h, w, dtype=torch.bool)
    for c in cells:
        rows, cols = (
            slice(max(0, c // w - radius), c // w + radius + 1),
            slice(max(0, c % w - radius), c % w + radius + 1),
        )
        index.view(h, w)[rows, cols][~taken[rows, cols]] = c
        taken[rows, cols] = True
    return index


def _naming_loss(head: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of naming each token's object attributes (0 = ground) from that token alone, RMS-normalised as
    the language model will see it."""
    logits = head(F.rms_norm(features, (features.shape[-1],))).split([len(v) + 1 for v in ATTRIBUTES.values()], -1)
    return sum(F.cross_entropy(lg, labels[:, k]) for k, lg in enumerate(logits)) / len(logits)


def _encode(visual, scenes: list[_Scene]) -> list[torch.Tensor]:
    """The vision tower's output for each picture, ``[h*w, hidden]``, with gradients."""
    pixels = torch.cat([s.picture.pixel_values for s in scenes]).float()
    out = visual(pixels, grid_thw=torch.stack([s.picture.grid for s in scenes])).pooler_output
    return list(out.split([len(s.labels) for s in scenes]))


def _step_loss(policy: Policy, head, batch: list[_Sample], radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The language-model loss on ``batch`` and the naming loss on its pictures, each encoded once."""
    scenes = list({id(s.scene): s.scene for s in batch}.values())
    feats = dict(zip(map(id, scenes), _encode(policy.model.model.visual, scenes)))
    embeds = []
    for s in batch:
        h, w = int(s.scene.picture.grid[1]) // 2, int(s.scene.picture.grid[2]) // 2
        embeds.append(feats[id(s.scene)][_spread(h, w, s.scene.cells, radius)] if radius > 0 else feats[id(s.scene)])
    inputs = policy.inputs.pack([s.prompt for s in batch], [s.scene.picture for s in batch], [s.target for s in batch])
    inputs.pixel_values, inputs.image_embeds = None, tuple(embeds)
    logp = policy.logprobs(inputs)  # [B, C]
    naming = _naming_loss(head, torch.cat(list(feats.values())), torch.cat([s.labels for s in scenes]))
    return -(logp.sum() / inputs.completion_mask.sum()), naming


def pretrain(source: Path, out: Path, config: PretrainConfig | None = None) -> Path:
    """Train the model at ``source`` on scene captions in game format and save it, with its report, to ``out``."""
    cfg = config or PretrainConfig()
    with torch.random.fork_rng(devices=[]):  # seeded, without moving the caller's random state
        torch.manual_seed(cfg.seed)
        return _pretrain(source, out, cfg)


def _pretrain(source: Path, out: Path, cfg: PretrainConfig) -> Path:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    start, cpu_start = time.perf_counter(), time.process_time()
    rng = random.Random(cfg.seed)
    model = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(source)
    policy = Policy(model, processor)
    n_games = cfg.train_games
    pairs = ClevrPairs(n=n_games + cfg.eval_games, seed=cfg.seed, size=IMAGE_SIZE)
    visual = model.model.visual
    head = torch.nn.Linear(visual.merger.mlp[-1].out_features, sum(len(v) + 1 for v in ATTRIBUTES.values()))
    vision_params = [*visual.parameters(), *head.parameters()]
    model.train()

    games = [g for first in range(0, n_games, 48) for g in _games(policy, pairs, first, min(48, n_games - first))]

    # Stage 1: the vision tower alone, on the training pictures.
    shown = [s for _, scenes in games for s in scenes]
    opt = torch.optim.AdamW(vision_params, lr=cfg.vision_lr, weight_decay=0.0, betas=(0.9, 0.98))
    for step in range(cfg.vision_steps):
        scenes = rng.sample(shown, min(cfg.batch_size, len(shown)))
        loss = _naming_loss(head, torch.cat(_encode(visual, scenes)), torch.cat([s.labels for s in scenes]))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == cfg.vision_steps - 1:
            log.info("tiny pretraining vision step %d/%d: naming loss %.3f", step + 1, cfg.vision_steps, loss.item())
    del shown

    # Stage 2: everything, on the game's turns, while the spread scaffold shrinks to nothing.
    pool: list[_Sample] = []
    next_game = 0

    def next_batch() -> list[_Sample]:
        nonlocal pool, next_game
        while len(pool) < cfg.batch_size:
            first = next_game % n_games  # the seat of the spy and the history change on every replay
            chunk = games[first : first + cfg.games_per_chunk]
            pool += _chunk(policy, chunk, next_game, rng, cfg)
            rng.shuffle(pool)
            next_game += len(chunk)
        batch, pool = pool[: cfg.batch_size], pool[cfg.batch_size :]
        return batch

    vision_ids = {id(p) for p in vision_params}
    groups = [
        dict(params=vision_params, lr=cfg.vision_lr),
        dict(params=[p for p in model.parameters() if id(p) not in vision_ids], lr=cfg.lr),
    ]
    opt = torch.optim.AdamW(groups, weight_decay=0.0, betas=(0.9, 0.98))
    sched = WarmupCosine(warmup=cfg.warmup / cfg.steps).build(opt, cfg.steps)
    losses = []
    for step in range(cfg.steps):
        radius = max(0, math.ceil(cfg.spread * (1 - step / max(1, cfg.spread_until * cfg.steps))))
        loss, naming = _step_loss(policy, head, next_batch(), radius)
        (loss + cfg.aux_weight * naming).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 50 == 0 or step == cfg.steps - 1:
            log.info(
                "tiny pretraining step %d/%d: loss %.3f, naming %.3f", step + 1, cfg.steps, losses[-1], naming.item()
            )
    train_seconds = time.perf_counter() - start

    model.eval().requires_grad_(False)  # frozen, the policy encodes each held-out picture once
    held_out = range(n_games, n_games + cfg.eval_games)
    report = evaluate(Policy(model, processor), pairs, held_out, GameConfig())
    report["vote_format_valid_by_game"] = {
        _name(c): evaluate(Policy(model, processor), pairs, held_out, c)["vote_format_valid"] for c in GAME_CONFIGS[1:]
    }
    report.update(
        steps=cfg.steps,
        vision_steps=cfg.vision_steps,
        batch_size=cfg.batch_size,
        final_loss=round(sum(losses[-20:]) / len(losses[-20:]), 4),
        train_seconds=round(train_seconds, 1),
        total_seconds=round(time.perf_counter() - start, 1),
        cpu_seconds=round(time.process_time() - cpu_start, 1),
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / REPORT).write_text(json.dumps(report, indent=1))
    log.info("tiny pretraining done: %s", report)
    return out


def _name(config: GameConfig) -> str:
    return f"{config.n_civilians} civilians, {config.clue_rounds} rounds, {config.spy_view} spy"


@torch.no_grad()
def evaluate(policy: Policy, pairs, indices, config: GameConfig) -> dict:
    """Greedy play on held-out scenes: format validity of clues and votes, and truth of the clues' content.

    Each content metric ``clue_X_true`` comes with ``clue_X_chance`` (a uniformly random answer) and, where defined,
    ``clue_X_blind`` (the best constant answer, chosen on these very turns: the most a model blind to the picture
    could score)."""
    chosen = [pairs[i] for i in indices]  # each access renders, so once
    pics = policy.inputs.pictures([img for p in chosen for img in (p.original, p.modified)])
    games = [Game(config, "clevr", seed=i, meta=p.meta, index=k) for k, (i, p) in enumerate(zip(indices, chosen))]
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=48)
    counts, targets = Counter(), []
    lo, hi = getattr(pairs, "n_objects", (4, 6))
    n_kinds = math.prod(len(v) for v in ATTRIBUTES.values())

    def answer(turns):
        shown = [pics[2 * t.game + (t.view == "modified")] for t in turns]
        comps = policy.generate([policy.inputs.prompt_ids(t.messages, p) for t, p in zip(turns, shown)], shown, greedy)
        texts = [policy.inputs.text(c.ids) for c in comps]
        for t, text in zip(turns, texts):
            if t.stage == "decision":
                counts["votes"] += 1
                vote = parse_vote(text, t.n_players)
                counts["vote_valid"] += vote != "invalid"
                counts["vote_self"] += vote == t.player
                counts["vote_na"] += vote == "n/a"
                counts["vote_spy"] += vote == games[t.game].spy  # measured only: no target depends on it
                counts["vote_spy_chance"] += 1 / (t.n_players - 1)  # another player, uniformly
                continue
            if t.view == "blank":
                continue  # no objects to be true about
            objs = biggest_first(t.meta["modified_scene"] if t.view == "modified" else t.meta["scene"])
            target = objs[0]
            targets.append({**{k: target[k] for k in ATTRIBUTES}, "count": len(objs)})
            kinds = {tuple(o[k] for k in ATTRIBUTES) for o in objs}
            counts["clues"] += 1
            counts["count_true"] += f"I see {len(objs)} objects" in text
            counts["object_chance"] += len(kinds) / n_kinds
            clue = parse_clue(text)
            counts["clue_valid"] += clue is not None
            if clue is None:
                continue
            words = set(clue.lower().replace(".", " ").split())
            counts["object_true"] += any(all(w in words for w in kind) for kind in kinds)
            for k in ATTRIBUTES:
                counts[f"{k}_true"] += target[k] in words
        return texts

    play_games(games, answer)
    n_clues, n_votes = max(1, counts["clues"]), max(1, counts["votes"])
    report = {
        "eval_games": len(chosen),
        "clue_format_valid": round(counts["clue_valid"] / n_clues, 3),
        "vote_format_valid": round(counts["vote_valid"] / n_votes, 3),
        "vote_self": round(counts["vote_self"] / n_votes, 3),
        "vote_na": round(counts["vote_na"] / n_votes, 3),
        "vote_spy": round(counts["vote_spy"] / n_votes, 3),
        "vote_spy_chance": round(counts["vote_spy_chance"] / n_votes, 3),
        "clue_object_true": round(counts["object_true"] / n_clues, 3),
        "clue_object_chance": round(counts["object_chance"] / n_clues, 3),
    }
    for k in ("count", *ATTRIBUTES):
        blind = max(Counter(t[k] for t in targets).values(), default=0) / n_clues
        chance = 1 / (hi - lo + 1) if k == "count" else 1 / len(ATTRIBUTES[k])
        report[f"clue_{k}_true"] = round(counts[f"{k}_true"] / n_clues, 3)
        report[f"clue_{k}_chance"], report[f"clue_{k}_blind"] = round(chance, 3), round(blind, 3)
    return report
