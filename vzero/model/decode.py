"""vzero's own decoding loop: prefill once, then one forward per new token, with the weights being trained.

It returns exactly what HF ``generate`` returns for the same inputs (greedy: the same ids; sampling: the same keyed
draws), without ``generate``'s per-step machinery:

- positions are computed once for the prompt, by the model's own rule (``_prepare_position_ids_for_generation``, which
  gives Qwen-VL's multimodal rotary positions), and every decode step's positions are one precomputed ladder;
- the logits are processed on the device: picture tokens suppressed, EOS held back before ``min_new_tokens``, then
  greedy argmax or the keyed Gumbel-max draw of :mod:`vzero.model.sampling`; no host synchronisation per step;
- finished rows are tracked on the device and, on a GPU, checked every ``check_every`` steps only, so the host waits
  for the device once per 4 steps (a finished row is fed the pad token meanwhile, as ``generate`` does, and its tokens
  after the EOS are never read); on the CPU, where that wait costs nothing, every step is checked, so no step is
  wasted after the last EOS; with ``synced=True`` the
  check is all-reduced over the process group, so every rank runs the same forwards (FSDP gathers weights inside
  each one) and they stop together, as ``generate(synced_gpus=True)`` does;
- the KV cache is a :class:`~transformers.StaticCache` allocated once per batch for ``prompt + max_new_tokens``
  (``static_cache=True``) or grows step by step (``DynamicCache``).

peft's per-row adapters (``adapter_names``) reach every forward, so one batch mixes the trained and the reference
policy as it does through ``generate``.
"""

from __future__ import annotations

import torch

from vzero.model.sampling import SamplingConfig, keyed_uniform, tempered_log_probs


def next_tokens(
    logits: torch.Tensor,
    step: int,
    sampling: SamplingConfig,
    keys: torch.Tensor | None,
    suppress: torch.Tensor | None,
    eos: torch.Tensor,
) -> torch.Tensor:
    """One decoding step's tokens from the last position's logits, as ``generate`` with :class:`KeyedSampler` picks.

    Args:
        logits: [B, V]; keys: [B] int64 (None for greedy); suppress, eos: [S], [E] token ids. Returns [B] long.
    """
    scores = logits.float()  # [B, V]
    if suppress is not None:
        scores[:, suppress] = float("-inf")
    if step < sampling.min_new_tokens:
        scores[:, eos] = float("-inf")
    if sampling.temperature > 0:
        logp = tempered_log_probs(scores, sampling.temperature, sampling.top_p)  # [B, V]
        noise = -torch.log(-torch.log(keyed_uniform(keys, step, scores.shape[-1])))  # [B, V]
        scores = logp + noise.to(logp.dtype)
    return scores.argmax(-1)  # [B]


@torch.no_grad()
def decode(
    net,
    model_kwargs: dict,
    sampling: SamplingConfig,
    eos_ids: list[int],
    pad_id: int,
    keys: torch.Tensor | None = None,
    suppress_ids: list[int] | None = None,
    adapter_names: list[str] | None = None,
    static_cache: bool = True,
    check_every: int | None = None,
    synced: bool = False,
) -> torch.Tensor:
    """Generate up to ``sampling.max_new_tokens`` tokens per row. Returns the new tokens ``[B, N]`` (N <= max),
    each row padded with ``pad_id`` after its EOS, as ``generate(...)[:, T:]`` is.

    Args:
        net: an HF image-text-to-text model (or its peft wrapper) with a KV cache and ``position_ids``.
        model_kwargs: the batch as the model takes it (``input_ids`` [B, T], ``attention_mask`` [B, T], pictures).
        keys: [B] int64 sampling keys, for ``temperature > 0``.
        check_every: steps between checks for finished rows; None: 4 on a GPU, 1 on the CPU.
        synced: stop only when every rank's rows are finished (several processes stepping in lock-step).
    """
    from transformers import DynamicCache, StaticCache

    input_ids, mask = model_kwargs["input_ids"], model_kwargs["attention_mask"]  # [B, T], [B, T]
    device, (rows, width), budget = input_ids.device, input_ids.shape, sampling.max_new_tokens
    check_every = check_every or (1 if device.type == "cpu" else 4)
    positions = net._prepare_position_ids_for_generation(input_ids, dict(model_kwargs))  # [B, T] or [R, B, T]
    # Every decode step's positions at once: the last prompt position + 1, + 2, ... (generate's own rule).
    ladder = positions[..., -1:] + torch.arange(1, budget + 1, device=device)  # [..., B, N]
    config = net.config.get_text_config(decoder=True) if hasattr(net.config, "get_text_config") else net.config
    cache = StaticCache(config=config, max_cache_len=width + budget) if static_cache else DynamicCache(config=config)
    extra = {"adapter_names": adapter_names} if adapter_names is not None else {}
    full_mask = torch.cat([mask, mask.new_ones(rows, budget)], dim=1)  # [B, T + N]
    eos = torch.tensor(sorted(eos_ids), device=device)  # [E]
    suppress = torch.tensor(suppress_ids, device=device) if suppress_ids else None
    if keys is not None:
        keys = keys.to(device)

    out = net(**model_kwargs, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1, **extra)
    logits = out.logits[:, -1]  # [B, V]
    tokens = torch.full((rows, budget), pad_id, dtype=torch.long, device=device)  # [B, N]
    done = torch.zeros(rows, dtype=torch.bool, device=device)  # [B]
    for step in range(budget):
        tok = next_tokens(logits, step, sampling, keys, suppress, eos)  # [B]
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        tokens[:, step] = tok
        done |= torch.isin(tok, eos)
        if step + 1 == budget or ((step + 1) % check_every == 0 and _all_finished(done, synced)):
            return tokens[:, : step + 1]
        out = net(
            input_ids=tok[:, None],
            attention_mask=full_mask[:, : width + step + 1],
            position_ids=ladder[..., step : step + 1],
            cache=cache,
            use_cache=True,
            **extra,
        )
        logits = out.logits[:, -1]
    return tokens


def _all_finished(done: torch.Tensor, synced: bool) -> bool:
    """Whether every row is finished: this rank's, or with ``synced`` every rank's (one all-reduce)."""
    finished = done.all().to(torch.int32)
    if synced and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(finished, op=torch.distributed.ReduceOp.MIN)
    return bool(finished)
