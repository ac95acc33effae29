"""Every model family the paper trains, through the whole path at toy size: Qwen2.5-VL, Qwen2-VL and InternVL.

Each toy is a real HF class with its real processor and random weights (:mod:`vzero.tiny.families`), loaded through
``load_vlm`` as a hub checkpoint would be. The training step and resume run through ``vzero fit`` in
``tests/cli/test_families.py``.
"""

import pytest
import torch

from vzero.data.pairs import ClevrPairs
from vzero.game import Game, GameConfig
from vzero.model import DecodingConfig, Policy, load_vlm
from vzero.model.load import is_vision
from vzero.model.sampling import SamplingByStage, SamplingConfig
from vzero.rollout import RolloutEngine

FAMILIES = ["qwen2.5-vl", "qwen2-vl", "internvl"]
CLASSES = {
    "qwen2.5-vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
    "qwen2-vl": ("Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"),
    "internvl": ("InternVLForConditionalGeneration", "InternVLProcessor"),
}
PICTURE_TOKENS = {
    "qwen2.5-vl": {"<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"},
    "qwen2-vl": {"<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"},
    "internvl": {"<img>", "</img>", "<IMG_CONTEXT>", "<video>"},
}


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, family_path):
    """``(name, folder, model with LoRA in eval mode, processor)`` for each family."""
    path = family_path(request.param)
    model, processor = load_vlm(path)
    return request.param, path, model.eval(), processor


def prompts_and_pictures(policy: Policy, n: int):
    # Pictures of different shapes: different tile counts (InternVL) and visual-token counts (Qwen-VL) in one batch.
    pairs = [ClevrPairs(n=1, seed=3 + i, size=size)[0] for i, size in enumerate([(240, 160), (160, 240), (128, 128)])]
    pics = policy.inputs.pictures([pairs[i % len(pairs)].original for i in range(n)])
    games = [Game(GameConfig(n_civilians=2 + i % 3), seed=i) for i in range(n)]
    return [policy.inputs.prompt_ids(g.pending()[0].messages, pic) for g, pic in zip(games, pics)], pics


def test_loads_its_own_classes_with_lora_on_the_language_model_only(family):
    name, _, model, processor = family
    assert (type(model.get_base_model()).__name__, type(processor).__name__) == CLASSES[name]
    adapted = [n for n, p in model.named_parameters() if p.requires_grad]
    assert adapted and all("lora_" in n and not is_vision(n) for n in adapted)
    assert any("lora_" in n and "language_model" in n for n in adapted)


def test_pictures_and_prompts_are_the_processors_own(family):
    """Preprocessing through the image processor gives what the processor's own call gives: its tiling default
    included (InternVL crops to tiles only when its processor asks)."""
    name, _, model, processor = family
    policy = Policy(model, processor)
    messages = Game(GameConfig(), seed=0).pending()[0].messages
    image = ClevrPairs(n=1, seed=0, size=(240, 160))[0].original
    (pic,) = policy.inputs.pictures([image])
    chat = processor.apply_chat_template(messages, add_generation_prompt=True)
    reference = processor(text=[chat], images=[image], return_tensors="pt")
    assert torch.equal(pic.pixel_values, reference["pixel_values"])
    assert policy.inputs.prompt_ids(messages, pic) == reference["input_ids"][0].tolist()
    if name == "internvl":
        assert pic.pixel_values.shape[0] > 1  # several tiles and a thumbnail, as the processor makes them


def test_every_picture_token_is_suppressed(family, monkeypatch):
    """Every token that structures a picture is suppressed, even when the model wants nothing else."""
    name, _, model, processor = family
    policy = Policy(model, processor)
    tokens = set(processor.tokenizer.convert_ids_to_tokens(policy.ids.suppress))
    assert tokens == PICTURE_TOKENS[name]
    ids = torch.tensor(policy.ids.suppress)

    def favour(module, args, out):  # the lm_head's output: the picture tokens 1e4 above every other token
        out[..., ids] += 1e4
        return out

    handle = model.get_output_embeddings().register_forward_hook(favour)
    try:
        prompts, pics = prompts_and_pictures(policy, 3)
        comps = policy.generate(prompts, pics, SamplingConfig(temperature=1.0, max_new_tokens=6))
    finally:
        handle.remove()
    assert all(c.ids for c in comps)
    assert not {t for c in comps for t in c.ids} & set(policy.ids.suppress)


@pytest.mark.parametrize("cache", [True, False], ids=["cache", "no-cache"])
def test_greedy_logprobs_equal_generations(family, cache):
    """Scoring the generated ids gives the log-probs generation chose them by (with and without the vision cache),
    for pictures of different sizes, left padding and completions of different lengths."""
    _, _, model, processor = family
    policy = Policy(model, processor, cache_vision=cache)
    assert policy.inputs.cache_vision == cache
    prompts, pics = prompts_and_pictures(policy, 4)
    assert len({len(p) for p in prompts}) > 1
    comps = policy.generate(prompts, pics, SamplingConfig(temperature=0, max_new_tokens=10))
    inputs = policy.inputs.pack(prompts, pics).to(policy.device)
    with torch.no_grad():
        out = model.generate(
            **inputs.model_kwargs(),
            do_sample=False,
            max_new_tokens=10,
            suppress_tokens=policy.ids.suppress,
            eos_token_id=sorted(policy.ids.eos),
            pad_token_id=policy.ids.pad,
            output_logits=True,
            return_dict_in_generate=True,
        )
        scored = policy.logprobs(policy.inputs.pack(prompts, pics, [c.ids for c in comps]))  # [B, C]
    logits = torch.stack(out.logits, 1).float()  # [B, N, V]: generation's raw logits per step
    logits[..., policy.ids.suppress] = float("-inf")
    generated = torch.log_softmax(logits, -1)
    width = scored.shape[1]
    for row, comp in enumerate(comps):
        assert out.sequences[row, inputs.input_ids.shape[1] :][: len(comp.ids)].tolist() == comp.ids
        chosen = generated[row, torch.arange(len(comp.ids)), torch.tensor(comp.ids)]
        assert torch.allclose(scored[row, width - len(comp.ids) :], chosen, atol=1e-5)


def test_the_vision_cache_changes_nothing(family):
    """Sampled games and their log-probs are the same with each picture's features computed once as without."""
    _, _, model, processor = family
    cached, uncached = Policy(model, processor), Policy(model, processor, cache_vision=False)
    assert cached.inputs.cache_vision
    pairs = ClevrPairs(n=2, seed=5, size=(240, 160))
    sampling = SamplingByStage(clue=SamplingConfig(max_new_tokens=6), decision=SamplingConfig(max_new_tokens=6))
    config = GameConfig(n_civilians=2, clue_rounds=1)
    games = [
        RolloutEngine(p).play(list(pairs), config, sampling, sample_seed=7).transcripts for p in (cached, uncached)
    ]
    ids = [[[s.completion_ids for s in t.samples] for t in g] for g in games]
    assert ids[0] == ids[1]
    samples = [s for t in games[0] for s in t.samples]
    prompts, pics = [s.prompt_ids for s in samples], [s.picture for s in samples]
    comps = [s.completion_ids for s in samples]
    assert all(p.embeds is not None for p in pics)
    with torch.no_grad():
        a = cached.logprobs(cached.inputs.pack(prompts, pics, comps))
        b = uncached.logprobs(uncached.inputs.pack(prompts, pics, comps))
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("cache", [True, False], ids=["features-cached", "pixels"])
def test_prompt_reuse_changes_nothing(family, cache, monkeypatch):
    """Games played reusing earlier prompts' keys and values are those played computing every prompt whole, with each
    picture's features cached or its pixels encoded by every prefill that shows it: the same ids, and the same logits
    at every step of every turn (1e-4)."""
    import vzero.model.decode as decoding

    _, _, model, processor = family
    reusing = Policy(model, processor, cache_vision=cache)
    plain = Policy(model, processor, decoding=DecodingConfig(reuse_prompts_gb=0), cache_vision=cache)
    pairs = ClevrPairs(n=2, seed=5, size=(240, 160))
    sampling = SamplingByStage(clue=SamplingConfig(max_new_tokens=6), decision=SamplingConfig(max_new_tokens=6))
    config = GameConfig(n_civilians=2, clue_rounds=2)
    logits, pick = [], decoding.next_tokens

    def recording(scores, *args):
        logits[-1].append(scores.clone())
        return pick(scores, *args)

    monkeypatch.setattr(decoding, "next_tokens", recording)
    games, reused = [], []
    for policy in (reusing, plain):
        logits.append([])
        rollout = RolloutEngine(policy).play(list(pairs), config, sampling, sample_seed=7)
        games.append(rollout.transcripts)
        reused.append(rollout.reused_prompt_tokens)
    ids = [[[s.completion_ids for s in t.samples] for t in g] for g in games]
    prompt_tokens = sum(len(s.prompt_ids) for t in games[0] for s in t.samples)
    assert ids[0] == ids[1]
    assert len(logits[0]) == len(logits[1]) > 0
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(*logits))
    assert reused[0] > 0.2 * prompt_tokens
    assert reused[1] == 0


def test_a_policy_gradient_reaches_every_adapted_layer(family):
    """The loss of played games backpropagates into the LoRA layers of the language model, not the vision tower."""
    _, _, model, processor = family
    policy = Policy(model, processor)
    prompts, pics = prompts_and_pictures(policy, 3)
    comps = policy.generate(prompts, pics, SamplingConfig(max_new_tokens=5))
    model.zero_grad(set_to_none=True)
    logp = policy.logprobs(policy.inputs.pack(prompts, pics, [c.ids for c in comps]))  # [B, C]
    (-(logp * torch.tensor([[1.0], [-0.5], [2.0]])).sum()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)  # B starts at zero, so A's grad is 0
    model.zero_grad(set_to_none=True)
