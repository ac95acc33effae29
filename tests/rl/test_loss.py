import math

import pytest
import torch

from vzero.rl.loss import LossConfig, aggregate, k3_kl, normalizer, policy_loss, ppo_clip


def test_k3_by_hand():
    # delta = ref - logp: 0 -> 0; ln 2 -> 2 - ln 2 - 1 = 0.30685; -ln 2 -> 0.5 + ln 2 - 1 = 0.19315
    logp = torch.tensor([[-1.0, -1.0 - math.log(2), -1.0 + math.log(2)]])
    ref = torch.tensor([[-1.0, -1.0, -1.0]])
    assert k3_kl(logp, ref) == pytest.approx(torch.tensor([[0.0, 1 - math.log(2), math.log(2) - 0.5]]), abs=1e-6)
    assert (k3_kl(torch.randn(4, 5), torch.randn(4, 5)) >= 0).all()


def test_ppo_clip_by_hand():
    # ratios 1.5, 0.5, 1.1 with eps 0.2
    old = torch.zeros(2, 3)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1], [1.5, 0.5, 1.1]]))
    adv = torch.tensor([2.0, -1.0])
    loss, clipped = ppo_clip(logp, old, adv, eps=0.2)
    # A = +2: min(1.5*2, 1.2*2) = 2.4 (clipped), min(0.5*2, 0.8*2) = 1.0, min(2.2, 2.2) = 2.2
    # A = -1: min(-1.5, -1.2) = -1.5, min(-0.5, -0.8) = -0.8 (clipped), min(-1.1, -1.1) = -1.1
    assert loss == pytest.approx(torch.tensor([[-2.4, -1.0, -2.2], [1.5, 0.8, 1.1]]), abs=1e-6)
    assert clipped.tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]


def test_first_step_ratio_is_one_and_kl_is_zero():
    logp = torch.randn(3, 4)
    mask = torch.ones(3, 4)
    adv = torch.tensor([1.0, -2.0, 0.5])
    cfg = LossConfig()
    loss, stats = policy_loss(logp, logp, logp, adv, mask, normalizer(mask.sum(-1), "token_mean"), cfg)
    assert stats["kl"] == 0 and stats["clip_frac"] == 0
    # ratio 1 everywhere: pg = -mean(A) over tokens = -(1 - 2 + 0.5) / 3
    assert loss.item() == pytest.approx(0.5 / 3)


def test_aggregations_by_hand():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    lengths = mask.sum(-1)
    # token mean: (1 + 2 + 3 + 4) / 4 = 2.5; sequence mean: (2 + 4) / 2 = 3
    assert aggregate(per_token, mask, "token_mean") / normalizer(lengths, "token_mean") == 2.5
    assert aggregate(per_token, mask, "sequence_mean") / normalizer(lengths, "sequence_mean") == 3.0


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean"])
def test_micro_batches_accumulate_to_the_full_batch_loss(aggregation):
    torch.manual_seed(0)
    logp, old, ref = torch.randn(6, 5), torch.randn(6, 5), torch.randn(6, 5)
    mask = (torch.rand(6, 5) > 0.3).float()
    adv = torch.randn(6)
    cfg = LossConfig(aggregation=aggregation)
    norm = normalizer(mask.sum(-1), aggregation)
    full, _ = policy_loss(logp, old, ref, adv, mask, norm, cfg)
    parts = sum(
        policy_loss(logp[i : i + 2], old[i : i + 2], ref[i : i + 2], adv[i : i + 2], mask[i : i + 2], norm, cfg)[0]
        for i in range(0, 6, 2)
    )
    assert parts.item() == pytest.approx(full.item(), rel=1e-6)


def test_normalizer_counts_the_whole_batch():
    lengths = torch.tensor([3, 0, 5])
    assert normalizer(lengths, "token_mean") == 8 and normalizer(lengths, "sequence_mean") == 3
    assert normalizer(torch.tensor([], dtype=torch.long), "token_mean") == 1  # never divides by zero


@pytest.mark.parametrize(
    ("field", "value"),
    [("clip_eps", 0.0), ("kl_coef", -1.0), ("aggregation", "mean"), ("ppo_epochs", 0), ("micro_batch_size", 0)],
)
def test_loss_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"loss.{field}"):
        LossConfig(**{field: value})
