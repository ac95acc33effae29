"""The KL-regularised policy-gradient objective of both stages (VISION_ZERO.md §3), as pure tensor functions.

Per token: PPO-clip with ε, plus τ times the k3 estimate of KL(π || π_ref). The stage mask ``m_t`` of
``L_t = m_t L_clue + (1 - m_t) L_dec`` is applied by selection: the batch these functions see holds the active stage's
samples only, so the two stages' gradients never mix.

Aggregation over tokens, for a batch scored in micro-batches with gradient accumulation:

- ``token_mean``: every token of the whole batch weighs the same (DAPO-style);
- ``sequence_mean``: each sequence's tokens are averaged first, then sequences (GRPO as written).

Either way a micro-batch's loss is a *sum* divided by a normaliser computed once for the whole batch, so accumulating
micro-batches gives exactly the full-batch loss. Under data parallelism "the whole batch" is the global one, over every
rank: the caller sums :func:`batch_counts` over the data-parallel ranks and hands the total to :func:`normalizer`, so
that the ranks' averaged gradients are exactly those of one process holding every rank's rows (a rank with few or
short rows no longer weighs as much as one with many).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from vzero.rl.advantages import ClueScale, GroupStd

Aggregation = Literal["token_mean", "sequence_mean"]


@dataclass(frozen=True)
class LossConfig:
    """The policy-gradient loss."""

    clip_eps: float = 0.2
    """ε of PPO-clip: the ratio π/π_old is clipped to [1 - ε, 1 + ε]."""
    kl_coef: float = 0.04
    """τ of Eq. 3 and 6: weight of the k3 KL estimate against the reference policy."""
    aggregation: Aggregation = "token_mean"
    group_std: GroupStd = "population"
    """The spread a game's vote advantages are divided by (Eq. 5): ``population`` (the paper's), ``sample`` (TRL's and
    verl's, 13% smaller advantages in groups of 4) or ``none`` (mean-centred only, as Dr. GRPO)."""
    clue_scale: ClueScale = "none"
    """How a step's clue advantages are scaled: ``none`` (RAE's as they are, the paper's Eq. 2) or ``batch`` (divided by
    their spread over the step's players, so that clues weigh like votes: Eq. 1's β = λ = 0.1 make a clue reward a
    tenth of a difference in votes, within ±0.3 with 3 voters, against vote advantages of unit spread per game)."""
    ppo_epochs: int = 1
    """Passes over each rollout batch; with 1 the ratio is exactly 1 and clipping never binds."""
    micro_batch_size: int = 8
    """Sequences per forward/backward pass; gradients accumulate within a step."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm; 0 turns it off."""
    max_nonfinite_steps: int = 3
    """An update whose loss or gradient norm is NaN or infinite (on any rank) is skipped: no optimizer or scheduler
    step, and it counts in ``train/skipped_nonfinite``. This many skipped updates in a row stop the run with an error
    naming the step; 1 stops at the first."""

    def __post_init__(self) -> None:
        if not 0 < self.clip_eps < 1:
            raise ValueError(f"loss.clip_eps must be in (0, 1), got {self.clip_eps}")
        if self.kl_coef < 0:
            raise ValueError(f"loss.kl_coef must be >= 0, got {self.kl_coef}")
        if self.aggregation not in ("token_mean", "sequence_mean"):
            raise ValueError(f"loss.aggregation must be 'token_mean' or 'sequence_mean', got {self.aggregation!r}")
        if self.group_std not in ("population", "sample", "none"):
            raise ValueError(f"loss.group_std must be 'population', 'sample' or 'none', got {self.group_std!r}")
        if self.clue_scale not in ("none", "batch"):
            raise ValueError(f"loss.clue_scale must be 'none' or 'batch', got {self.clue_scale!r}")
        if self.ppo_epochs < 1:
            raise ValueError(f"loss.ppo_epochs must be >= 1, got {self.ppo_epochs}")
        if self.micro_batch_size < 1:
            raise ValueError(f"loss.micro_batch_size must be >= 1, got {self.micro_batch_size}")
        if self.max_grad_norm < 0:
            raise ValueError(f"loss.max_grad_norm must be >= 0, got {self.max_grad_norm}")
        if self.max_nonfinite_steps < 1:
            raise ValueError(f"loss.max_nonfinite_steps must be >= 1, got {self.max_nonfinite_steps}")


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π || π_ref): ``exp(ref - logp) - (ref - logp) - 1`` (≥ 0, 0 where they agree)."""
    delta = ref_logp - logp  # [B, T]
    return torch.exp(delta) - delta - 1  # [B, T]


def ppo_clip(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO-clip loss (to minimise) and a mask of tokens where clipping was active.

    Args:
        logp: [B, T] log-probs under the policy being trained.
        old_logp: [B, T] log-probs under the policy that sampled the tokens.
        advantages: [B] one advantage per sequence.
    """
    ratio = torch.exp(logp - old_logp)  # [B, T]
    adv = advantages[:, None]  # [B, 1]
    unclipped = ratio * adv  # [B, T]
    clipped = ratio.clamp(1 - eps, 1 + eps) * adv  # [B, T]
    loss = -torch.minimum(unclipped, clipped)  # [B, T]
    return loss, (clipped < unclipped).float()  # [B, T], [B, T]


def batch_counts(lengths: torch.Tensor) -> torch.Tensor:
    """``[tokens, sequences]`` of a batch, as floats: what data-parallel ranks sum (one all-reduce) before
    :func:`normalizer`.

    Args:
        lengths: [N] completion tokens per sequence.
    """
    return torch.stack([lengths.sum().float(), torch.tensor(float(len(lengths)))])  # [2]


def normalizer(
    lengths: torch.Tensor, aggregation: Aggregation, totals: torch.Tensor | None = None, ranks: int = 1
) -> torch.Tensor:
    """The denominator of the whole batch, from every sequence's completion length: its token count, or its sequence
    count. Computed once per step, so that micro-batches accumulate to the full-batch loss.

    With data parallelism, ``totals`` is :func:`batch_counts` summed over the ``ranks`` data-parallel ranks, whose
    gradients are averaged (divided by ``ranks``). Each rank then divides its sum by ``totals / ranks``, so the
    averaged gradient is the global batch's: every token (``token_mean``) or sequence (``sequence_mean``) of every
    rank weighs the same, however the rows fall on ranks.

    Args:
        lengths: [N] completion tokens per sequence of this rank's batch.
        totals: [2] tokens and sequences summed over the data-parallel ranks; None on one process.
        ranks: the number of data-parallel ranks ``totals`` sums over.
    """
    if totals is None:
        totals, ranks = batch_counts(lengths), 1
    if ranks < 1:
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    count = totals[0] if aggregation == "token_mean" else totals[1]
    return count.float().clamp_min(1.0) / ranks  # []


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, aggregation: Aggregation) -> torch.Tensor:
    """Sum of a per-token quantity over a (micro-)batch, shaped for :func:`normalizer`'s denominator.

    Args:
        per_token: [B, T]; mask: [B, T] 1 on completion tokens.
    """
    masked = per_token * mask  # [B, T]
    if aggregation == "token_mean":
        return masked.sum()  # []
    return (masked.sum(-1) / mask.sum(-1).clamp_min(1.0)).sum()  # []


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    norm: torch.Tensor,
    config: LossConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The micro-batch's share of the step loss: ``(Σ pg + τ Σ kl) / norm``, and detached statistics.

    Args:
        logp, old_logp, ref_logp: [B, T] per-token log-probs (current, sampling, reference).
        advantages: [B]; mask: [B, T] 1 on completion tokens.
        norm: the whole batch's :func:`normalizer`.
    """
    pg, clipped = ppo_clip(logp, old_logp, advantages, config.clip_eps)  # [B, T], [B, T]
    kl = k3_kl(logp, ref_logp)  # [B, T]
    agg = config.aggregation
    pg_sum = aggregate(pg, mask, agg)  # []
    kl_sum = aggregate(kl, mask, agg)  # []
    loss = (pg_sum + config.kl_coef * kl_sum) / norm  # []
    stats = {
        "pg": pg_sum.detach() / norm,
        "kl": kl_sum.detach() / norm,
        "clip_frac": aggregate(clipped, mask, agg).detach() / norm,
    }
    return loss, stats
