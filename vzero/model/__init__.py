"""Models: loading any HF image-text-to-text model (LoRA, QLoRA), the Policy wrapper, sampling settings, FSDP2 units."""

from vzero.model.inputs import Completion, ModelInputs, Picture
from vzero.model.load import LoraSettings, ModelConfig, load_vlm, reference_copy
from vzero.model.policy import Policy

__all__ = [
    "Completion",
    "LoraSettings",
    "ModelConfig",
    "ModelInputs",
    "Picture",
    "Policy",
    "load_vlm",
    "reference_copy",
]
