"""Loading any HF image-text-to-text model, with LoRA or QLoRA, through the Auto classes.

``AutoModelForImageTextToText`` and ``AutoProcessor`` cover Qwen2.5-VL, Qwen2-VL and InternVL3 (``-hf`` checkpoints)
with no model-specific code. The loader takes hub ids and folders only: the names of the embedded tiny model are
resolved to folders above it (:func:`vzero.tiny.resolve`).

LoRA adapters are fp32 whatever ``model.vlm.dtype`` is (peft's ``autocast_adapter_dtype``): in bf16, AdamW's steps
round away (a step of lr 1e-5 is a sixth of bf16's spacing at a weight of 0.01), so with no fp32 master copy most
entries of LoRA-A (initialised within +-1/sqrt(fan-in)) would never change. peft's LoRA layers cast their input to
the adapter's dtype and their output back to the base layer's. :func:`keep_adapter_dtype` keeps the adapters fp32
when the module is converted as a whole afterwards (Lightning's ``bf16-true`` precision).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

log = logging.getLogger(__name__)

Quantization = Literal["none", "8bit", "4bit"]
_VISION_NAMES = ("visual", "vision_tower", "vision_model", "multi_modal_projector", "mm_projector")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class LoraConfig:
    """A LoRA adapter. By default it adapts every linear layer of the language model and leaves the vision tower
    frozen and un-adapted."""

    r: int = 16
    """Rank."""
    alpha: int = 32
    """Scaling numerator: the update is scaled by ``alpha / r``."""
    dropout: float = 0.0
    """Off by default: dropout would make the policy that samples differ from the one that is scored."""
    target_modules: list[str] | None = None
    """Module-name suffixes to adapt (e.g. ``["q_proj", "v_proj"]``); None means every language-model linear layer."""
    adapt_vision: bool = False
    """Also adapt the vision tower's linear layers (opt-in)."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"lora.r must be >= 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class ModelConfig:
    """Which model to train and how to load it."""

    name_or_path: str = "tiny"
    """A hub id (``Qwen/Qwen2.5-VL-7B-Instruct``), a local folder, or ``tiny`` / ``tiny-random`` (the embedded model,
    which the training module resolves to its cached folder before loading)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: str | None = None
    """E.g. ``sdpa``, ``flash_attention_2``, ``eager``; None lets transformers choose."""
    lora: LoraConfig | None = field(default_factory=LoraConfig)
    """None means a full fine-tune (a frozen copy then serves as the reference policy)."""
    quantization: Quantization = "none"
    """``8bit`` or ``4bit`` (nf4, double quantisation, bf16 compute) via bitsandbytes; needs LoRA."""
    gradient_checkpointing: bool = False
    min_pixels: int | None = None
    """Lower bound on a picture's pixels after resizing (processor default when None). For tiling processors
    (InternVL) the least number of tiles: ``ceil(min_pixels / tile area)``; see :func:`bound_pixels`."""
    max_pixels: int | None = None
    """Upper bound on a picture's pixels after resizing: fewer visual tokens, less memory. For tiling processors
    (InternVL) the most tiles: ``max_pixels // tile area`` (448×448 tiles in InternVL3)."""
    trust_remote_code: bool = False

    @classmethod
    def from_dict(cls, fields: dict) -> ModelConfig:
        """The config that ``dataclasses.asdict`` turned into ``fields`` (LoRA settings included)."""
        lora = fields.get("lora", LoraConfig())
        return cls(**{**fields, "lora": LoraConfig(**lora) if isinstance(lora, dict) else lora})

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"model.vlm.dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if self.quantization not in ("none", "8bit", "4bit"):
            raise ValueError(f"model.vlm.quantization must be 'none', '8bit' or '4bit', got {self.quantization!r}")
        if self.quantization != "none" and self.lora is None:
            raise ValueError(
                f"model.vlm.quantization={self.quantization!r} needs model.vlm.lora: quantised weights cannot be "
                "fine-tuned directly (QLoRA trains an adapter on top of them)"
            )
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError(
                f"model.vlm.min_pixels ({self.min_pixels}) exceeds model.vlm.max_pixels ({self.max_pixels})"
            )


def load_vlm(config: ModelConfig | None = None, **overrides):
    """Load a model and its processor. Returns ``(model, processor)``; the model is a peft model when LoRA is set.

    Accepts a :class:`ModelConfig` or its fields as keywords: ``load_vlm("Qwen/Qwen2.5-VL-7B-Instruct")``,
    ``load_vlm(name_or_path=folder, lora=None)``. ``name_or_path`` is a hub id or a folder; one that can only be a
    folder and is missing fails with "no such folder" (see :func:`local_folder`).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if isinstance(config, str):
        overrides["name_or_path"] = config
        config = None
    cfg = ModelConfig(**{**(vars(config) if config else {}), **overrides})
    path = local_folder(cfg.name_or_path)
    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    except OSError as e:
        if os.path.isdir(path):  # a folder with a problem of its own: its error says which
            raise
        if _maybe_local(path):
            raise FileNotFoundError(
                f"no such folder: {path} (model.vlm.name_or_path), and no hub model of that name either ({e})"
            ) from e
        if _hub_offline():
            raise OSError(
                f"{path} (model.vlm.name_or_path) is not in the local Hugging Face cache, and the hub is offline "
                f"(HF_HUB_OFFLINE=1, the vzero command's default): set HF_HUB_OFFLINE=0 to download it, or fetch it "
                f"first with `hf download {path}` ({e})"
            ) from e
        raise
    if cfg.min_pixels or cfg.max_pixels:
        processor = bound_pixels(processor, path, cfg.min_pixels, cfg.max_pixels)
    kwargs = {"dtype": _DTYPES[cfg.dtype], "trust_remote_code": cfg.trust_remote_code}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if cfg.quantization != "none":
        kwargs["quantization_config"] = _bnb_config(cfg.quantization)
    model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)

    if cfg.quantization != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
        _trainable_on_cpu(model)
    elif cfg.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()  # so LoRA layers receive gradients through checkpointed blocks
    if cfg.lora is None:
        return model, processor
    return _attach_lora(model, cfg.lora), processor


def bound_pixels(processor, path: str, min_pixels: int | None, max_pixels: int | None):
    """``processor`` with ``model.vlm.min_pixels`` / ``max_pixels`` applied in its family's own terms.

    - Processors that resize to a pixel budget (Qwen2-VL, Qwen2.5-VL: ``min_pixels`` / ``max_pixels``, kept as the
      ``shortest_edge`` / ``longest_edge`` of their ``size``) take them as they are.
    - Tiling processors (InternVL's ``GotOcr2ImageProcessor``: ``min_patches`` / ``max_patches`` tiles of a fixed
      size) get a tile budget: at most ``max_pixels // tile_area`` tiles (at least 1) and at least
      ``ceil(min_pixels / tile_area)``. With more than one tile the processor adds a thumbnail tile.
    - Any other image processor has no budget these keys could mean, and is refused with a message saying so.
    """
    image_processor = processor.image_processor
    accepted = set(getattr(getattr(image_processor, "valid_kwargs", None), "__annotations__", {}))
    size = getattr(image_processor, "size", None)
    if {"min_pixels", "max_pixels"} <= accepted and getattr(size, "longest_edge", None):
        image_processor.size = dataclasses.replace(
            size, shortest_edge=min_pixels or size.shortest_edge, longest_edge=max_pixels or size.longest_edge
        )
        return processor
    tile = (getattr(size, "height", None) or 0) * (getattr(size, "width", None) or 0)
    if {"min_patches", "max_patches"} <= accepted and tile:
        low = -(-min_pixels // tile) if min_pixels else image_processor.min_patches
        high = max(1, max_pixels // tile) if max_pixels else image_processor.max_patches
        if low > high:
            raise ValueError(
                f"model.vlm.min_pixels={min_pixels} and model.vlm.max_pixels={max_pixels} leave no whole number of "
                f"{size.height}x{size.width} tiles for {type(image_processor).__name__} "
                f"(at least {low}, at most {high})"
            )
        image_processor.min_patches, image_processor.max_patches = max(1, low), high
        return processor
    raise ValueError(
        f"model.vlm.min_pixels / model.vlm.max_pixels mean nothing to {type(image_processor).__name__} ({path}): it "
        "has neither a pixel budget nor a tile budget; leave them unset"
    )


def local_folder(name_or_path: str) -> str:
    """``name_or_path`` as ``from_pretrained`` should see it, refusing a local path that does not exist.

    A value that can only be a local path -- absolute, starting with ``~``, ``./`` or ``../`` (or ``.``/``..``
    itself), or with more than one separator (a hub id is ``name`` or ``namespace/name``) -- must be an existing folder,
    else this raises ``FileNotFoundError("no such folder: <path> (model.vlm.name_or_path)")`` instead of letting
    the hub client report a malformed repo id. ``~`` is expanded. A ``namespace/name`` value passes through (it may
    be a hub id), unless ``namespace`` is a local folder and the hub cannot serve it either: then loading says "no
    such folder" too (see :func:`load_vlm`).
    """
    expanded = os.path.expanduser(name_or_path)
    if os.path.isdir(expanded):
        return expanded
    if _must_be_local(name_or_path):
        kind = "not a folder" if os.path.exists(expanded) else "no such folder"
        raise FileNotFoundError(f"{kind}: {name_or_path} (model.vlm.name_or_path)")
    return name_or_path


def _must_be_local(name: str) -> bool:
    parts = re.split(f"[{re.escape(os.sep + (os.altsep or ''))}]", name)
    return os.path.isabs(name) or name.startswith("~") or parts[0] in (".", "..") or len(parts) > 2


def _maybe_local(name: str) -> bool:
    """``namespace/name`` whose ``namespace`` is a local folder: meant as a folder, or a hub id that happens to share a
    local folder's name."""
    head, sep, _ = name.partition("/")
    return bool(sep) and os.path.isdir(head)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def reference_copy(model: nn.Module) -> nn.Module:
    """A frozen copy of a fully fine-tuned model, to serve as the reference policy."""
    log.warning("full fine-tune: keeping a frozen copy of the model as the reference policy (2x weights in memory)")
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def keep_adapter_dtype(fn: Callable[[torch.Tensor], torch.Tensor], model: nn.Module) -> Callable:
    """``fn``, a conversion that ``nn.Module._apply`` applies to every parameter, gradient and buffer (``.to``,
    ``.cuda``, ``.half``, ...), except that ``model``'s trainable parameters and their gradients keep their dtype:
    they follow ``fn`` to its device only, and are never rounded to a lower precision on the way.

    For a LoRA model under Lightning's ``bf16-true`` (and ``16-true``) precision, whose plugin converts the whole
    module to bf16 at setup: the frozen base is converted, the fp32 adapters (and so AdamW's state) stay fp32.
    """
    keep = {id(p) for p in model.parameters() if p.requires_grad}
    keep |= {id(p.grad) for p in model.parameters() if p.requires_grad and p.grad is not None}

    def convert(t: torch.Tensor) -> torch.Tensor:
        out = fn(t)
        if id(t) not in keep or out.dtype == t.dtype:
            return out
        return t.to(device=out.device)

    return convert


def is_vision(name: str) -> bool:
    return any(part in _VISION_NAMES for part in name.split("."))


def _attach_lora(model: nn.Module, lora: LoraConfig) -> nn.Module:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets = []
    for name, module in model.named_modules():
        if not _is_linear(module) or name.endswith("lm_head"):
            continue
        if is_vision(name) and not lora.adapt_vision:
            continue
        if lora.target_modules is None or any(name.endswith(t) for t in lora.target_modules):
            targets.append(name)
    if not targets:
        raise ValueError(f"lora.target_modules={lora.target_modules!r} matched no linear layer of the model")
    peft_config = PeftLoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, bias="none"
    )
    return get_peft_model(model, peft_config, autocast_adapter_dtype=True)  # fp32 adapters on a bf16/fp16 base


def _is_linear(module: nn.Module) -> bool:
    # bitsandbytes' Linear8bitLt / Linear4bit subclass nn.Linear too.
    return isinstance(module, nn.Linear)


def _bnb_config(quantization: Quantization):
    try:
        import bitsandbytes as bnb
        from transformers import BitsAndBytesConfig
    except ImportError as e:
        raise RuntimeError(
            f"model.vlm.quantization={quantization!r} needs bitsandbytes, which fails to import: {e}"
        ) from e
    _check_bnb_runs(bnb, quantization)
    skip = [*_VISION_NAMES, "lm_head"]  # keep the vision tower and the output layer in full precision
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=skip,
    )


def _trainable_on_cpu(model: nn.Module) -> None:
    """Keep bitsandbytes' 4-bit layers trainable on a CPU: on one with AVX512-BF16, bitsandbytes (0.50) repacks a
    layer's weights for an inference-only kernel the first time it runs in eval mode without gradients (a rollout:
    vzero keeps the frozen base in eval mode), and the next update then fails ("a view of a leaf Variable that requires
    grad is being used in an in-place operation"). Each layer's own switch for that kernel is turned off; CUDA never
    takes that path."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _check_bnb_runs(bnb, quantization: Quantization) -> None:
    """Fail early, with a clear message, where bitsandbytes has no kernel for this device."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        w = torch.randn(64, 64, device=device)
        if quantization == "4bit":
            q, state = bnb.functional.quantize_4bit(w.to(torch.bfloat16), quant_type="nf4")
            bnb.functional.dequantize_4bit(q, state)
        else:
            bnb.functional.int8_vectorwise_quant(w.half() if device == "cuda" else w)
    except Exception as e:  # bitsandbytes raises many types where a backend is missing
        raise RuntimeError(
            f"model.vlm.quantization={quantization!r}: bitsandbytes cannot run on this {device} "
            f"({type(e).__name__}: {e}); use quantization='none'"
        ) from e
