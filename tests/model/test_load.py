import re
from pathlib import Path

import pytest
import torch

from vzero.data.pairs import ClevrPairs
from vzero.game import Game, GameConfig
from vzero.model import LoraConfig, ModelConfig, Policy, load_vlm
from vzero.model.load import local_folder


def lora_params(model):
    return [n for n, _ in model.named_parameters() if "lora_" in n]


def test_lora_adapts_only_the_language_model_by_default(tiny_random_path):
    model, _ = load_vlm(tiny_random_path)
    names = lora_params(model)
    assert names and all("language_model" in n for n in names)
    assert not any("visual" in n for n in names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(names)


def test_lora_on_the_vision_tower_is_opt_in(tiny_random_path):
    model, _ = load_vlm(tiny_random_path, lora=LoraConfig(adapt_vision=True))
    assert any("visual" in n for n in lora_params(model))


def test_lora_target_modules_filter(tiny_random_path):
    model, _ = load_vlm(tiny_random_path, lora=LoraConfig(target_modules=["q_proj"]))
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in lora_params(model)} == {"q_proj"}
    with pytest.raises(ValueError, match="matched no linear layer"):
        load_vlm(tiny_random_path, lora=LoraConfig(target_modules=["nonexistent"]))


def _scored_batch(policy):
    pairs = ClevrPairs(n=3, seed=0, size=(240, 160))
    pics = policy.inputs.pictures([p.original for p in pairs])
    prompts = [
        policy.inputs.prompt_ids(Game(GameConfig(), seed=i).pending()[0].messages, pic) for i, pic in enumerate(pics)
    ]
    completions = [[7, 8, 9, 10], [11, 12], [13, 14, 15]]
    return policy.inputs.pack(prompts, pics, completions)


def test_reference_logprobs_are_the_base_model_with_the_adapter_off(tiny_random_path):
    model, processor = load_vlm(tiny_random_path)
    with torch.no_grad():  # make the adapter do something, so on and off really differ
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    policy = Policy(model, processor)
    inputs = _scored_batch(policy)
    base = Policy(load_vlm(tiny_random_path, lora=None)[0], processor)
    with torch.no_grad():
        on = policy.logprobs(inputs)
        with policy.reference():
            off = policy.logprobs(inputs)
        expected = base.logprobs(inputs)
    assert torch.allclose(off, expected, atol=1e-5)
    assert not torch.allclose(on, expected, atol=1e-3)
    assert on.shape == (3, 4) and torch.equal((on != 0).float(), inputs.completion_mask)


def test_full_finetune_reference_is_a_frozen_copy(tiny_random_path):
    from vzero.model import reference_copy

    model, processor = load_vlm(tiny_random_path, lora=None)
    ref = reference_copy(model)
    assert all(not p.requires_grad for p in ref.parameters())
    policy = Policy(model, processor, reference_copy=ref)
    inputs = _scored_batch(policy)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # the trained model moves; the reference must not
        with policy.reference():
            off = policy.logprobs(inputs)
        assert torch.allclose(off, Policy(ref, processor).logprobs(inputs))


def test_qlora_4bit_backpropagates_into_the_adapter(tiny_random_path):
    model, processor = load_vlm(tiny_random_path, quantization="4bit")
    policy = Policy(model, processor)
    loss = -policy.logprobs(_scored_batch(policy)).sum()
    loss.backward()
    # lora_B starts at zero, so it is the factor that receives gradient on the first step.
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_gradient_checkpointing_still_trains_lora(tiny_random_path):
    model, processor = load_vlm(tiny_random_path, gradient_checkpointing=True)
    model.train()
    policy = Policy(model, processor)
    (-policy.logprobs(_scored_batch(policy)).sum()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"quantization": "4bit", "lora": None}, "needs model.vlm.lora"),
        ({"quantization": "8bit", "lora": None}, "needs model.vlm.lora"),
        ({"quantization": "2bit"}, "model.vlm.quantization"),
        ({"dtype": "float64"}, "model.vlm.dtype"),
        ({"min_pixels": 1000, "max_pixels": 10}, "min_pixels"),
    ],
)
def test_invalid_combinations_fail_early(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


def test_max_pixels_bounds_the_visual_tokens(tiny_random_path):
    _, processor = load_vlm(tiny_random_path, lora=None, max_pixels=16 * 28 * 28)
    grid = processor.image_processor(images=[ClevrPairs(n=1)[0].original], return_tensors="pt")["image_grid_thw"]
    assert int(grid.prod()) // 4 <= 16


@pytest.mark.parametrize("family", ["qwen2.5-vl", "qwen2-vl"])
def test_min_and_max_pixels_bound_qwen_vl_pictures(family, family_path):
    """Pixel budgets reach the pictures the policy makes, for each Qwen-VL family."""
    image = ClevrPairs(n=1, size=(240, 160))[0].original
    tokens = {}
    for bound in ({"max_pixels": 16 * 28 * 28}, {"min_pixels": 60 * 28 * 28}, {}):
        model, processor = load_vlm(family_path(family), lora=None, **bound)
        (pic,) = Policy(model, processor).inputs.pictures([image])
        tokens[next(iter(bound), "none")] = int(pic.grid.prod()) // 4
    assert tokens["max_pixels"] <= 16 < tokens["none"] < 60 <= tokens["min_pixels"], tokens


def test_max_and_min_pixels_become_internvl_tile_budgets(family_path):
    """InternVL tiles pictures: max_pixels // tile area is its most tiles, ceil(min_pixels / tile area) its least."""
    path, image = family_path("internvl"), ClevrPairs(n=1, size=(240, 160))[0].original
    tile = 112 * 112
    tiles = {}
    for name, bound in (("one", {"max_pixels": tile + 1}), ("none", {}), ("two", {"max_pixels": 2 * tile})):
        model, processor = load_vlm(path, lora=None, **bound)
        (pic,) = Policy(model, processor).inputs.pictures([image])
        tiles[name] = pic.pixel_values.shape[0]
        if name == "two":
            assert (processor.image_processor.min_patches, processor.image_processor.max_patches) == (1, 2)
    assert tiles == {"one": 1, "two": 3, "none": 5}  # 2 tiles and the thumbnail; 4 and the thumbnail
    model, processor = load_vlm(path, lora=None, min_pixels=3 * tile)
    assert processor.image_processor.min_patches == 3
    with pytest.raises(
        ValueError, match=r"min_pixels=15000 and model.vlm.max_pixels=20000 leave no whole number of 112x"
    ):
        load_vlm(path, lora=None, min_pixels=15000, max_pixels=20000)


def test_pixel_bounds_that_mean_nothing_are_refused():
    """An image processor with a fixed size has no budget for max_pixels to set: refused, naming the key."""
    from types import SimpleNamespace

    from transformers import SiglipImageProcessor

    from vzero.model.load import bound_pixels

    processor = SimpleNamespace(image_processor=SiglipImageProcessor())
    with pytest.raises(
        ValueError, match=r"model.vlm.min_pixels / model.vlm.max_pixels mean nothing to SiglipImageProcessor"
    ):
        bound_pixels(processor, "some/model", None, 100_000)


@pytest.mark.parametrize("path", ["/nonexistent", "./nope", "../nope", "~/vzero-no-such-model", "a/b/c", "models/x/"])
def test_a_missing_local_path_says_no_such_folder(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"^no such folder: {re.escape(path)} \(model.vlm.name_or_path\)$"):
        load_vlm(path)


def test_a_missing_folder_under_a_local_folder_says_no_such_folder(tmp_path, monkeypatch):
    # "checkpoints/merged" could be a hub id; with a local "checkpoints" and no such hub model, the folder is meant.
    from huggingface_hub import constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import: the variable alone comes too late
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match=r"^no such folder: checkpoints/merged \(model.vlm.name_or_path\)"):
        load_vlm("checkpoints/merged")


def test_a_file_is_not_a_folder(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"not a folder: .*model.safetensors \(model.vlm.name_or_path\)"):
        load_vlm(str(tmp_path / "model.safetensors"))


def test_local_folders_load_with_home_expanded(tiny_random_path, monkeypatch):
    assert local_folder(tiny_random_path) == tiny_random_path
    monkeypatch.setenv("HOME", str(Path(tiny_random_path).parent))
    assert local_folder(f"~/{Path(tiny_random_path).name}") == tiny_random_path
    assert local_folder("Qwen/Qwen2.5-VL-7B-Instruct") == "Qwen/Qwen2.5-VL-7B-Instruct"  # a hub id passes through


def test_the_command_line_names_the_key(tmp_path, monkeypatch):
    import sys

    from vzero.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["vzero"])
    config = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
    with pytest.raises(FileNotFoundError, match=r"no such folder: /nonexistent \(model.vlm.name_or_path\)"):
        main(["fit", "--config", config, "--model.vlm.name_or_path", "/nonexistent", "--trainer.max_steps", "1"])


def test_an_uncached_hub_model_while_offline_says_how_to_opt_in(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match=r"vzero-tests/no-such-model \(model.vlm.name_or_path\).*HF_HUB_OFFLINE=0"):
        load_vlm("vzero-tests/no-such-model")


def test_lora_on_a_bf16_base_is_fp32_and_its_layers_answer_in_bf16(tiny_random_path):
    model, processor = load_vlm(tiny_random_path, dtype="bfloat16")
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())
    assert all(p.dtype == torch.bfloat16 for n, p in model.named_parameters() if n not in trainable)
    layer = next(m for n, m in model.named_modules() if n.endswith("q_proj"))
    x = torch.randn(2, layer.in_features, dtype=torch.bfloat16)
    assert layer(x).dtype == torch.bfloat16  # the fp32 adapter's input cast up, its output back to the base's dtype
    policy = Policy(model, processor)
    (-policy.logprobs(_scored_batch(policy)).sum()).backward()
    grads = [p.grad for n, p in trainable.items() if "lora_B" in n]
    assert all(g.dtype == torch.float32 for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_a_conversion_moves_trainable_weights_and_their_gradients_but_keeps_their_dtype(tiny_random_path):
    from vzero.model.load import keep_adapter_dtype

    model, _ = load_vlm(tiny_random_path)
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable[0].grad = torch.ones_like(trainable[0])
    model._apply(keep_adapter_dtype(lambda t: t.to("meta", torch.bfloat16), model))
    assert all(p.device.type == "meta" for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in trainable) and trainable[0].grad.dtype == torch.float32
    assert all(p.dtype == torch.bfloat16 for p in model.parameters() if not p.requires_grad)
