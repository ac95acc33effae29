"""The self-supervised stage that turns ``tiny-random`` into ``tiny``: the game's skills, not its answers.

A real VLM arrives pretrained: it can describe a picture, read a conversation and answer in a requested format. A
random-init model cannot, so under RL every answer would be invalid, every reward equal and every advantage zero. This
stage supplies that starting point without labels, from the renderer's metadata and the game's own text
(:mod:`vzero.tiny.targets`), on games played by a scripted teacher:

- clue turns: the real clue prompt, the speaker's own picture, and its caption as the target;
- vote turns: the real decision prompt, and the voter's notes (each other player's last clue copied, and whether it
  names the voter's own colour) followed by a random valid vote: ``\\boxed{N/A}`` one time in ten, otherwise
  another player chosen uniformly (a civilian knows it is not the spy), except that 3 votes in 10 (``prior``) name
  one of the players the notes mark ``different`` when they mark some but not all: a weak prior from a text rule.
  Nothing here depends on who the spy is: the notes are a function of the clue text; without the prior RL did not
  link them to the vote (README, "Does training help?"), with it RL sharpens that link.

Games are drawn from several rule sets (:data:`GAME_CONFIGS`: 2-4 civilians, 1-2 rounds, modified or blank spy), so
the formats hold whichever game RL then plays. A blank picture shows no object, so a blank spy's turn has no caption
and is not trained.

Three stages, in this order:

1. reading: the language model alone learns the notes on text-only vote turns (the picture left out of the prompt).
   The reading is learnt far sooner without ~54 visual tokens in the prompt, and it carries over once they are back;
2. seeing: the vision tower alone learns, through a linear head that names each visual token's object (or the
   ground), none of it in the saved model;
3. playing: the whole model on clue and vote turns with their pictures. Reading one small object out of ~54 visual
   tokens is a needle a young model does not find in a few hundred steps, so while it learns, each object's centre
   token is copied over its neighbours (the sample's target object first), over a radius that shrinks to zero.

In the teacher's games a civilian says its own caption three times in four (so that the notes see matching clues as
they will under RL) and a random true clue otherwise; a clue turn whose caption was already said in that game is not
trained, so no target can be copied from the history.

It then measures each skill on held-out games with greedy decoding (:mod:`vzero.tiny.report`) and writes that to
``pretrain_report.json`` beside the weights.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vzero.data.pairs.clevr import RADIUS, ClevrPairs
from vzero.game import Game, GameConfig, last_clues, parse_clue, play_games
from vzero.model.inputs import Picture
from vzero.model.policy import Policy
from vzero.rl.schedule import WarmupCosine
from vzero.tiny.report import measure
from vzero.tiny.targets import ATTRIBUTES, biggest_first, clue_target, clue_text, depth, notes, verdicts

log = logging.getLogger(__name__)

IMAGE_SIZE = (240, 160)
GAME_CONFIGS = (
    GameConfig(),
    GameConfig(n_civilians=2, clue_rounds=1, spy_view="blank"),
    GameConfig(n_civilians=3, clue_rounds=1, spy_view="blank"),
    GameConfig(n_civilians=3, spy_view="blank"),
    GameConfig(n_civilians=2, clue_rounds=2),
)
"""The rule sets the training games are drawn from."""
FIRST_READ = GAME_CONFIGS[1:3]
"""The short games (3 or 4 players, 1 round) that the reading stage starts on: copying is found far sooner in them,
and carries over to the longer games."""
REPORT = "pretrain_report.json"


@dataclass(frozen=True)
class PretrainConfig:
    """The recipe of ``tiny``; a changed default changes the cache fingerprint, so the model is rebuilt."""

    reading_steps: int = 1500
    """Steps of the language model alone on text-only vote turns (stage 1), ``batch_size`` turns each."""
    reading_lr: float = 1e-3
    reading_short: float = 0.8
    """Fraction of ``reading_steps`` on :data:`FIRST_READ` alone, before every rule set."""
    vision_steps: int = 200
    """Steps of the vision tower alone, on ``batch_size`` pictures each (stage 2)."""
    steps: int = 500
    """Steps of the whole model on the game's turns with their pictures (stage 3), ``batch_size`` turns each."""
    batch_size: int = 32
    lr: float = 3e-3
    vision_lr: float = 1e-3
    """For the vision tower and merger: at the language model's rate their features collapse to a constant."""
    warmup: int = 20
    train_games: int = 480
    """Distinct training games, replayed with fresh histories and turns (each of its two pictures holds ~0.5 MB)."""
    spread: int = 4
    """Initial radius, in visual tokens, over which each object's centre token is copied."""
    spread_until: float = 0.25
    """Fraction of ``steps`` after which the radius is zero."""
    aux_weight: float = 1.0
    """Weight of the vision tower's naming loss beside the language-model loss while the whole model trains."""
    votes_per_game: int = 4
    """Vote turns kept per game (each voter's turn differs in whose notes they are)."""
    abstain: float = 0.1
    """How often a vote target is N/A; the others name another player uniformly, or as ``prior`` says."""
    prior: float = 0.3
    """How often a vote instead names one of the players the notes mark ``different``, when they mark some but not
    all (a text rule on the clues that never sees the spy); 0 leaves every vote spy-blind and random."""
    echo: float = 0.75
    """How often the teacher's civilian says its own caption (otherwise a random true clue about its picture)."""
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
    plain: list[int] | None = None
    """A vote turn's prompt with the picture left out (stage 1)."""


def _scene_info(scene: dict, picture: Picture, size: tuple[int, int]) -> _Scene:
    h, w = int(picture.grid[1]) // 2, int(picture.grid[2]) // 2  # a visual token merges 2x2 patches
    ys, xs = (torch.arange(h) + 0.5) * size[1] / h, (torch.arange(w) + 0.5) * size[0] / w
    focal = min(size[0], 1.5 * size[1]) / 2 / math.tan(math.radians(scene["camera"]["fov"]) / 2)
    labels = torch.zeros(h * w, len(ATTRIBUTES), dtype=torch.long)

    def cell(o):
        return min(h - 1, int(o["pixel"][1] * h / size[1])) * w + min(w - 1, int(o["pixel"][0] * w / size[0]))

    for o in sorted(scene["objects"], key=lambda o: -depth(scene, o)):  # far to near: a nearer object hides
        r = focal * RADIUS[o["size"]] / depth(scene, o)
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


def _chunk(
    policy: Policy,
    games: list,
    first: int,
    rng: random.Random,
    cfg: PretrainConfig,
    votes_only: bool = False,
    rules: tuple[GameConfig, ...] = GAME_CONFIGS,
) -> list[_Sample]:
    """Play the teacher on ``games`` (seeded from ``first``, each under one of ``rules``); return their training
    samples: every clue turn whose caption was not said before in its game (unless ``votes_only``), and
    ``votes_per_game`` vote turns of each game."""
    record: list[list] = [[] for _ in games]
    played = [Game(rng.choice(rules), "clevr", seed=first + i, meta=m, index=i) for i, (m, _) in enumerate(games)]

    def teacher(turns):
        outs, votes = [], {}
        for t in turns:
            said = last_clues(played[t.game].clues)  # each player's last clue so far, as the voters read them
            if t.stage == "clue":
                if t.view == "blank":
                    # Nothing to caption: the game hears a random plausible clue, and the turn is not trained.
                    outs.append(clue_text({k: rng.choice(v) for k, v in ATTRIBUTES.items()}, rng.randint(4, 6)))
                else:
                    scene = t.meta["modified_scene"] if t.view == "modified" else t.meta["scene"]
                    target = clue_target(scene)
                    if not votes_only and parse_clue(target) not in said.values():
                        record[t.game].append((t, target))
                    echo = t.view == "original" and rng.random() < cfg.echo
                    outs.append(target if echo else clue_text(rng.choice(scene["objects"]), len(scene["objects"])))
            else:
                # A civilian knows it is not the spy: it names another player, or (one time in ten) abstains.
                others = [p + 1 for p in range(t.n_players) if p != t.player]
                if cfg.prior > 0:
                    marked = [p + 1 for p, v in verdicts(t.player, said).items() if v == "different"]
                    if 0 < len(marked) < len(others) and rng.random() < cfg.prior:
                        others = marked
                k = 0 if rng.random() < cfg.abstain else rng.choice(others)
                vote = "\\boxed{N/A}" if k == 0 else f"\\boxed{{{k}}}"
                outs.append(f"{notes(t.player, said)} {vote}")
                votes.setdefault(t.game, []).append((t, outs[-1]))
        for g, cast in votes.items():
            record[g] += rng.sample(cast, min(cfg.votes_per_game, len(cast)))
        return outs

    play_games(played, teacher)
    tokenizer = policy.processor.tokenizer
    samples = []
    for (_, scenes), turns in zip(games, record):
        for turn, target in turns:
            info = scenes[turn.view == "modified"]
            ids = tokenizer(target + tokenizer.eos_token, add_special_tokens=False).input_ids
            plain = _plain_ids(policy, turn.messages) if turn.stage == "decision" else None
            samples.append(_Sample(policy.inputs.prompt_ids(turn.messages, info.picture), ids, info, plain))
    return samples


def _plain_ids(policy: Policy, messages: list[dict]) -> list[int]:
    """A prompt's token ids with its picture left out."""
    text_only = [{**m, "content": [c for c in m["content"] if c["type"] != "image"]} for m in messages]
    text = policy.processor.apply_chat_template(text_only, add_generation_prompt=True, tokenize=False)
    return policy.processor.tokenizer(text).input_ids


def _text_loss(model, pad_id: int, batch: list[_Sample]) -> tuple[torch.Tensor, float]:
    """The language model's loss on text-only vote turns, and its greedy accuracy on the target tokens."""
    rows = [s.plain + s.target for s in batch]
    width, c = max(map(len, rows)), max(len(s.target) for s in batch)
    ids = torch.full((len(rows), width), pad_id)  # [B, T], left-padded
    mask = torch.zeros_like(ids)  # [B, T]
    keep = torch.zeros(len(rows), c, dtype=torch.bool)  # [B, C]: the target tokens, right-aligned
    for i, (row, s) in enumerate(zip(rows, batch)):
        ids[i, width - len(row) :], mask[i, width - len(row) :] = torch.tensor(row), 1
        keep[i, c - len(s.target) :] = True
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=c + 1, use_cache=False).logits[:, :-1]
    targets = ids[:, -c:]  # [B, C]
    loss = F.cross_entropy(logits[keep], targets[keep])
    return loss, (logits[keep].argmax(-1) == targets[keep]).float().mean().item()


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
    pools: dict[tuple, list[_Sample]] = {}
    next_game = 0

    def next_batch(votes_only: bool, rules: tuple[GameConfig, ...] = GAME_CONFIGS) -> list[_Sample]:
        nonlocal next_game
        pool = pools.setdefault((votes_only, rules), [])
        while len(pool) < cfg.batch_size:
            first = next_game % n_games  # the seat of the spy and the history change on every replay
            chunk = games[first : first + cfg.games_per_chunk]
            pool += _chunk(policy, chunk, next_game, rng, cfg, votes_only, rules)
            rng.shuffle(pool)
            next_game += len(chunk)
        batch, pools[(votes_only, rules)] = pool[: cfg.batch_size], pool[cfg.batch_size :]
        return batch

    # Stage 1, reading: the language model alone, on text-only vote turns.
    language = [p for n, p in model.named_parameters() if not n.startswith("model.visual.")]
    opt = torch.optim.AdamW(language, lr=cfg.reading_lr, weight_decay=0.0)
    # A constant rate after the warm-up: the reading appears suddenly, after a plateau of unknown length.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / max(1, cfg.warmup)))
    for step in range(cfg.reading_steps):
        rules = FIRST_READ if step < cfg.reading_short * cfg.reading_steps else GAME_CONFIGS
        loss, accuracy = _text_loss(model, policy.inputs.pad_id, next_batch(True, rules))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(language, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == cfg.reading_steps - 1:
            log.info("tiny pretraining reading step %d/%d: loss %.3f, token accuracy %.3f",
                     step + 1, cfg.reading_steps, loss.item(), accuracy)  # fmt: skip

    # Stage 2, seeing: the vision tower alone, on the training pictures.
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

    # Stage 3, playing: everything, on the game's turns, while the spread scaffold shrinks to nothing.
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
        loss, naming = _step_loss(policy, head, next_batch(False), radius)
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
    report = measure(model, processor, pairs, held_out, GAME_CONFIGS[1:])
    report.update(
        reading_steps=cfg.reading_steps,
        vision_steps=cfg.vision_steps,
        steps=cfg.steps,
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
