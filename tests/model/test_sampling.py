import math

import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from vzero.game import Stage
from vzero.model.sampling import (
    KeyedSampler,
    SamplingByStage,
    SamplingConfig,
    keyed_uniform,
    row_key,
    tempered_log_probs,
)


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 1.0), (1.3, 0.8), (0.5, 0.3)])
def test_tempered_log_probs_are_hf_warpers_renormalised(temperature, top_p):
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    warped = LogitsProcessorList([TemperatureLogitsWarper(temperature), TopPLogitsWarper(top_p)])(None, logits.clone())
    expected = torch.log_softmax(warped, dim=-1)
    got = tempered_log_probs(logits, temperature, top_p)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    finite = torch.isfinite(expected)
    assert torch.allclose(got[finite], expected[finite], atol=1e-5)


def test_keyed_uniforms_are_uniform_and_differ_by_key_step_and_token():
    keys = torch.tensor([row_key(k) for k in range(64)])
    u = keyed_uniform(keys, 3, 1000)  # [64, 1000]
    assert u.min() > 0 and u.max() < 1
    counts = torch.histc(u.float(), bins=10, min=0, max=1)
    expected = u.numel() / 10
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 27.9  # chi-square, 9 degrees of freedom, p = 0.001
    assert not torch.equal(u, keyed_uniform(keys, 4, 1000))
    assert torch.equal(keyed_uniform(keys[5:6], 3, 1000), u[5:6])  # a row's numbers depend on its key alone
    # neighbouring tokens and neighbouring keys are uncorrelated
    assert abs(float(torch.corrcoef(torch.stack([u[:, :-1].flatten(), u[:, 1:].flatten()]))[0, 1])) < 0.02
    assert abs(float(torch.corrcoef(torch.stack([u[:-1].flatten(), u[1:].flatten()]))[0, 1])) < 0.02


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.9)])
def test_keyed_sampler_draws_from_the_tempered_distribution(temperature, top_p):
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, float("-inf")]])
    n = 20000
    keys = torch.tensor([row_key("draw", i) for i in range(n)])
    sampler = KeyedSampler(keys, temperature, top_p)
    picks = sampler(torch.zeros(n, 3, dtype=torch.long), logits.expand(n, -1)).argmax(-1)
    freq = torch.bincount(picks, minlength=6).double() / n
    probs = tempered_log_probs(logits, temperature, top_p).exp()[0].double()
    assert freq[5] == 0  # a masked token is never drawn
    support = probs > 0
    chi2 = float((n * (freq[support] - probs[support]) ** 2 / probs[support]).sum())
    assert chi2 < 20.5  # chi-square, at most 4 degrees of freedom, p = 0.0004
    assert torch.all(freq[~support] == 0)


def test_each_step_draws_fresh_noise():
    keys = torch.tensor([row_key(1), row_key(2)])
    sampler = KeyedSampler(keys, 1.0)
    flat = torch.zeros(2, 100)
    first = sampler(torch.zeros(2, 7, dtype=torch.long), flat)
    second = sampler(torch.zeros(2, 8, dtype=torch.long), flat)
    assert not torch.equal(first, second) and not torch.equal(first[0], first[1])


def test_row_keys_are_stable_and_distinct():
    assert row_key(1, 2, "clue") == row_key(1, 2, "clue")
    assert len({row_key(0, g, "clue", r, p, 0) for g in range(10) for r in range(2) for p in range(5)}) == 100
    assert -(2**63) <= row_key("x") < 2**63


def test_sampling_per_stage_and_scoring_temperature():
    s = SamplingByStage(SamplingConfig(temperature=0.7), SamplingConfig(temperature=0))
    assert s.for_stage(Stage.CLUE).temperature == 0.7 and s.for_stage("decision").temperature == 0
    assert s.clue.scoring_temperature == 0.7 and s.decision.scoring_temperature == 1.0
    assert SamplingConfig().generate_kwargs()["do_sample"] is False  # the keyed sampler does the sampling
    with pytest.raises(ValueError, match="temperature"):
        KeyedSampler(torch.tensor([1]), 0.0)
    assert math.isclose(SamplingConfig(temperature=1.5).scoring_temperature, 1.5)
