import torch

from vzero.data.pairs import ClevrPairs
from vzero.game import Game, GameConfig
from vzero.model import Policy
from vzero.model.sampling import SamplingConfig


def prompts_and_pictures(policy: Policy, n: int):
    pairs = ClevrPairs(n=n, seed=3, size=(240, 160))
    pics = policy.pictures([p.original for p in pairs])
    # Different seeds seat the speaker differently, so prompt lengths differ and padding varies.
    games = [Game(GameConfig(n_civilians=2 + i % 3), seed=i) for i in range(n)]
    return [policy.prompt_ids(g.pending()[0].messages, pic) for g, pic in zip(games, pics)], pics


def test_prompt_ids_match_the_processors_own_call(random_policy):
    policy = random_policy
    pair = ClevrPairs(n=1, seed=0, size=(240, 160))[0]
    messages = Game(GameConfig(), seed=0).pending()[0].messages
    (pic,) = policy.pictures([pair.original])
    chat = policy.processor.apply_chat_template(messages, add_generation_prompt=True)
    reference = policy.processor(text=[chat], images=[pair.original], return_tensors="pt")
    assert policy.prompt_ids(messages, pic) == reference["input_ids"][0].tolist()
    assert torch.equal(pic.pixel_values, reference["pixel_values"])
    assert torch.equal(pic.grid, reference["image_grid_thw"][0])


def test_batched_greedy_generation_equals_one_by_one(random_policy):
    prompts, pics = prompts_and_pictures(random_policy, 5)
    assert len({len(p) for p in prompts}) > 1
    greedy = SamplingConfig(temperature=0, max_new_tokens=12)
    batched, _ = random_policy.generate(prompts, pics, greedy)
    for prompt, pic, comp in zip(prompts, pics, batched):
        (single,), _ = random_policy.generate([prompt], [pic], greedy)
        assert single.ids == comp.ids


def test_chunking_by_max_batch_size_changes_nothing(random_policy):
    prompts, pics = prompts_and_pictures(random_policy, 5)
    greedy = SamplingConfig(temperature=0, max_new_tokens=8)
    whole, _ = random_policy.generate(prompts, pics, greedy)
    chunked, _ = Policy(random_policy.model, random_policy.processor, max_batch_size=2).generate(prompts, pics, greedy)
    assert [c.ids for c in whole] == [c.ids for c in chunked]


def test_completions_keep_eos_and_flag_truncation(random_policy):
    prompts, pics = prompts_and_pictures(random_policy, 3)
    greedy = SamplingConfig(temperature=0, max_new_tokens=6)
    cut, _ = random_policy.generate(prompts, pics, greedy)
    assert all(c.truncated and len(c.ids) == 6 for c in cut if not set(c.ids) & random_policy.eos_ids)
    # Declare each prompt's third greedy token an end-of-sequence token: generation must stop there and keep it.
    for prompt, pic, c in zip(prompts, pics, cut):
        stop = Policy(random_policy.model, random_policy.processor)
        stop.eos_ids = {c.ids[2]}
        (done,), _ = stop.generate([prompt], [pic], greedy)
        first = c.ids.index(c.ids[2])
        assert done.ids == c.ids[: first + 1] and not done.truncated


def test_rescoring_stored_tokens_gives_finite_logprobs(random_policy):
    prompts, pics = prompts_and_pictures(random_policy, 3)
    comps, _ = random_policy.generate(prompts, pics, SamplingConfig(max_new_tokens=7))
    inputs = random_policy.pack(prompts, pics, [c.ids for c in comps])
    with torch.no_grad():
        logp = random_policy.logprobs(inputs)
    assert logp.shape == (3, max(len(c.ids) for c in comps))
    assert torch.isfinite(logp).all()
    assert ((logp < 0) == inputs.completion_mask.bool()).all()


def test_multimodal_placeholders_are_never_sampled(random_policy):
    assert random_policy.suppress_ids and random_policy.model.config.image_token_id in random_policy.suppress_ids
    prompts, pics = prompts_and_pictures(random_policy, 4)
    comps, _ = random_policy.generate(prompts, pics, SamplingConfig(temperature=5.0, max_new_tokens=40))
    assert not {t for c in comps for t in c.ids} & set(random_policy.suppress_ids)


def test_logprobs_match_the_full_forward(random_policy):
    """Keeping only the completion's logits gives the same numbers as slicing a full forward pass."""
    prompts, pics = prompts_and_pictures(random_policy, 2)
    inputs = random_policy.pack(prompts, pics, [[50, 90, 110], [120]])
    with torch.no_grad():
        logp = random_policy.logprobs(inputs)
        full = random_policy.model(**inputs.model_kwargs()).logits  # [B, T, V]
    full_logp = torch.log_softmax(full[:, -4:-1].float(), -1).gather(-1, inputs.input_ids[:, -3:, None])[..., 0]
    assert torch.allclose(logp, full_logp * inputs.completion_mask, atol=1e-5)


def test_cached_vision_features_change_nothing(tiny_random_path):
    from vzero.model import load_vlm

    model, processor = load_vlm(tiny_random_path)  # LoRA on the language model: the vision tower is frozen
    cached, uncached = Policy(model.eval(), processor), Policy(model, processor, cache_vision=False)
    assert cached.cache_vision and not uncached.cache_vision
    prompts, pics = prompts_and_pictures(cached, 3)
    greedy = SamplingConfig(temperature=0, max_new_tokens=8)
    a, _ = cached.generate(prompts, pics, greedy)
    assert all(p.embeds is not None for p in pics)
    b, _ = uncached.generate(prompts, pics, greedy)
    assert [c.ids for c in a] == [c.ids for c in b]
    with torch.no_grad():
        la = cached.logprobs(cached.pack(prompts, pics, [c.ids for c in a]))
        lb = uncached.logprobs(uncached.pack(prompts, pics, [c.ids for c in a]))
    assert torch.allclose(la, lb, atol=1e-5)


def test_a_trainable_vision_tower_is_never_cached(tiny_random_path):
    from vzero.model import LoraSettings, load_vlm

    model, processor = load_vlm(tiny_random_path, lora=LoraSettings(adapt_vision=True))
    assert not Policy(model, processor).cache_vision
