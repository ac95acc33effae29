"""Toy-size models of the other families the paper trains, built offline with random weights: Qwen2-VL and InternVL.

Each is a real HF class with its real processor (``Qwen2VLForConditionalGeneration`` with ``Qwen2VLProcessor``;
``InternVLForConditionalGeneration`` with ``InternVLProcessor`` and ``GotOcr2ImageProcessor``, tiling on), saved with
``save_pretrained`` so that it loads through the same ``AutoModelForImageTextToText`` path a hub checkpoint takes. They
reuse the embedded tiny model's tokenizer (InternVL's gets its own image tokens and chat template) and exist to run
every family through the whole path in tests::

    python -m vzero.tiny.families internvl /tmp/toy-internvl
    vzero fit --config configs/tiny.yaml --model.vlm.name_or_path /tmp/toy-internvl
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vzero.tiny.build import MAX_PIXELS, MIN_PIXELS, MROPE_SECTION, TEXT, VISION
from vzero.tiny.tokenizer import CHAT_TEMPLATE

INTERNVL_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
INTERNVL_TILE = 112  # pixels per tile side: 8×8 patches of 14, 16 visual tokens after the 2× pixel shuffle
INTERNVL_MAX_TILES = 4

# InternVL's chat template puts <IMG_CONTEXT> where a picture goes; the processor expands it to <img>…</img>.
INTERNVL_CHAT_TEMPLATE = CHAT_TEMPLATE.replace("'<|vision_start|><|image_pad|><|vision_end|>'", "'<IMG_CONTEXT>\n'")
FAMILIES = ("qwen2-vl", "internvl")


def build_family(family: str, out: Path, tokenizer_from: str | Path, seed: int = 0) -> Path:
    """Build ``family`` (one of :data:`FAMILIES`) with the tokenizer of the folder ``tokenizer_from``; save it to
    ``out`` and return ``out``."""
    builders = {"qwen2-vl": _qwen2_vl, "internvl": _internvl}
    if family not in builders:
        raise ValueError(f"unknown model family {family!r}; expected one of {', '.join(FAMILIES)}")
    from transformers import AutoTokenizer

    extra = {"extra_special_tokens": dict(INTERNVL_TOKENS)} if family == "internvl" else {}
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from, **extra)
    model, processor = builders[family](tokenizer, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _seeded(cls, config, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config)


def _finish(model, eos: int, pad: int):
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id, gen.bos_token_id = [eos, pad], pad, None
    return model


def _qwen2_vl(tokenizer, seed: int):
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    ids = tokenizer.convert_tokens_to_ids
    eos, pad = ids("<|im_end|>"), ids("<|endoftext|>")
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS),
        chat_template=CHAT_TEMPLATE,
    )
    config = Qwen2VLConfig(
        text_config=dict(
            **TEXT,
            vocab_size=len(tokenizer),
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": MROPE_SECTION},
            bos_token_id=None,
            eos_token_id=eos,
            pad_token_id=pad,
            tie_word_embeddings=True,
        ),
        # Qwen2-VL's vision tower: full attention in every block, LayerNorm, a GELU MLP (no window attention).
        vision_config=dict(
            depth=VISION["depth"], embed_dim=64, hidden_size=TEXT["hidden_size"], num_heads=4, mlp_ratio=2
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    return _finish(_seeded(Qwen2VLForConditionalGeneration, config, seed), eos, pad), processor


def _internvl(tokenizer, seed: int):
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    tokenizer.add_tokens(list(INTERNVL_TOKENS.values()), special_tokens=True)  # named when loaded (build_family)
    ids = tokenizer.convert_tokens_to_ids
    eos, pad = ids("<|im_end|>"), ids("<|endoftext|>")
    patch = 14
    tokens_per_tile = (INTERNVL_TILE // patch) ** 2 // 4  # the 0.5 downsample ratio halves each side
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(
            size={"height": INTERNVL_TILE, "width": INTERNVL_TILE},
            crop_to_patches=False,  # as in InternVL3's checkpoints: the processor turns tiling on per call
            min_patches=1,
            max_patches=INTERNVL_MAX_TILES,
        ),
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(size={"height": INTERNVL_TILE, "width": INTERNVL_TILE}),
        image_seq_length=tokens_per_tile,
        chat_template=INTERNVL_CHAT_TEMPLATE,
    )
    config = InternVLConfig(
        text_config=dict(
            model_type="qwen2",
            **TEXT,
            vocab_size=len(tokenizer),
            max_position_embeddings=4096,
            rope_theta=10000.0,
            bos_token_id=None,
            eos_token_id=eos,
            pad_token_id=pad,
            tie_word_embeddings=True,
        ),
        vision_config=dict(
            hidden_size=64,
            num_hidden_layers=VISION["depth"],
            num_attention_heads=4,
            intermediate_size=128,
            image_size=[INTERNVL_TILE, INTERNVL_TILE],
            patch_size=[patch, patch],
        ),
        image_token_id=ids(INTERNVL_TOKENS["context_image_token"]),
        image_seq_length=tokens_per_tile,
        downsample_ratio=0.5,
        tie_word_embeddings=True,
    )
    return _finish(_seeded(InternVLForConditionalGeneration, config, seed), eos, pad), processor


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vzero.tiny.families", description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=FAMILIES)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from vzero.tiny import resolve

    print(build_family(args.family, args.out, resolve("tiny-random"), seed=args.seed))


if __name__ == "__main__":
    main()
