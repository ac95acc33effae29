import torch

from vzero.data.pairs import ClevrPairs
from vzero.game import Game, GameConfig
from vzero.model import DecodingConfig, Policy
from vzero.model.sampling import SamplingConfig


def prompts_and_pictures(policy: Policy, n: int):
    pairs = ClevrPairs(n=n, seed=3, size=(240, 160))
    pics = policy.inputs.pictures([p.original for p in pairs])
    # Different seeds seat the speaker differently, so prompt lengths differ and padding varies.
    games = [Game(GameConfig(n_civilians=2 + i % 3), seed=i) for i in range(n)]
    return [policy.inputs.prompt_ids(g.pending()[0].messages, pic) for g, pic in zip(games, pics)], pics


def test_prompt_ids_match_the_processors_own_call(random_policy):
    policy = random_policy
    pair = ClevrPairs(n=1, seed=0, size=(240, 160))[0]
    messages = Game(GameConfig(), seed=0).pending()[0].messages
    (pic,) = policy.inputs.pictures([pair.original])
    chat = policy.processor.apply_chat_template(messages, add_generation_prompt=True)
    reference = policy.processor(text=[chat], images=[pair.original], return_tensors="pt")
    assert policy.inputs.prompt_ids(messages, pic) == reference["input_ids"][0].tolist()
    assert torch.equal(pic.pixel_values, reference["pixel_values"])
    assert torch.equal(pic.grid, reference["image_grid_thw"][0])


def test_batched_greedy_generation_equals_one_by_one(random_policy):
    prompts, pics = prompts_and_pictures(random_policy, 5)
    assert len({len(p) for p in prompts}) > 1
    greedy = SamplingConfig(temperature=0, max_new_tokens=12)
    batched = random_policy.generate(prompts, pics, greedy)
    for prompt, pic, comp in zip(prompts, pics, batched):
        (single,) = random_policy.generate([prompt], [pic], greedy)
        assert single.ids == comp.ids


def test_chunking_by_max_batch_size_changes_nothing(random_policy):
    prompts, pics = prompts_and_pictures(random_policy, 5)
    greedy = SamplingConfig(temperature=0, max_new_tokens=8)
    whole = random_policy.generate(prompts, pics, greedy)
    chunked = Policy(random_policy.model, random_policy.processor, decoding=DecodingConfig(max_batch_size=2))
    chunked = chunked.generate(prompts, pics, greedy)
    assert [c.ids for c in whole] == [c.ids for c in chunked]


def test_completions_keep_eos_and_flag_truncation(random_policy):
    prompts, pics = prompts_and_pictures(random_policy, 3)
    greedy = SamplingConfig(temperature=0, max_new_tokens=6)
    cut = random_policy.generate(prompts, pics, greedy)
    assert all(c.truncated and len(c.ids) == 6 for c in cut if not set(c.ids) & random_policy.ids.eos)
    # Declare each prompt's third greedy token an end-of-sequence token: generation must stop there and keep it.
    config = random_policy.model.generation_config
    for prompt, pic, c in zip(prompts, pics, cut):
        eos, config.eos_token_id = config.eos_token_id, c.ids[2]
        try:
            stop = Policy(random_policy.model, random_policy.processor)
        finally:
            config.eos_token_id = eos
        (done,) = stop.generate([prompt], [pic], greedy)
        first = c.ids.index(c.ids[2])
        assert done.ids == c.ids[: first + 1] and not done.truncated


def test_rescoring_stored_tokens_gives_finite_logprobs(random_policy):
    prompts, pics = prompts_and_pictures(random_policy, 3)
    comps = random_policy.generate(prompts, pics, SamplingConfig(max_new_tokens=7))
    inputs = random_policy.inputs.pack(prompts, pics, [c.ids for c in comps])
    with torch.no_grad():
        logp = random_policy.logprobs(inputs)
    assert logp.shape == (3, max(len(c.ids) for c in comps))
    assert torch.isfinite(logp).all()
    assert ((logp < 0) == inputs.completion_mask.bool()).all()


def test_multimodal_placeholders_are_never_sampled(random_policy):
    assert random_policy.ids.suppress and random_policy.model.config.image_token_id in random_policy.ids.suppress
    prompts, pics = prompts_and_pictures(random_policy, 4)
    comps = random_policy.generate(prompts, pics, SamplingConfig(temperature=5.0, max_new_tokens=40))
    assert not {t for c in comps for t in c.ids} & set(random_policy.ids.suppress)


def test_logprobs_match_the_full_forward(random_policy):
    """Keeping only the completion's logits gives the same numbers as slicing a full forward pass (with the ids that
    generation never samples removed from the distribution)."""
    prompts, pics = prompts_and_pictures(random_policy, 2)
    inputs = random_policy.inputs.pack(prompts, pics, [[50, 90, 110], [120]])
    with torch.no_grad():
        logp = random_policy.logprobs(inputs)
        full = random_policy.model(**inputs.model_kwargs()).logits.float()  # [B, T, V]
    full[..., random_policy.ids.suppress] = float("-inf")
    full_logp = torch.log_softmax(full[:, -4:-1], -1).gather(-1, inputs.input_ids[:, -3:, None])[..., 0]
    assert torch.allclose(logp, full_logp * inputs.completion_mask, atol=1e-5)


def test_cached_vision_features_change_nothing(tiny_random_path):
    from vzero.model import load_vlm

    model, processor = load_vlm(tiny_random_path)  # LoRA on the language model: the vision tower is frozen
    cached, uncached = Policy(model.eval(), processor), Policy(model, processor, cache_vision=False)
    assert cached.inputs.cache_vision and not uncached.inputs.cache_vision
    prompts, pics = prompts_and_pictures(cached, 3)
    greedy = SamplingConfig(temperature=0, max_new_tokens=8)
    a = cached.generate(prompts, pics, greedy)
    assert all(p.embeds is not None for p in pics)
    b = uncached.generate(prompts, pics, greedy)
    assert [c.ids for c in a] == [c.ids for c in b]
    with torch.no_grad():
        la = cached.logprobs(cached.inputs.pack(prompts, pics, [c.ids for c in a]))
        lb = uncached.logprobs(uncached.inputs.pack(prompts, pics, [c.ids for c in a]))
    assert torch.allclose(la, lb, atol=1e-5)


def test_a_trainable_vision_tower_is_never_cached(tiny_random_path):
    from vzero.model import LoraConfig, load_vlm

    model, processor = load_vlm(tiny_random_path, lora=LoraConfig(adapt_vision=True))
    assert not Policy(model, processor).inputs.cache_vision


def test_sampled_rows_depend_on_their_keys_not_on_their_batch(random_policy):
    prompts, pics = prompts_and_pictures(random_policy, 5)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=10)
    keys = [11, 22, 33, 44, 55]
    whole = random_policy.generate(prompts, pics, sampling, keys=keys)
    chunked = Policy(random_policy.model, random_policy.processor, decoding=DecodingConfig(max_batch_size=2))
    assert [c.ids for c in chunked.generate(prompts, pics, sampling, keys=keys)] == [c.ids for c in whole]
    (alone,) = random_policy.generate(prompts[3:4], pics[3:4], sampling, keys=keys[3:4])
    assert alone.ids == whole[3].ids
    other = random_policy.generate(prompts, pics, sampling, keys=[k + 1 for k in keys])
    assert [c.ids for c in other] != [c.ids for c in whole]  # and the keys do matter


def test_logprobs_are_those_of_the_tempered_distribution_generate_samples(random_policy):
    """At T = 0.7, scoring the generated tokens gives the log-probs of HF's own tempered sampling distribution."""
    prompts, pics = prompts_and_pictures(random_policy, 3)
    inputs = random_policy.inputs.pack(prompts, pics).to(random_policy.device)
    torch.manual_seed(0)
    with torch.no_grad():
        out = random_policy.model.generate(
            **inputs.model_kwargs(),
            do_sample=True,
            temperature=0.7,
            top_k=0,
            top_p=1.0,
            max_new_tokens=8,
            suppress_tokens=random_policy.ids.suppress,
            eos_token_id=sorted(random_policy.ids.eos),
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=random_policy.ids.pad,
        )
    new = out.sequences[:, inputs.input_ids.shape[1] :].tolist()  # [B, 8]
    ends = [next((j + 1 for j, t in enumerate(row) if t in random_policy.ids.eos), len(row)) for row in new]
    completions = [row[:end] for row, end in zip(new, ends)]
    sampled = torch.stack([torch.log_softmax(s.float(), -1) for s in out.scores], 1)  # [B, 8, V]
    expected = sampled.gather(-1, torch.tensor(new).unsqueeze(-1)).squeeze(-1)  # [B, 8]
    packed = random_policy.inputs.pack(prompts, pics, completions)
    with torch.no_grad():
        scored = random_policy.logprobs(packed, temperature=0.7)  # [B, C], right-aligned
        untempered = random_policy.logprobs(packed)
    for i, end in enumerate(ends):
        assert (scored[i, scored.shape[1] - end :] - expected[i, :end]).abs().max() < 1e-4
        assert (untempered[i, scored.shape[1] - end :] - expected[i, :end]).abs().max() > 1e-2  # T = 1: off-policy


def test_mixed_rows_equal_separate_adapter_on_and_off_calls(tiny_random_path):
    from vzero.model import load_vlm

    model, processor = load_vlm(tiny_random_path)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)  # an adapter that matters
    policy = Policy(model.eval(), processor)
    prompts, pics = prompts_and_pictures(policy, 4)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=10)
    keys, flags = [1, 2, 3, 4], [False, True, True, False]
    mixed = policy.generate(prompts, pics, sampling, keys=keys, sides=["reference" if f else "trained" for f in flags])
    trained = policy.generate(prompts, pics, sampling, keys=keys)
    with policy.reference():
        reference = policy.generate(prompts, pics, sampling, keys=keys)
    assert [m.ids for m in mixed] == [(r if f else t).ids for t, r, f in zip(trained, reference, flags)]
    assert [t.ids for t in trained] != [r.ids for r in reference]
