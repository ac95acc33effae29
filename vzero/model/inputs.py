"""What a policy feeds its model: preprocessed pictures, packed batches, and the tokens that stand for pictures."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling


@dataclass(eq=False)
class Picture:
    """One preprocessed picture."""

    pixel_values: torch.Tensor  # [n_patches, ...]
    grid: torch.Tensor | None  # [3] (t, h, w) for Qwen-VL processors; None for tiling processors
    placeholder: str
    """The expanded image-token text that stands for this picture in a prompt."""
    embeds: torch.Tensor | None = field(default=None, repr=False)  # [n_visual_tokens, hidden] or [n_tiles, ...]
    """The frozen vision tower's output, filled on first use and shared by every pass that shows the picture."""
    joined: bool = False
    """True when the model takes a batch's features as one tensor (the pictures' rows concatenated), as InternVL
    does; False when it takes one tensor per picture, as Qwen-VL does."""


@dataclass(frozen=True)
class Completion:
    ids: list[int]
    """Generated token ids, up to and including the EOS."""
    truncated: bool
    """True when generation hit ``max_new_tokens`` before an EOS."""


@dataclass
class ModelInputs:
    """Left-padded sequences of prompt + completion, ready for the model. Completions are right-aligned."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    mm_token_type_ids: torch.Tensor | None  # [B, T]
    pixel_values: torch.Tensor | None  # [sum of patches, ...]; None when image_embeds are given
    image_grid_thw: torch.Tensor | None  # [B, 3]
    completion_mask: torch.Tensor  # [B, C]; 1 on the last len(completion) columns of each row
    image_embeds: tuple[torch.Tensor, ...] | None = None  # per picture: [n_visual_tokens, hidden] or [n_tiles, ...]
    join_embeds: bool = False
    """Hand ``image_embeds`` to the model as one tensor, concatenated along the first dimension (InternVL)."""

    def model_kwargs(self) -> dict:
        kw = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.image_embeds is not None:
            feats = torch.cat(self.image_embeds) if self.join_embeds else self.image_embeds
            kw["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=feats)}
        else:
            kw["pixel_values"] = self.pixel_values
        if self.image_grid_thw is not None:
            kw["image_grid_thw"] = self.image_grid_thw
        if self.mm_token_type_ids is not None:
            kw["mm_token_type_ids"] = self.mm_token_type_ids
        return kw

    def to(self, device: torch.device | str) -> ModelInputs:
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()}
        if self.image_embeds is not None:
            moved["image_embeds"] = tuple(e.to(device) for e in self.image_embeds)
        return ModelInputs(**moved)


def picture_token_ids(processor, config) -> list[int]:
    """Every token id that structures a picture or a video in a prompt: placeholders and their start and end markers.

    Collected from the processor (``image_token_id``, ``start_image_token_id``, ``image_token_ids``, the token strings
    ``video_token``, ...), its tokenizer's named special tokens and the model config, so a family's own names
    (Qwen-VL's ``<|vision_start|>``, InternVL's ``<img>`` / ``</img>`` / ``<video>``) are all found.
    """
    tokenizer = processor.tokenizer
    found: set[int] = set()

    def add(name: str, value) -> None:
        if not any(k in name for k in ("image", "video", "vision", "img")):
            return
        if isinstance(value, int) and not isinstance(value, bool) and name.endswith(("_id", "_index")):
            found.add(value)
        elif isinstance(value, (list, tuple)) and name.endswith("_ids"):
            found.update(v for v in value if isinstance(v, int))
        elif isinstance(value, str) and name.endswith("_token"):
            token_id = tokenizer.convert_tokens_to_ids(value)
            if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
                found.add(token_id)

    for source in (processor, config):
        for name, value in vars(source).items():
            add(name, value)
    add("image_token_ids", getattr(processor, "image_token_ids", None))
    for name, value in getattr(tokenizer, "special_tokens_map", {}).items():
        add(name, value)
    return sorted(found)
