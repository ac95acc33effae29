"""What a policy feeds its model, and how it is made: pictures, prompts, packed batches, and the special token ids.

:class:`InputBuilder` turns pictures and chat messages into what the model takes. Pictures are preprocessed once with
the processor's own image processor and settings (its defaults included, such as InternVL's tiling) and reused by every
turn that shows them. While the vision tower is frozen (the default: LoRA on the language model only), a picture's
vision-encoder output is computed once and handed to the model as ``mm_encoder_outputs`` by every turn and every scoring
pass that shows it, so a game's two pictures go through the vision tower once per rollout instead of once per turn.
Each picture keeps its own pixels and features, in the form its model takes them: one tensor per picture (Qwen-VL), or
its tiles' rows of one tensor (InternVL), which a batch joins again in its pictures' order. A packed batch
(:class:`ModelInputs`) keeps them per picture too, so the pictures of some of its rows can be handed on alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from PIL import Image
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vzero.model.load import is_vision

Side = Literal["trained", "reference"]
"""Which weights play a row: the trained policy's, or the reference policy's (the adapter off, or the frozen copy)."""


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
    reused: int = 0
    """Leading prompt tokens whose keys and values came from the prompt store instead of being computed."""


@dataclass(frozen=True)
class TokenIds:
    """The token ids that packing, generation and scoring treat specially."""

    pad: int
    eos: frozenset[int]
    """Generation stops at any of these, and keeps it."""
    suppress: list[int]
    """Never sampled, so never in the scored distribution: every token that structures a picture or a video."""

    @classmethod
    def of(cls, processor, model) -> TokenIds:
        tok = processor.tokenizer
        eos = model.generation_config.eos_token_id
        return cls(
            pad=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            eos=frozenset(eos if isinstance(eos, list) else [eos] if eos is not None else [tok.eos_token_id]),
            # A sampled image or video placeholder would make the rescored sequence claim a picture it does not have.
            suppress=picture_token_ids(processor, model.config),
        )


@dataclass
class ModelInputs:
    """Left-padded sequences of prompt + completion, ready for the model, one picture per row. Completions are
    right-aligned."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    mm_token_type_ids: torch.Tensor | None  # [B, T]
    pixel_values: tuple[torch.Tensor, ...] | None  # per row's picture: [n_patches, ...]; None when embeds are given
    image_grid_thw: torch.Tensor | None  # [B, 3]
    completion_mask: torch.Tensor  # [B, C]; 1 on the last len(completion) columns of each row
    image_embeds: tuple[torch.Tensor, ...] | None = None  # per row's picture: [n_visual_tokens, hidden] or [tiles, ...]
    join_embeds: bool = False
    """Hand ``image_embeds`` to the model as one tensor, concatenated along the first dimension (InternVL)."""

    def model_kwargs(self) -> dict:
        kw = {"input_ids": self.input_ids, "attention_mask": self.attention_mask, **self.picture_kwargs()}
        if self.mm_token_type_ids is not None:
            kw["mm_token_type_ids"] = self.mm_token_type_ids
        return kw

    def picture_kwargs(self, rows: Sequence[int] | None = None) -> dict:
        """The model's picture arguments for the pictures of ``rows`` (every row when None), in their order."""
        index = range(len(self.input_ids)) if rows is None else list(rows)
        if self.image_embeds is not None:
            embeds = [self.image_embeds[i] for i in index]
            feats = torch.cat(embeds) if self.join_embeds else tuple(embeds)
            kw = {"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=feats)}}
        else:
            kw = {"pixel_values": torch.cat([self.pixel_values[i] for i in index])}
        if self.image_grid_thw is not None:
            kw["image_grid_thw"] = self.image_grid_thw if rows is None else self.image_grid_thw[list(index)]
        return kw

    def to(self, device: torch.device | str) -> ModelInputs:
        moved = {k: v.to(device) for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        for name in ("pixel_values", "image_embeds"):
            if getattr(self, name) is not None:
                moved[name] = tuple(t.to(device) for t in getattr(self, name))
        return replace(self, **moved)


class InputBuilder:
    """Pictures, prompts and packed batches for one model and its processor.

    Args:
        model: an HF image-text-to-text model, optionally wrapped by peft.
        processor: its processor.
        pad_id: the id that pads packed rows.
        cache_vision: reuse each picture's vision-tower output across passes; only takes effect while the vision tower
            is frozen and un-adapted, and the model accepts ``mm_encoder_outputs`` (see :attr:`cache_vision`).
    """

    def __init__(self, model, processor, pad_id: int, cache_vision: bool = True) -> None:
        self.model, self.processor, self.pad_id = model, processor, pad_id
        self.cache_vision = cache_vision and _vision_frozen(model) and _accepts_encoder_outputs(model)
        self._uses_mm_types = "mm_token_type_ids" in getattr(processor, "model_input_names", [])

    def pictures(self, images: Sequence[Image.Image]) -> list[Picture]:
        """Preprocess pictures once, in one batched call of the processor's image processor."""
        if not images:
            return []
        feats = self.processor.image_processor(images=list(images), **self._image_kwargs())
        grids = feats.get("image_grid_thw")
        counts = grids.prod(-1).tolist() if grids is not None else list(feats["num_patches"])
        chunks = feats["pixel_values"].split([int(c) for c in counts])
        return [
            Picture(chunks[i], None if grids is None else grids[i], self.processor.replace_image_token(feats, i))
            for i in range(len(images))
        ]

    def _image_kwargs(self) -> dict:
        """The image processor's arguments as the processor's own call would pass them (InternVL's processor turns
        tiling on there, for one), so a picture here is exactly the picture ``processor(text, images)`` makes."""
        merge = getattr(self.processor, "_merge_kwargs", None)
        kwargs = {}
        if merge is not None:
            kwargs = dict(merge(tokenizer_init_kwargs=self.processor.tokenizer.init_kwargs).get("images_kwargs", {}))
        return {**kwargs, "return_tensors": "pt"}

    def prompt_ids(self, messages: list[dict], picture: Picture) -> list[int]:
        """Token ids of a chat prompt with one picture, ending with the assistant's turn header."""
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        (text,), _ = self.processor.get_text_with_replacements([text], images_replacements=[picture.placeholder])
        return self.processor.tokenizer(text).input_ids

    def text(self, ids: Sequence[int]) -> str:
        """Generated ids as text, special tokens left out."""
        return self.processor.tokenizer.decode(list(ids), skip_special_tokens=True)

    def pack(
        self, prompts: Sequence[list[int]], pictures: Sequence[Picture], completions: Sequence[list[int]] | None = None
    ) -> ModelInputs:
        """Left-pad ``prompt + completion`` rows into one batch (completions end every row, right-aligned)."""
        completions = completions or [[] for _ in prompts]
        rows = [p + c for p, c in zip(prompts, completions)]
        width = max(len(r) for r in rows)
        c_width = max(len(c) for c in completions)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)  # [B, T]
        mask = torch.zeros((len(rows), width), dtype=torch.long)  # [B, T]
        c_mask = torch.zeros((len(rows), c_width), dtype=torch.float32)  # [B, C]
        for i, (row, comp) in enumerate(zip(rows, completions)):
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
            if comp:
                c_mask[i, c_width - len(comp) :] = 1
        mm = None
        if self._uses_mm_types:
            mm = torch.tensor(self.processor.create_mm_token_type_ids(ids.tolist()), dtype=torch.long)  # [B, T]
        grids = [p.grid for p in pictures]
        embeds = self._embeds(pictures) if self.cache_vision else None
        return ModelInputs(
            input_ids=ids,
            attention_mask=mask,
            mm_token_type_ids=mm,
            pixel_values=None if embeds else tuple(p.pixel_values for p in pictures),
            image_grid_thw=None if grids[0] is None else torch.stack(grids),
            completion_mask=c_mask,
            image_embeds=embeds,
            join_embeds=bool(embeds) and pictures[0].joined,
        )

    @torch.no_grad()
    def _embeds(self, pictures: Sequence[Picture]) -> tuple[torch.Tensor, ...]:
        """Each picture's vision-tower output, computing the missing ones in one batched call."""
        missing = list({id(p): p for p in pictures if p.embeds is None}.values())
        if missing:
            device = next(self.model.parameters()).device
            kwargs = {"pixel_values": torch.cat([p.pixel_values for p in missing]).to(device)}
            if missing[0].grid is not None:
                kwargs["image_grid_thw"] = torch.stack([p.grid for p in missing]).to(device)
            feats = self.model.get_image_features(**kwargs, return_dict=True).pooler_output
            joined = isinstance(feats, torch.Tensor)
            if joined:  # one tensor with a row per tile (InternVL): each picture's rows are its own tiles
                rows = [p.pixel_values.shape[0] for p in missing]
                if feats.shape[0] != sum(rows):
                    raise RuntimeError(
                        f"{type(self.model).__name__}.get_image_features returned {feats.shape[0]} rows for "
                        f"{sum(rows)} tiles, so they cannot be split per picture; construct the Policy with "
                        "cache_vision=False for this model"
                    )
                feats = feats.split(rows)
            for p, e in zip(missing, feats, strict=True):
                p.embeds, p.joined = e.detach(), joined
        return tuple(p.embeds for p in pictures)


def _vision_frozen(model) -> bool:
    return not any(p.requires_grad for n, p in model.named_parameters() if is_vision(n))


def _accepts_encoder_outputs(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return callable(getattr(base, "_supports_mm_encoder_outputs", None)) and base._supports_mm_encoder_outputs()


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
