"""The tiny model's tokenizer: a byte-level BPE trained on the game's own text, with Qwen's special tokens and a ChatML
template.

Its merges are learned in two stages: words first (Qwen2's pre-tokenizer), then phrases of the fixed instructions, so a
prompt's rules cost few tokens while colours, shapes and digits stay single tokens.
"""

from __future__ import annotations

import json
import random

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


def game_corpus(n_games: int = 240, seed: int = 0) -> tuple[list[str], list[str]]:
    """Text for the tokenizer: ``(everything, templates)``.

    ``everything`` holds the prompts and answers of scripted games in every domain and mode, and the scene vocabulary;
    ``templates`` holds prompts whose clues are all unparseable, i.e. the fixed instruction text alone.
    """
    from vzero.data.pairs.clevr import COLORS, MATERIALS, SHAPES, SIZES, ClevrPairs
    from vzero.game import Game, GameConfig, OraclePlayer, RandomPlayer, play_games

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

    def collect(respond, sink):
        def play(turns):
            outs = respond(turns)
            sink.extend(c["text"] for t in turns for c in t.messages[0]["content"] if c["type"] == "text")
            everything.extend(outs)
            return outs

        return play

    oracle, noise = OraclePlayer(), RandomPlayer(seed)
    for sink, respond in (
        (everything, lambda ts: [rng.choice([oracle, noise]).answer(t) for t in ts]),
        (templates, RandomPlayer(seed, gibberish=1.0)),
    ):
        games = [
            Game(configs[i % len(configs)], rng.choice(["clevr", "chart", "real"]), seed=i, meta=p.meta, index=i)
            for i, p in enumerate(pairs)
        ]
        play_games(games, collect(respond, sink))
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
