import pytest
from transformers import AutoConfig, AutoProcessor

from vzero.tiny.families import INTERNVL_TOKENS, build_family


def test_an_unknown_family_is_named(tmp_path, tiny_random_path):
    with pytest.raises(ValueError, match="unknown model family 'llava'; expected one of qwen2-vl, internvl"):
        build_family("llava", tmp_path, tiny_random_path)


def test_internvl_loads_back_with_its_named_picture_tokens(family_path):
    """The saved InternVL folder loads through the Auto classes as a hub checkpoint does: its tokenizer keeps the
    named tokens InternVLProcessor needs, and the config points at the context token."""
    path = family_path("internvl")
    processor = AutoProcessor.from_pretrained(path)
    assert type(processor).__name__ == "InternVLProcessor"
    assert (processor.start_image_token, processor.end_image_token) == ("<img>", "</img>")
    assert processor.image_token == INTERNVL_TOKENS["context_image_token"]
    assert AutoConfig.from_pretrained(path).image_token_id == processor.image_token_id
    assert processor.image_processor.max_patches == 4


def test_qwen2_vl_is_its_own_architecture(family_path):
    config = AutoConfig.from_pretrained(family_path("qwen2-vl"))
    assert config.model_type == "qwen2_vl" and config.architectures == ["Qwen2VLForConditionalGeneration"]
