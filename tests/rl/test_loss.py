import math

import pytest
import torch

from vzero.rl.loss import LossConfig, aggregate, batch_counts, k3_kl, normalizer, policy_loss, ppo_clip


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


def test_normalizer_of_data_parallel_ranks_is_the_global_count_per_rank():
    ranks = [torch.tensor([3, 0, 5]), torch.tensor([1])]
    totals = batch_counts(ranks[0]) + batch_counts(ranks[1])  # what the all-reduce sums: 9 tokens, 4 sequences
    assert totals.tolist() == [9.0, 4.0]
    for lengths in ranks:  # every rank divides by the same global count, over the number of ranks averaging
        assert normalizer(lengths, "token_mean", totals, 2) == 4.5
        assert normalizer(lengths, "sequence_mean", totals, 2) == 2.0
    assert normalizer(torch.tensor([], dtype=torch.long), "token_mean", torch.zeros(2), 2) == 0.5  # never zero


def _step_on_ranks(rows_of_ranks, aggregation, global_count):
    """The loss and gradient of one step, as data parallelism computes them: each rank's share of its rows
    (micro-batches of 2), the ranks' losses and gradients then averaged as DDP/FSDP average them."""
    torch.manual_seed(0)
    weight = torch.randn(3)
    features, old, ref, adv, mask = _rows()
    cfg = LossConfig(aggregation=aggregation)
    totals = sum(batch_counts(mask[rows].sum(-1)) for rows in rows_of_ranks)
    losses, grads = [], []
    for rows in rows_of_ranks:
        w = weight.clone().requires_grad_(True)
        norm = normalizer(mask[rows].sum(-1), aggregation, totals if global_count else None, len(rows_of_ranks))
        loss = 0
        for lo in range(0, len(rows), 2):
            part = rows[lo : lo + 2]
            logp = torch.nn.functional.logsigmoid(features[part] @ w)  # [b, T]
            loss = loss + policy_loss(logp, old[part], ref[part], adv[part], mask[part], norm, cfg)[0]
        loss.backward()
        losses.append(loss.detach())
        grads.append(w.grad)
    return torch.stack(losses).mean(), torch.stack(grads).mean(0)


def _rows():
    """Six rows of very different lengths, with per-token features: a policy whose log-probs depend on a [3] weight."""
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(6, 7, 3, generator=gen)  # [B, T, 3]
    old = torch.nn.functional.logsigmoid(torch.randn(6, 7, generator=gen))  # [B, T]
    ref = torch.nn.functional.logsigmoid(torch.randn(6, 7, generator=gen))  # [B, T]
    adv = torch.randn(6, generator=gen)  # [B]
    lengths = torch.tensor([7, 7, 6, 7, 1, 2])
    mask = (torch.arange(7)[None, :] < lengths[:, None]).float()  # [B, T]
    return features, old, ref, adv, mask


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean"])
def test_two_data_parallel_ranks_step_as_one_process_with_all_rows(aggregation):
    # Rank 0 holds four long rows (27 tokens), rank 1 two short ones (3 tokens).
    one_loss, one_grad = _step_on_ranks([[0, 1, 2, 3, 4, 5]], aggregation, global_count=True)
    two_loss, two_grad = _step_on_ranks([[0, 1, 2, 3], [4, 5]], aggregation, global_count=True)
    assert two_loss.item() == pytest.approx(one_loss.item(), rel=1e-5)
    torch.testing.assert_close(two_grad, one_grad, rtol=1e-5, atol=1e-7)
    # Each rank normalising by its own count (the mean of per-rank means) weighs rank 1's 3 tokens like rank 0's 27.
    per_rank_loss, per_rank_grad = _step_on_ranks([[0, 1, 2, 3], [4, 5]], aggregation, global_count=False)
    assert not torch.allclose(per_rank_grad, one_grad, rtol=1e-3)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("clip_eps", 0.0),
        ("kl_coef", -1.0),
        ("aggregation", "mean"),
        ("clue_scale", "std"),
        ("ppo_epochs", 0),
        ("micro_batch_size", 0),
        ("max_nonfinite_steps", 0),
    ],
)
def test_loss_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"loss.{field}"):
        LossConfig(**{field: value})
