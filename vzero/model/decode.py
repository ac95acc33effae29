"""How a packed batch of prompts becomes new tokens: vzero's own decoding loop, or HF ``generate``.

:class:`VzeroDecoder` prefills once, then runs one forward per new token, with the weights being trained. It returns
exactly what HF ``generate`` returns for the same inputs (greedy: the same ids; sampling: the same keyed draws),
without ``generate``'s per-step machinery:

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
  (``static_cache=True``) or grows step by step (``DynamicCache``); with a static cache every step has the same
  shapes (the attention mask spans the whole cache, whose later slots the causal mask hides);
- the step's forward is a :class:`~vzero.model.step.DecodeStep`, which can be compiled into one graph (on a GPU,
  replayed as a CUDA graph: one launch per step instead of one per operation);
- given the stored states of the rows' leading prompt tokens (a :class:`~vzero.model.prefix.Prefix`), the prefill
  computes only the rest, and the result carries every row's prompt states for the store to keep.

:class:`GenerateDecoder` calls HF ``generate`` with the same settings. Both take the batch whole and return a
:class:`Decoded`. peft's per-row adapters (``adapter_names``) reach every forward, so one batch mixes the trained and
the reference policy.

Only vzero's sampling settings decide what ``generate`` samples, because only they are scored: the log-probs of PPO's
ratio and the KL are the tempered softmax with the suppressed ids removed (:meth:`~vzero.model.policy.Policy.logprobs`).
A model's own ``generation_config`` (Qwen2.5-VL-Instruct ships ``repetition_penalty=1.05``, ``do_sample``, ``top_k``)
would otherwise reach ``generate``'s logits processors and reshape the draws (the tiny model's penalty set to 50
changes every completion). So :class:`GenerateDecoder` passes an explicit config and, for the call, puts it in place
of the model's own (``generate`` fills every field left unset from the model's), in which

- every field of :data:`~vzero.model.sampling.NEUTRAL_GENERATION` holds its no-op value: greedy search over one
  sequence per row (the keyed noise samples), no penalties, n-gram or word bans, forced or late-suppressed tokens,
  length bias, guidance, watermark or renormalisation, no sampling warpers, no stop other than EOS and the budget, the
  ids alone returned;
- the budget, EOS, pad and suppressed ids come from vzero (:data:`~vzero.model.sampling.VZERO_GENERATION`), as its
  own decoder uses them, so a row stops at its first EOS, which scoring keeps as the completion's last token;
- the fields of :data:`~vzero.model.sampling.KEPT_GENERATION` stay the model's: they change how ``generate`` runs
  (caches, compilation) or tune a mode that is off, not which tokens it picks.

The values it overrides are logged once. A field of the installed ``GenerationConfig`` in none of these lists that the
model's config sets is refused (``ValueError`` naming it): vzero does not know whether it changes the draws.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
from dataclasses import dataclass
from typing import Literal

import torch
from transformers import GenerationConfig, LogitsProcessorList

from vzero.model.inputs import ModelInputs, TokenIds
from vzero.model.prefix import Prefix
from vzero.model.sampling import (
    KEPT_GENERATION,
    NEUTRAL_GENERATION,
    VZERO_GENERATION,
    KeyedSampler,
    SamplingConfig,
    keyed_uniform,
    tempered_log_probs,
)
from vzero.model.step import DecodeStep, has_sliding_layers, text_config

log = logging.getLogger(__name__)
Decoder = Literal["auto", "vzero", "generate"]
DECODERS = ("auto", "vzero", "generate")


@dataclass(frozen=True)
class Decoded:
    """What one decoding pass produced."""

    tokens: torch.Tensor  # [B, N] long: the new tokens, each row padded after its EOS, as generate(...)[:, T:] is
    prompt_states: torch.Tensor | None = None
    """Every row's prompt keys and values, ``[layers, 2, B, heads, T, head_dim]`` with row ``i``'s prompt in its first
    columns; only when the pass was given a prefix (see :class:`~vzero.model.prefix.PrefixStore`)."""


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


class VzeroDecoder:
    """vzero's own decoding loop (see the module's docstring).

    Args:
        ids: the pad, end-of-sequence and suppressed token ids.
        step: the decode step's forward (eager when None); a compiled one needs ``static_cache``.
        synced: stop only when every rank's rows are finished (several processes stepping in lock-step).
        static_cache: one cache allocated for prompt + budget (else a cache that grows step by step).
        check_every: steps between checks for finished rows; None: 4 on a GPU, 1 on the CPU.
    """

    name = "vzero"

    def __init__(
        self,
        ids: TokenIds,
        step: DecodeStep | None = None,
        synced: bool = False,
        static_cache: bool = True,
        check_every: int | None = None,
    ) -> None:
        self.ids, self.step, self.synced = ids, step or DecodeStep(), synced
        self.static_cache, self.check_every = static_cache, check_every
        if not static_cache and self.step.compiled:
            raise ValueError("a compiled decode step needs static_cache=True")

    @torch.no_grad()
    def __call__(
        self,
        net,
        inputs: ModelInputs,
        sampling: SamplingConfig,
        keys: torch.Tensor | None = None,
        adapter_names: list[str] | None = None,
        prefix: Prefix | None = None,
    ) -> Decoded:
        """Generate up to ``sampling.max_new_tokens`` tokens per row of ``inputs`` (N <= max).

        Args:
            net: an HF image-text-to-text model (or its peft wrapper) with a KV cache and ``position_ids``.
            keys: [B] int64 sampling keys, for ``temperature > 0``.
            adapter_names: peft's adapter per row (``__base__``: the adapter off).
            prefix: stored states of the rows' leading prompt tokens (needs ``static_cache``); the prefill computes
                only the rest, and the result carries every row's prompt states. None: nothing reused nor returned.
        """
        from transformers import DynamicCache

        kwargs = inputs.model_kwargs()
        input_ids, mask = inputs.input_ids, inputs.attention_mask  # [B, T], [B, T]
        device, (rows, width), budget = input_ids.device, input_ids.shape, sampling.max_new_tokens
        check_every = self.check_every or (1 if device.type == "cpu" else 4)
        positions = net._prepare_position_ids_for_generation(input_ids, dict(kwargs))  # [B, T] or [R, B, T]
        # Every decode step's positions at once: the last prompt position + 1, + 2, ... (generate's own rule).
        ladder = positions[..., -1:] + torch.arange(1, budget + 1, device=device)  # [..., B, N]
        if prefix is not None and not self.static_cache:
            raise ValueError("stored prompt states need static_cache=True")
        if prefix is not None and has_sliding_layers(net):
            prefix = None  # a sliding window's cache is not laid out by absolute column
        if prefix is not None and any(prefix.lengths):
            span, mask, logits, cache = self._prefill_after(net, inputs, positions, prefix, budget, adapter_names)
        else:
            if self.static_cache:
                cache = self.step.cache(net, rows, width + budget, device)
                span = cache.get_max_length()  # T + N, or more when rounded up: later slots are never seen
            else:
                cache, span = DynamicCache(config=text_config(net)), None
            extra = {"adapter_names": adapter_names} if adapter_names is not None else {}
            out = net(**kwargs, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1, **extra)
            logits = out.logits[:, -1]  # [B, V]
        width = mask.shape[1]  # the prompt's columns in the cache
        states = _prompt_states(cache, mask) if prefix is not None else None
        full_mask = torch.cat([mask, mask.new_ones(rows, (span or width + budget) - width)], dim=1)  # [B, span]
        eos = torch.tensor(sorted(self.ids.eos), device=device)  # [E]
        suppress = torch.tensor(self.ids.suppress, device=device) if self.ids.suppress else None
        if keys is not None:
            keys = keys.to(device)

        pad = self.ids.pad
        tokens = torch.full((rows, budget), pad, dtype=torch.long, device=device)  # [B, N]
        done = torch.zeros(rows, dtype=torch.bool, device=device)  # [B]
        for i in range(budget):
            tok = next_tokens(logits, i, sampling, keys, suppress, eos)  # [B]
            tok = torch.where(done, torch.full_like(tok, pad), tok)
            tokens[:, i] = tok
            done |= torch.isin(tok, eos)
            if i + 1 == budget or ((i + 1) % check_every == 0 and _all_finished(done, self.synced)):
                return Decoded(tokens[:, : i + 1], states)
            # A static cache takes the whole mask every step (one shape); a growing one, the columns seen so far.
            seen = full_mask if span else full_mask[:, : width + i + 1]
            logits = self.step(net, tok[:, None], seen, ladder[..., i : i + 1], cache, adapter_names)
        return Decoded(tokens, states)

    def _prefill_after(self, net, inputs: ModelInputs, positions, prefix: Prefix, budget: int, adapter_names):
        """Prefill with each row's stored leading tokens copied into the cache: only the rest is computed.

        The cache holds, per row, ``[pads | stored prefix]`` in the first ``H`` columns (right-aligned, ``H`` the
        longest prefix) and ``[holes | computed tail]`` in the next ``C`` (right-aligned, ``C`` the longest tail); pads
        and holes are masked. Positions are the full prompt's, so every token keeps the position a plain prefill gives
        it. Rows with nothing stored (``prefix.picture_rows``) compute their whole prompt, pictures included. Returns
        the cache's span, the attention mask over its first ``H + C`` columns, the last logits ``[B, V]`` and the cache.
        """
        input_ids, mask = inputs.input_ids, inputs.attention_mask  # [B, T], [B, T]
        device, (rows, width) = input_ids.device, input_ids.shape
        stored = torch.tensor(prefix.lengths, device=device)  # [B]
        tail = mask.sum(1) - stored  # [B] prompt tokens each row computes (>= 1)
        head, comp = int(stored.max()), int(tail.max())
        cache = self.step.cache(net, rows, head + comp + budget, device)
        sample = next(s for s in prefix.states if s is not None)  # [layers, 2, heads, L, head_dim]
        layers, _, heads, _, dim = sample.shape
        cache.early_initialization(rows, heads, dim, sample.dtype, device)
        front = sample.new_zeros(layers, 2, rows, heads, head, dim)  # [layers, 2, B, heads, H]
        for i, states in enumerate(prefix.states):
            if states is not None:
                front[:, :, i, :, head - states.shape[3] :] = states
        for layer, (keys, values) in zip(cache.layers, front):
            layer.keys[:, :, :head] = keys
            layer.values[:, :, :head] = values
            layer.cumulative_length.fill_(head)
        cols = torch.arange(head + comp, device=device)  # [H + C]
        kept = (cols < head) & (cols >= head - stored[:, None])  # [B, H + C]
        computed = cols >= head + comp - tail[:, None]  # [B, H + C]
        full = (kept | computed).to(mask.dtype)  # [B, H + C]
        hole = ~computed[:, head:]  # [B, C]
        ids = input_ids[:, width - comp :].masked_fill(hole, self.ids.pad)  # [B, C]
        # The pictures of the rows that compute them; the rest of the batch brings its own ids, mask and positions.
        pictures = inputs.picture_kwargs(prefix.picture_rows) if prefix.picture_rows else {}
        extra = {"adapter_names": adapter_names} if adapter_names is not None else {}
        out = net(
            input_ids=ids,
            attention_mask=full,
            position_ids=positions[..., width - comp :],
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **pictures,
            **extra,
        )
        return cache.get_max_length(), full, out.logits[:, -1], cache


class GenerateDecoder:
    """HF ``generate`` with the same settings: greedy search, plus :class:`~vzero.model.sampling.KeyedSampler`'s
    noise when sampling, so a row's draw depends on its key alone; the model's own ``generation_config`` is
    neutralised (see the module's docstring).

    Args:
        ids: the pad, end-of-sequence and suppressed token ids.
        synced: keep generation steps in lock-step across ranks (``synced_gpus``).
    """

    name = "generate"

    def __init__(self, ids: TokenIds, synced: bool = False) -> None:
        self.ids, self.synced = ids, synced
        self._logged: set[str] = set()

    @torch.no_grad()
    def __call__(
        self,
        net,
        inputs: ModelInputs,
        sampling: SamplingConfig,
        keys: torch.Tensor | None = None,
        adapter_names: list[str] | None = None,
        prefix: Prefix | None = None,
    ) -> Decoded:
        if prefix is not None:
            raise ValueError("HF generate cannot start from stored prompt states")
        processors = [] if keys is None else [KeyedSampler(keys, sampling.temperature, sampling.top_p)]
        extra = {} if adapter_names is None else {"adapter_names": adapter_names}
        base = net.get_base_model() if hasattr(net, "get_base_model") else net
        config = self.generation_config(base.generation_config, sampling)
        with _in_place_of(base, config):  # generate fills every unset field from the model's own config
            seqs = net.generate(
                **inputs.model_kwargs(),
                generation_config=config,
                logits_processor=LogitsProcessorList(processors),
                synced_gpus=self.synced,
                **extra,
            )
        return Decoded(seqs[:, inputs.input_ids.shape[1] :])

    def generation_config(self, own: GenerationConfig, sampling: SamplingConfig) -> GenerationConfig:
        """The model's config ``own`` with every field that would change the draws neutralised, and vzero's settings.

        Raises ValueError for a field ``own`` sets that vzero does not know (see the module's docstring)."""
        for key in sorted(_unlisted_generation_fields()):
            if (value := getattr(own, key, None)) is not None:
                raise ValueError(
                    f"model.decoding.decoder='generate': the model's generation_config sets {key}={value!r}, which "
                    "vzero does not know how to neutralise, and its scoring would not apply it; unset it, or decode "
                    "with model.decoding.decoder='vzero'"
                )
        defaults = GenerationConfig._get_default_generation_params()
        overridden = {
            k: getattr(own, k)
            for k, v in NEUTRAL_GENERATION.items()
            if getattr(own, k, None) is not None and getattr(own, k) != (defaults.get(k) if v is None else v)
        }
        message = ", ".join(f"{k}={v!r}" for k, v in overridden.items())
        if overridden and message not in self._logged:
            self._logged.add(message)
            log.warning(
                "model.decoding.decoder='generate' neutralises the model's generation_config %s: only vzero's sampling "
                "settings decide the draws, as only they are scored",
                message,
            )
        config = copy.deepcopy(own)
        settings = {
            **sampling.generate_kwargs(),
            "eos_token_id": sorted(self.ids.eos),
            "pad_token_id": self.ids.pad,
            "suppress_tokens": self.ids.suppress or None,
        }
        for key, value in settings.items():
            setattr(config, key, value)
        return config


@functools.cache
def _unlisted_generation_fields() -> frozenset[str]:
    """The installed ``GenerationConfig``'s fields in none of vzero's lists (none, for the transformers it lists)."""
    listed = {*NEUTRAL_GENERATION, *VZERO_GENERATION, *KEPT_GENERATION}
    return frozenset(k for k in vars(GenerationConfig()) if not k.startswith("_") and k not in listed)


@contextlib.contextmanager
def _in_place_of(model, config: GenerationConfig):
    """Within this block ``model.generation_config`` is ``config``."""
    own, model.generation_config = model.generation_config, config
    try:
        yield
    finally:
        model.generation_config = own


def _prompt_states(cache, mask: torch.Tensor) -> torch.Tensor:
    """Every row's prompt keys and values in order, gathered from the cache as the prefill laid it out (``mask``:
    [B, W] over its first columns): ``[layers, 2, B, heads, T, head_dim]``, row ``i``'s prompt in its first columns."""
    real = mask.bool()  # [B, W]: the prompt's cache columns, pads and holes excluded
    order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)  # [B, W]: real columns first, in order
    idx = order[:, : int(real.sum(1).max())]  # [B, T]
    out = []
    for layer in cache.layers:
        keys, values = layer.keys, layer.values  # [B, heads, S, head_dim]
        index = idx[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[3])  # [B, heads, T, head_dim]
        out.append(torch.stack([keys.gather(2, index), values.gather(2, index)]))  # [2, B, heads, T, head_dim]
    return torch.stack(out)  # [layers, 2, B, heads, T, head_dim]


def _all_finished(done: torch.Tensor, synced: bool) -> bool:
    """Whether every row is finished: this rank's, or with ``synced`` every rank's (one all-reduce)."""
    finished = done.all().to(torch.int32)
    if synced and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(finished, op=torch.distributed.ReduceOp.MIN)
    return bool(finished)


def choose_decoder(decoder: Decoder, model) -> str:
    """``vzero`` or ``generate``, for the ``decoder`` setting (see :class:`~vzero.model.policy.DecodingConfig`)."""
    if decoder == "generate":
        return decoder
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(base, "_prepare_position_ids_for_generation"):
        return "vzero"
    if decoder == "vzero":
        raise ValueError(
            f"model.decoding.decoder='vzero' cannot decode {type(base).__name__}: it has no rule for its positions"
        )
    log.info("rollouts decode with HF generate: %s has no rule for its positions", type(base).__name__)
    return "generate"
