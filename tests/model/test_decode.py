"""vzero's decoding loop against HF ``generate``: the same tokens, turn for turn, and the same sampling distribution."""

import numpy as np
import pytest
import torch
from scipy import stats

from vzero.data.pairs import ClevrPairs
from vzero.game import GameConfig
from vzero.model import DecodingConfig, Policy, load_vlm
from vzero.model.decode import VzeroDecoder
from vzero.model.sampling import SamplingByStage, SamplingConfig, tempered_log_probs
from vzero.rollout import RolloutEngine

from .test_policy import prompts_and_pictures


@pytest.fixture(scope="module")
def tiny(tiny_path):
    """The pretrained tiny model with an adapter that matters: its completions end at different steps."""
    model, processor = load_vlm(tiny_path)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    return model.eval(), processor


def play(policy: Policy, sampling: SamplingByStage, side_of=None):
    pairs = ClevrPairs(n=3, seed=11, size=(240, 160))
    config = GameConfig(n_civilians=3, clue_rounds=2)
    engine = RolloutEngine(policy)
    return engine.play(list(pairs), config, sampling, seeds=[4, 5, 6], side_of=side_of, sample_seed=3).transcripts


def record_reuse(policy: Policy) -> list[list[int]]:
    """Each batch's stored-prefix lengths, row by row, as the policy's store hands them out."""
    batches, find = [], policy.prefixes.find

    def recording(*args):
        found = find(*args)
        batches.append(found.lengths)
        return found

    policy.prefixes.find = recording
    return batches


def odd_seats(turn) -> str:
    return "reference" if turn.player % 2 == 1 else "trained"


@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampled"])
def test_every_turn_of_a_rollout_equals_generate(tiny, temperature):
    """Every clue and vote of three games (left padding, two pictures per game, the reference policy on some rows,
    completions ending at different steps) gets the very ids ``generate`` gives, and scores the same."""
    model, processor = tiny
    fast, slow = Policy(model, processor), Policy(model, processor, decoding=DecodingConfig(decoder="generate"))
    assert (fast.decoder, slow.decoder) == ("vzero", "generate")
    batches = record_reuse(fast)
    stage = SamplingConfig(temperature=temperature, max_new_tokens=24)
    sampling = SamplingByStage(clue=stage, decision=stage)
    games = [play(p, sampling, side_of=odd_seats) for p in (fast, slow)]  # some rows with the adapter off
    turns = [[(s.prompt_ids, s.completion_ids, s.side) for t in g for s in t.samples] for g in games]
    assert turns[0] == turns[1]
    # Later turns reused earlier prompts' states; some batches mixed stored rows with rows that computed their whole
    # prompt, pictures included, and some mixed stored prefixes of different lengths.
    prompt_tokens = sum(len(s.prompt_ids) for t in games[0] for s in t.samples)  # every row looked in the store
    assert sum(map(sum, batches)) > 0.3 * prompt_tokens
    assert any(0 in b and set(b) != {0} for b in batches)
    assert any(len(set(b) - {0}) > 1 for b in batches)
    lengths = {len(c) for _, c, _ in turns[0]}
    assert len(lengths) > 1 and any(not s.truncated for t in games[0] for s in t.samples)
    samples = [s for t in games[0] for s in t.samples]
    inputs = fast.inputs.pack(
        [s.prompt_ids for s in samples],
        [s.picture for s in samples],
        [s.completion_ids for s in samples],
    )
    with torch.no_grad():
        assert torch.allclose(fast.logprobs(inputs), slow.logprobs(inputs), atol=1e-5)


@pytest.mark.parametrize("static_cache", [True, False], ids=["static", "dynamic"])
def test_greedy_decoding_equals_generate_on_the_random_model(random_policy, static_cache):
    """Full budgets (the random model never stops), prompts of different lengths, either cache."""
    policy = random_policy
    prompts, pics = prompts_and_pictures(policy, 5)
    inputs = policy.inputs.pack(prompts, pics)
    greedy = SamplingConfig(temperature=0, max_new_tokens=16)
    expected = policy.model.generate(
        **inputs.model_kwargs(),
        **greedy.generate_kwargs(),
        eos_token_id=sorted(policy.ids.eos),
        pad_token_id=policy.ids.pad,
        suppress_tokens=policy.ids.suppress,
    )[:, inputs.input_ids.shape[1] :]
    got = VzeroDecoder(policy.ids, static_cache=static_cache)(policy.model, inputs, greedy).tokens
    assert torch.equal(got, expected)


def test_sampled_tokens_follow_the_models_distribution(random_policy):
    """1,200 keyed draws of a first token against 1,200 of HF's own multinomial sampling, and both against the
    tempered top-p softmax itself (chi-square tests, seeded; a wrong temperature or nucleus fails them)."""
    policy = random_policy
    model = policy.model
    prompts, pics = prompts_and_pictures(policy, 1)
    n, rows, temperature, top_p = 1200, 200, 0.1, 0.9  # ~230 tokens in the nucleus, ~50 of them likely enough to test
    inputs = policy.inputs.pack(prompts * rows, pics * rows)
    sampling = SamplingConfig(temperature=temperature, top_p=top_p, max_new_tokens=1)
    decoder = VzeroDecoder(policy.ids)
    ours, theirs = [], []
    torch.manual_seed(0)
    for chunk in range(n // rows):
        keys = torch.arange(rows) + rows * chunk
        fast = decoder(model, inputs, sampling, keys).tokens
        ours += fast[:, 0].tolist()
        theirs += model.generate(
            **inputs.model_kwargs(),
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=0,
            max_new_tokens=1,
            pad_token_id=policy.ids.pad,
            suppress_tokens=policy.ids.suppress,
        )[:, -1].tolist()
    with torch.no_grad():
        logits = (
            model(**policy.inputs.pack(prompts, pics).model_kwargs(), logits_to_keep=1).logits[0, -1].float()
        )  # [V]
    logits[policy.ids.suppress] = float("-inf")
    probs = tempered_log_probs(logits[None], temperature, top_p)[0].exp().double().numpy()  # [V]
    wider = tempered_log_probs(logits[None], temperature, top_p + 1e-3)[0].exp().numpy()  # the boundary's slack
    counts = {name: np.bincount(draws, minlength=len(probs)) for name, draws in (("ours", ours), ("theirs", theirs))}
    assert all(c[wider == 0].sum() == 0 for c in counts.values())  # never outside the nucleus
    keep = np.flatnonzero(probs * n >= 5)  # cells big enough for the test; the rest pooled into one
    assert len(keep) > 20
    cells = {name: np.append(c[keep], n - c[keep].sum()) for name, c in counts.items()}
    expected = np.append(probs[keep], 1 - probs[keep].sum()) * n
    for observed in cells.values():
        assert stats.chisquare(observed, expected).pvalue > 1e-3
    assert stats.chi2_contingency(np.stack(list(cells.values()))).pvalue > 1e-3
    # A sampler with the wrong temperature is caught by the same test.
    hot = tempered_log_probs(logits[None], 2 * temperature, top_p)[0].exp().double().numpy()
    assert stats.chisquare(cells["ours"], np.append(hot[keep], 1 - hot[keep].sum()) * n).pvalue < 1e-6


def test_the_decoder_is_chosen_by_name_and_falls_back_to_generate(random_policy):
    from vzero.model.decode import choose_decoder

    model, processor = random_policy.model, random_policy.processor
    assert Policy(model, processor, synced_gpus=True).decoder == "vzero"  # in lock-step: see test_distributed
    assert Policy(model, processor, decoding=DecodingConfig(decoder="generate")).decoder == "generate"
    with pytest.raises(ValueError, match="model.decoding.decoder must be one of auto, vzero, generate, got 'fast'"):
        DecodingConfig(decoder="fast")
    plain = torch.nn.Linear(2, 2)  # no rule for its positions
    assert choose_decoder("auto", plain) == "generate"
    with pytest.raises(ValueError, match="model.decoding.decoder='vzero' cannot decode Linear: it has no rule for"):
        choose_decoder("vzero", plain)
    with pytest.raises(ValueError, match="model.decoding.compile needs vzero's decoder, but this model decodes with"):
        Policy(model, processor, decoding=DecodingConfig(decoder="generate", compile=True))
    with pytest.raises(ValueError, match="model.decoding.reuse_prompts_gb must be >= 0, got -1"):
        DecodingConfig(reuse_prompts_gb=-1)


def compiled_policy(model, processor, backend: str) -> Policy:
    policy = Policy(model, processor, decoding=DecodingConfig(compile=True))
    policy.decode.step.backend = backend
    return policy


def test_a_compiled_step_plays_the_very_same_games(tiny):
    """The step captured as one graph (``fullgraph``; aot_eager keeps CI quick: the capture, not inductor's code, is
    what a CUDA graph needs) plays every turn as the eager loop does, through batches of different rows and lengths,
    with the adapter on and off, and with mixed rows (those run eagerly)."""
    model, processor = tiny
    torch._dynamo.reset()
    eager, compiled = Policy(model, processor), compiled_policy(model, processor, "aot_eager")
    stage = SamplingConfig(temperature=1.0, max_new_tokens=24)
    sampling = SamplingByStage(clue=stage, decision=stage)
    games = [play(p, sampling, side_of=odd_seats) for p in (eager, compiled)]  # clue turns on one side, mixed votes
    turns = [[(s.prompt_ids, s.completion_ids) for t in g for s in t.samples] for g in games]
    assert turns[0] == turns[1]
    assert compiled.decode.step._fn is not None  # the compiled path really ran


def test_a_compiled_steps_caches_keep_their_addresses(random_policy):
    """A CUDA graph replays on the addresses it recorded: every batch of a shape seen before gets the very same cache
    storage (emptied), whatever came in between; only a batch larger than any before moves it."""
    from vzero.model.step import BUCKET, DecodeStep

    step, net, cpu = DecodeStep(compile=True), random_policy.model, torch.device("cpu")
    prompts, pics = prompts_and_pictures(random_policy, 4)
    inputs = random_policy.inputs.pack(prompts, pics)
    width = inputs.input_ids.shape[1]
    first = step.cache(net, 4, width + 1, cpu)
    assert first.get_max_length() % BUCKET == 0 and width < first.get_max_length() <= width + BUCKET
    with torch.no_grad():
        net(**inputs.model_kwargs(), cache=first, use_cache=True)
    assert first.get_seq_length() == width and first.layers[0].keys.any()
    address = [(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in first.layers]
    other = step.cache(net, 3, width + 1, cpu)  # another shape in between
    assert other.layers[0].keys.shape[0] == 3 and other.layers[0].keys.data_ptr() == address[0][0]
    again = step.cache(net, 4, width + 2, cpu)  # the same bucket: the same shape
    assert [(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in again.layers] == address
    assert again.get_seq_length() == 0 and all(not layer.keys.any() for layer in again.layers)
    larger = step.cache(net, 8, width + 1, cpu)
    assert larger.layers[0].keys.data_ptr() != address[0][0]
    assert DecodeStep().cache(net, 4, width + 1, cpu).get_max_length() == width + 1  # eager: what the batch needs


def test_a_step_that_cannot_be_captured_says_so(random_policy, monkeypatch):
    policy = compiled_policy(random_policy.model, random_policy.processor, "eager")
    base = getattr(policy.model, "get_base_model", lambda: policy.model)()
    forward = type(base).forward

    def breaks(self, *args, **kwargs):
        torch._dynamo.graph_break()
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(base), "forward", breaks)
    prompts, pics = prompts_and_pictures(policy, 2)
    sampling = SamplingConfig(temperature=0, max_new_tokens=4)
    with pytest.raises(RuntimeError, match="model.decoding.compile: torch.compile could not capture .* in one graph"):
        policy.generate(prompts, pics, sampling)


def test_sliding_window_models_neither_reuse_prompts_nor_compile(random_policy, monkeypatch):
    """A sliding window's cache is not laid out by absolute column: no stored prompts, and no compiled step."""
    import copy
    from types import SimpleNamespace

    import vzero.model.policy as policies
    from vzero.model.step import DecodeStep, has_sliding_layers

    text = copy.deepcopy(random_policy.model.config.get_text_config(decoder=True))
    assert not has_sliding_layers(random_policy.model)
    text.layer_types = ["sliding_attention"] + list(text.layer_types[1:])
    text.sliding_window = 16
    sliding = SimpleNamespace(config=text)
    assert has_sliding_layers(sliding)
    with pytest.raises(ValueError, match="model.decoding.compile does not cover models with sliding-window attention"):
        DecodeStep(compile=True).cache(sliding, 2, 40, torch.device("cpu"))
    monkeypatch.setattr(policies, "has_sliding_layers", lambda model: True)
    policy = Policy(random_policy.model, random_policy.processor)
    with policy.rollout():
        assert not policy.prefixes.active


def test_across_ranks_prompts_are_reused_only_with_cached_pictures(random_policy):
    """Under FSDP pictures are encoded by each prefill, and a rank whose rows all reused their pictures would skip
    the vision tower's weight gathers that another rank runs: no reuse there. Cached features or one process keep it."""
    model, processor = random_policy.model, random_policy.processor
    vision = [(p, p.requires_grad) for n, p in model.named_parameters() if "visual" in n]
    try:
        for p, _ in vision:  # frozen, as LoRA on the language model leaves it, so that its features can be cached
            p.requires_grad_(False)
        for synced, cache, expected in [(True, False, False), (True, True, True), (False, False, True)]:
            policy = Policy(model, processor, synced_gpus=synced, cache_vision=cache)
            assert policy.inputs.cache_vision == cache
            with policy.rollout():
                assert policy.prefixes.active == expected, (synced, cache)
    finally:
        for p, grad in vision:
            p.requires_grad_(grad)
