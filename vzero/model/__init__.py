"""Models: loading any HF image-text-to-text model (LoRA, QLoRA), what it is fed, the Policy (generation and scoring)
with its decoders and prompt store, sampling settings, FSDP2 units."""

from vzero.model.inputs import Completion, ModelInputs, Picture, Side
from vzero.model.load import LoraConfig, ModelConfig, load_vlm, reference_copy
from vzero.model.policy import DecodingConfig, Policy

__all__ = [
    "Completion",
    "DecodingConfig",
    "LoraConfig",
    "ModelConfig",
    "ModelInputs",
    "Picture",
    "Policy",
    "Side",
    "load_vlm",
    "reference_copy",
]
