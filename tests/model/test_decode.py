"""vzero's decoding loop against HF ``generate``: the same tokens, turn for turn, and the same sampling distribution."""

import numpy as np
import pytest
import torch
from scipy import stats

from vzero.data.pairs import ClevrPairs
from vzero.game import GameConfig
from vzero.model import Policy, load_vlm
from vzero.model.decode import decode
from vzero.model.sampling import Sampling, SamplingConfig, tempered_log_probs
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


def play(policy: Policy, sampling: Sampling, reference=None):
    pairs = ClevrPairs(n=3, seed=11, size=(240, 160))
    config = GameConfig(n_civilians=3, clue_rounds=2)
    engine = RolloutEngine(policy)
    return engine.play(list(pairs), config, sampling, seeds=[4, 5, 6], reference=reference, sample_seed=3)


def odd_seats(turn) -> bool:
    return turn.player % 2 == 1


@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampled"])
def test_every_turn_of_a_rollout_equals_generate(tiny, temperature):
    """Every clue and vote of three games (left padding, two pictures per game, the reference policy on some rows,
    completions ending at different steps) gets the very ids ``generate`` gives, and scores the same."""
    model, processor = tiny
    fast, slow = Policy(model, processor), Policy(model, processor, decoder="generate")
    assert (fast.decoder, slow.decoder) == ("vzero", "generate")
    stage = SamplingConfig(temperature=temperature, max_new_tokens=24)
    sampling = Sampling(clue=stage, decision=stage)
    games = [play(p, sampling, reference=odd_seats) for p in (fast, slow)]  # some rows with the adapter off
    turns = [[(s.prompt_ids, s.completion_ids, s.reference) for t in g for s in t.samples] for g in games]
    assert turns[0] == turns[1]
    lengths = {len(c) for _, c, _ in turns[0]}
    assert len(lengths) > 1 and any(not s.truncated for t in games[0] for s in t.samples)
    samples = [s for t in games[0] for s in t.samples]
    inputs = fast.pack(
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
    inputs = policy.pack(prompts, pics)
    greedy = SamplingConfig(temperature=0, max_new_tokens=16)
    expected = policy.model.generate(
        **inputs.model_kwargs(),
        **greedy.generate_kwargs(),
        eos_token_id=sorted(policy.eos_ids),
        pad_token_id=policy.pad_id,
        suppress_tokens=policy.suppress_ids,
    )[:, inputs.input_ids.shape[1] :]
    got = decode(
        policy.model,
        inputs.model_kwargs(),
        greedy,
        sorted(policy.eos_ids),
        policy.pad_id,
        suppress_ids=policy.suppress_ids,
        static_cache=static_cache,
    )
    assert torch.equal(got, expected)


def test_sampled_tokens_follow_the_models_distribution(random_policy):
    """1,200 keyed draws of a first token against 1,200 of HF's own multinomial sampling, and both against the
    tempered top-p softmax itself (chi-square tests, seeded; a wrong temperature or nucleus fails them)."""
    policy = random_policy
    model = policy.model
    prompts, pics = prompts_and_pictures(policy, 1)
    n, rows, temperature, top_p = 1200, 200, 0.1, 0.9  # ~230 tokens in the nucleus, ~50 of them likely enough to test
    inputs = policy.pack(prompts * rows, pics * rows)
    sampling = SamplingConfig(temperature=temperature, top_p=top_p, max_new_tokens=1)
    eos = sorted(policy.eos_ids)
    ours, theirs = [], []
    torch.manual_seed(0)
    for chunk in range(n // rows):
        keys = torch.arange(rows) + rows * chunk
        fast = decode(model, inputs.model_kwargs(), sampling, eos, policy.pad_id, keys, policy.suppress_ids)
        ours += fast[:, 0].tolist()
        theirs += model.generate(
            **inputs.model_kwargs(),
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=0,
            max_new_tokens=1,
            pad_token_id=policy.pad_id,
            suppress_tokens=policy.suppress_ids,
        )[:, -1].tolist()
    with torch.no_grad():
        logits = model(**policy.pack(prompts, pics).model_kwargs(), logits_to_keep=1).logits[0, -1].float()  # [V]
    logits[policy.suppress_ids] = float("-inf")
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
    from vzero.model.policy import _choose_decoder

    model, processor = random_policy.model, random_policy.processor
    assert Policy(model, processor, synced_gpus=True).decoder == "vzero"  # in lock-step: see test_distributed
    assert Policy(model, processor, decoder="generate").decoder == "generate"
    with pytest.raises(ValueError, match="model.decoder must be one of auto, vzero, generate, got 'fast'"):
        Policy(model, processor, decoder="fast")
    plain = torch.nn.Linear(2, 2)  # no rule for its positions
    assert _choose_decoder("auto", plain) == "generate"
    with pytest.raises(ValueError, match="model.decoder='vzero' cannot decode Linear: it has no rule for its"):
        _choose_decoder("vzero", plain)
