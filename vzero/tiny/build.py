"""The random-init tiny model: a real ``Qwen2_5_VLForConditionalGeneration`` at toy size, built offline.

Nothing is downloaded. The tokenizer is trained on the game's own text (:mod:`vzero.tiny.tokenizer`), the standard
Qwen2-VL image and video processors are attached, and the model is initialised from a seed. The result is saved with
``save_pretrained`` and loads back through the same ``from_pretrained`` path a hub checkpoint takes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vzero.tiny.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, build_tokenizer, game_corpus

MIN_PIXELS, MAX_PIXELS = 16 * 28 * 28, 64 * 28 * 28  # 16-64 visual tokens per picture
TEXT = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)
VISION = dict(
    depth=2, hidden_size=128, intermediate_size=256, num_heads=4, out_hidden_size=128, fullatt_block_indexes=[1]
)
MROPE_SECTION = [4, 6, 6]  # temporal/height/width split of the 16 rotary frequencies of a 32-wide head


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
