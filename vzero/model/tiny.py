"""The embedded default model: a real ``Qwen2_5_VLForConditionalGeneration`` at toy size, built offline.

Nothing is downloaded. A byte-level BPE tokenizer is trained on the game's own text, Qwen's special tokens and a chat
template are added, the standard Qwen2-VL image and video processors are attached, and the model is initialised from a
seed. The result is saved with ``save_pretrained`` into the cache (``$VZERO_CACHE``, else ``~/.cache/vzero``), and
loads back through the same ``from_pretrained`` path a hub checkpoint takes.

Two names resolve to cached folders, built on first use:

- ``tiny-random``: the random initialisation, for fast tests;
- ``tiny``: the same model after a short self-supervised stage (:mod:`vzero.model.pretrain`), so that RL starts from a
  model that already answers in the game's format, as a real VLM does.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_RANDOM_RECIPE = ("model/tiny.py", "game/prompts.py", "data/pairs/clevr.py")
_PRETRAINED_RECIPE = (*_RANDOM_RECIPE, "model/pretrain.py", "model/policy.py")


def recipe_fingerprint(parts: tuple[str, ...] = _PRETRAINED_RECIPE) -> str:
    """A hash of the code that decides what a cached model contains (the builder, the prompts its tokenizer is trained
    on, the renderer, the pretraining stage), so that a changed recipe is rebuilt rather than a stale cache reused."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for part in parts:
        digest.update((root / part).read_bytes())
    return digest.hexdigest()[:10]


SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
VOCAB_SIZE = 2048
MIN_PIXELS, MAX_PIXELS = 16 * 28 * 28, 64 * 28 * 28  # 16-64 visual tokens per picture
TEXT = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)
VISION = dict(
    depth=2, hidden_size=128, intermediate_size=256, num_heads=4, out_hidden_size=128, fullatt_block_indexes=[1]
)
MROPE_SECTION = [4, 6, 6]  # temporal/height/width split of the 16 rotary frequencies of a 32-wide head

# Our own minimal ChatML template: text parts verbatim, each image as Qwen's vision placeholder.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

NAMES = ("tiny", "tiny-random")


def cache_dir() -> Path:
    return Path(os.environ.get("VZERO_CACHE") or "~/.cache/vzero").expanduser()


def resolve(name_or_path: str) -> str:
    """Map ``tiny`` / ``tiny-random`` to their cached folders (building them once); pass anything else through."""
    if name_or_path == "tiny-random":
        return str(ensure_random())
    if name_or_path == "tiny":
        return str(ensure_pretrained())
    return name_or_path


def ensure_random(seed: int = 0) -> Path:
    path = cache_dir() / f"tiny-random-{recipe_fingerprint(_RANDOM_RECIPE)}"
    return _ensure(path, lambda out: build_random(out, seed))


def ensure_pretrained() -> Path:
    from vzero.model.pretrain import pretrain

    source = ensure_random()
    return _ensure(cache_dir() / f"tiny-{recipe_fingerprint()}", lambda out: pretrain(source, out))


def _ensure(path: Path, build) -> Path:
    if (path / "config.json").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent / f".{path.name}.lock"):
        if (path / "config.json").exists():  # another process built it while we waited
            return path
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("building %s (once; cached afterwards)", path)
        build(tmp)
        os.replace(tmp, path)
    return path


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    # One builder at a time across processes (pytest workers, DDP ranks); the others wait, then reuse its result.
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def game_corpus(n_games: int = 240, seed: int = 0) -> tuple[list[str], list[str]]:
    """Text for the tokenizer: ``(everything, templates)``.

    ``everything`` holds the prompts and answers of scripted games in every domain and mode, and the scene vocabulary;
    ``templates`` holds prompts whose clues are all unparseable, i.e. the fixed instruction text alone.
    """
    from vzero.data.pairs.clevr import COLORS, MATERIALS, SHAPES, SIZES, ClevrPairs
    from vzero.game import Game, GameConfig, OraclePolicy, RandomPolicy, play_games

    rng = random.Random(seed)
    pairs = ClevrPairs(n=n_games, seed=seed, size=(32, 32))
    configs = [
        GameConfig(),
        GameConfig(n_civilians=3, voting="observer", votes_per_voter=2),
        GameConfig(spy_view="blank"),
        GameConfig(n_civilians=2, clue_rounds=3),
    ]
    everything: list[str] = []
    templates: list[str] = []

    def collect(policy, sink):
        def play(turns):
            outs = policy(turns)
            sink.extend(c["text"] for t in turns for c in t.messages[0]["content"] if c["type"] == "text")
            everything.extend(outs)
            return outs

        return play

    oracle, noise = OraclePolicy(), RandomPolicy(seed)
    for sink, policy in (
        (everything, lambda ts: [rng.choice([oracle, noise]).answer(t) for t in ts]),
        (templates, RandomPolicy(seed, gibberish=1.0)),
    ):
        games = [
            Game(configs[i % len(configs)], rng.choice(["clevr", "chart", "real"]), seed=i, meta=p.meta, index=i)
            for i, p in enumerate(pairs)
        ]
        play_games(games, collect(policy, sink))
    words = [
        *SHAPES,
        *SIZES,
        *MATERIALS,
        *COLORS,
        "objects",
        "There is a",
        "I see",
        "I compare the clues with my picture",
    ]
    everything += (
        templates + [f"I see {k} objects." for k in range(1, 10)] + [f" {w}" for w in words for _ in range(20)]
    )
    return everything, templates


# Qwen2's pre-tokenizer splits text into words. Ours lets a "piece" be a run of words joined by single spaces, so that
# merges learned from the fixed instructions can span words ("You are playing"), while digits, punctuation and line
# breaks still cut. Word-level merges come first, so the game's content words (colours, shapes) stay separate tokens.
PHRASE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+(?: \p{L}+)*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def build_tokenizer(texts: list[str], templates: list[str], vocab_size: int = VOCAB_SIZE, phrase_merges: int = 768):
    """A byte-level BPE trained in two stages: word-level merges on ``texts`` (Qwen2's pre-tokenizer), then merges
    across spaces learned from the fixed instruction text in ``templates``. Returns an HF fast tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import TokenizersBackend
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    def byte_level(regex: str) -> pre_tokenizers.PreTokenizer:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(regex), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )

    words = Tokenizer(BPE())
    words.normalizer = normalizers.NFC()
    words.pre_tokenizer = byte_level(PRETOKENIZE_REGEX)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - phrase_merges,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    words.train_from_iterator(texts, trainer)
    model = json.loads(words.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    merges = [tuple(m) for m in model["merges"]]

    phrases = byte_level(PHRASE_REGEX)
    counts: dict[tuple[str, ...], int] = {}
    for text in templates:
        for piece, _ in pre_tokenizers.Split(Regex(PHRASE_REGEX), behavior="isolated").pre_tokenize_str(text):
            toks = tuple(words.encode(piece, add_special_tokens=False).tokens)
            counts[toks] = counts.get(toks, 0) + 1
    for new in _phrase_merges(counts, phrase_merges):
        merges.append(new)
        vocab.setdefault(new[0] + new[1], len(vocab))

    bpe = Tokenizer(BPE(vocab=vocab, merges=merges))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = phrases
    bpe.decoder = decoders.ByteLevel()
    tok = TokenizersBackend(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _phrase_merges(counts: dict[tuple[str, ...], int], n: int, min_count: int = 20) -> list[tuple[str, str]]:
    """Plain BPE over token sequences: repeatedly merge the most frequent adjacent pair (ties broken by the pair)."""
    seqs = [[list(toks), c] for toks, c in counts.items() if len(toks) > 1]
    merges = []
    for _ in range(n):
        pairs: dict[tuple[str, str], int] = {}
        for toks, c in seqs:
            for pair in zip(toks, toks[1:]):
                pairs[pair] = pairs.get(pair, 0) + c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < min_count:
            break
        merges.append(best)
        joined = best[0] + best[1]
        for item in seqs:
            toks, out, i = item[0], [], 0
            while i < len(toks):
                if i + 1 < len(toks) and (toks[i], toks[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(toks[i])
                    i += 1
            item[0] = out
    return merges


def build_random(out: Path, seed: int = 0) -> Path:
    """Build, seed and save the random-init tiny model with its processor to ``out``."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = build_tokenizer(*game_corpus(seed=seed))
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS),
        chat_template=CHAT_TEMPLATE,
    )
    config = Qwen2_5_VLConfig(
        text_config=dict(
            **TEXT,
            vocab_size=len(tokenizer),
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": MROPE_SECTION},
            bos_token_id=None,
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=True,
        ),
        vision_config=dict(**VISION, window_size=112),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    gen = model.generation_config
    gen.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    gen.pad_token_id = ids["<|endoftext|>"]
    gen.bos_token_id = None
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
