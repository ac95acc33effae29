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
  (``static_cache=True``) or grows step by step (``DynamicCache``); with a static cache every step has the same
  shapes (the attention mask spans the whole cache, whose later slots the causal mask hides);
- the step's forward is a :class:`DecodeStep`, which can be compiled into one graph (on a GPU, replayed as a CUDA
  graph: one launch per step instead of one per operation).

peft's per-row adapters (``adapter_names``) reach every forward, so one batch mixes the trained and the reference
policy as it does through ``generate``.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import torch

from vzero.model.prefix import Prefix
from vzero.model.sampling import SamplingConfig, keyed_uniform, tempered_log_probs

log = logging.getLogger(__name__)
Decoder = Literal["auto", "vzero", "generate"]
DECODERS = ("auto", "vzero", "generate")


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


BUCKET = 64
"""A compiled step's cache length is rounded up to a multiple of this many tokens, so that batches of like length
share one compiled graph and one cache."""


class DecodeStep:
    """The forward of one decode step: new tokens ``[B, 1]`` in, the last position's logits ``[B, V]`` out.

    Eager by default. With ``compile=True`` the step is captured by ``torch.compile`` as one graph (``fullgraph``: a
    graph break is an error naming the model, not a silent slowdown), in ``mode="reduce-overhead"`` on a GPU, which
    replays it as a CUDA graph, and inductor's default mode on the CPU. A CUDA graph replays on the addresses it was
    recorded with, so a compiled step owns the memory of its static caches: one flat buffer per layer for keys and
    one for values, which every batch's cache views from its start (grown, rarely, when a batch needs more), so a
    batch of a shape seen before gets the very same addresses. Cache lengths are rounded up to a multiple of
    :data:`BUCKET` tokens, so that few shapes recur. The buffers stay allocated between rollouts (at most
    ``max_batch_size`` rows of the longest prompt + budget: ~2.6 GB for 64 rows of 700 tokens of a 7B model in bf16).
    Rows with per-row adapters (peft's ``adapter_names``, a mixed evaluation batch) always run eagerly: peft routes
    them by indexing on the host.

    Args:
        compile: capture the step with ``torch.compile``.
        mode, backend: ``torch.compile``'s; None picks ``reduce-overhead`` on a GPU and the default elsewhere.
    """

    def __init__(self, compile: bool = False, mode: str | None = None, backend: str = "inductor") -> None:
        self.compiled, self.mode, self.backend = compile, mode, backend
        self._fn = None
        self._buffers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # per layer: keys, values, length

    def cache(self, net, rows: int, length: int, device: torch.device):
        """An empty static cache for ``rows`` sequences of up to ``length`` tokens; compiled, the length is rounded up
        to :data:`BUCKET` and the cache lives in this step's buffers."""
        from transformers import StaticCache

        config = _text_config(net)
        if not self.compiled:
            return StaticCache(config=config, max_cache_len=length)
        if has_sliding_layers(net):
            raise ValueError("model.compile_decode does not cover models with sliding-window attention layers")
        length = BUCKET * math.ceil(length / BUCKET)
        cache = StaticCache(config=config, max_cache_len=length)
        heads = config.num_key_value_heads
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        dtype = net.get_input_embeddings().weight.dtype  # the compute dtype (never quantised)
        shape = (rows, heads, length, dim)
        need = math.prod(shape)
        first = self._buffers[0][0] if self._buffers else None
        if first is None or first.numel() < need or (first.dtype, first.device) != (dtype, torch.device(device)):
            self._buffers = []  # let the old ones go before allocating the new
            size = need + need // 4  # headroom, so that growing stays rare
            self._buffers = [
                (torch.zeros(size, dtype=dtype, device=device), torch.zeros(size, dtype=dtype, device=device))
                + (torch.zeros((), dtype=torch.long, device=device),)
                for _ in cache.layers
            ]
        for layer, (keys, values, filled) in zip(cache.layers, self._buffers, strict=True):
            _bind(layer, keys[:need].view(shape), values[:need].view(shape), filled)
        cache.reset()
        return cache

    def __call__(self, net, input_ids, attention_mask, position_ids, cache, adapter_names=None) -> torch.Tensor:
        """Logits ``[B, V]`` of one step. input_ids: [B, 1]; attention_mask: [B, L]; position_ids: [..., B, 1]."""
        if adapter_names is not None or not self.compiled:
            extra = {} if adapter_names is None else {"adapter_names": adapter_names}
            return _last_logits(net, input_ids, attention_mask, position_ids, cache, **extra)
        if self._fn is None:
            on_gpu = input_ids.device.type == "cuda"
            mode = self.mode or ("reduce-overhead" if on_gpu else None)
            self._fn = torch.compile(_last_logits, fullgraph=True, mode=mode, backend=self.backend)
        base = net.get_base_model() if hasattr(net, "get_base_model") else net  # peft's wrapper only adds hooks
        try:
            return self._fn(base, input_ids, attention_mask, position_ids, cache)
        except torch._dynamo.exc.TorchDynamoException as err:
            raise RuntimeError(
                f"model.compile_decode: torch.compile could not capture {type(base).__name__}'s decode step in one "
                f"graph; set model.compile_decode to false for this model ({type(err).__name__}: {err})"
            ) from err


def _bind(layer, keys: torch.Tensor, values: torch.Tensor, filled: torch.Tensor) -> None:
    """Give a static cache layer its storage (what its lazy initialisation would allocate), marked as fixed
    addresses for compiled graphs."""
    layer.device, (layer.batch_size, layer.num_heads, _, layer.k_head_dim) = keys.device, keys.shape
    layer.v_head_dim = values.shape[-1]
    layer.keys, layer.values, layer.cumulative_length = keys, values, filled
    for tensor in (keys, values, filled):
        torch._dynamo.mark_static_address(tensor)
    layer.is_initialized = True


def _last_logits(net, input_ids, attention_mask, position_ids, cache, **extra) -> torch.Tensor:
    out = net(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        cache=cache,
        use_cache=True,
        **extra,
    )
    return out.logits[:, -1]


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
    step: DecodeStep | None = None,
    prefix: Prefix | None = None,
) -> torch.Tensor:
    """Generate up to ``sampling.max_new_tokens`` tokens per row. Returns the new tokens ``[B, N]`` (N <= max),
    each row padded with ``pad_id`` after its EOS, as ``generate(...)[:, T:]`` is.

    Args:
        net: an HF image-text-to-text model (or its peft wrapper) with a KV cache and ``position_ids``.
        model_kwargs: the batch as the model takes it (``input_ids`` [B, T], ``attention_mask`` [B, T], pictures).
        keys: [B] int64 sampling keys, for ``temperature > 0``.
        check_every: steps between checks for finished rows; None: 4 on a GPU, 1 on the CPU.
        synced: stop only when every rank's rows are finished (several processes stepping in lock-step).
        step: the decode step's forward (eager when None); a compiled one needs ``static_cache``.
        prefix: stored states of the rows' leading prompt tokens (:mod:`vzero.model.prefix`; needs ``static_cache``);
            the prefill computes only the rest, and ``prefix.kept`` receives every row's prompt states.
    """
    from transformers import DynamicCache

    input_ids, mask = model_kwargs["input_ids"], model_kwargs["attention_mask"]  # [B, T], [B, T]
    device, (rows, width), budget = input_ids.device, input_ids.shape, sampling.max_new_tokens
    check_every = check_every or (1 if device.type == "cpu" else 4)
    positions = net._prepare_position_ids_for_generation(input_ids, dict(model_kwargs))  # [B, T] or [R, B, T]
    # Every decode step's positions at once: the last prompt position + 1, + 2, ... (generate's own rule).
    ladder = positions[..., -1:] + torch.arange(1, budget + 1, device=device)  # [..., B, N]
    step = step or DecodeStep()
    if not static_cache and (step.compiled or prefix is not None):
        raise ValueError("a compiled decode step and stored prompt states need static_cache=True")
    if prefix is not None and has_sliding_layers(net):
        prefix = None  # a sliding window's cache is not laid out by absolute column
    if prefix is not None and any(prefix.lengths):
        span, mask, logits, cache = _prefill_after(
            net, model_kwargs, positions, prefix, step, budget, pad_id, adapter_names
        )
    else:
        if static_cache:
            cache = step.cache(net, rows, width + budget, device)
            span = cache.get_max_length()  # T + N, or more when rounded up: later slots are never seen
        else:
            cache, span = DynamicCache(config=_text_config(net)), None
        extra = {"adapter_names": adapter_names} if adapter_names is not None else {}
        out = net(**model_kwargs, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1, **extra)
        logits = out.logits[:, -1]  # [B, V]
    width = mask.shape[1]  # the prompt's columns in the cache
    if prefix is not None:
        prefix.kept = _prompt_states(cache, mask)
    full_mask = torch.cat([mask, mask.new_ones(rows, (span or width + budget) - width)], dim=1)  # [B, span]
    eos = torch.tensor(sorted(eos_ids), device=device)  # [E]
    suppress = torch.tensor(suppress_ids, device=device) if suppress_ids else None
    if keys is not None:
        keys = keys.to(device)

    tokens = torch.full((rows, budget), pad_id, dtype=torch.long, device=device)  # [B, N]
    done = torch.zeros(rows, dtype=torch.bool, device=device)  # [B]
    for i in range(budget):
        tok = next_tokens(logits, i, sampling, keys, suppress, eos)  # [B]
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        tokens[:, i] = tok
        done |= torch.isin(tok, eos)
        if i + 1 == budget or ((i + 1) % check_every == 0 and _all_finished(done, synced)):
            return tokens[:, : i + 1]
        # A static cache takes the whole mask every step (one shape); a growing one, the columns seen so far.
        seen = full_mask if span else full_mask[:, : width + i + 1]
        logits = step(net, tok[:, None], seen, ladder[..., i : i + 1], cache, adapter_names)
    return tokens


def _prefill_after(
    net, model_kwargs: dict, positions, prefix: Prefix, step: DecodeStep, budget: int, pad_id, adapter_names
):
    """Prefill with each row's stored leading tokens copied into the cache: only the rest is computed.

    The cache holds, per row, ``[pads | stored prefix]`` in the first ``H`` columns (right-aligned, ``H`` the longest
    prefix) and ``[holes | computed tail]`` in the next ``C`` (right-aligned, ``C`` the longest tail); pads and holes
    are masked. Positions are the full prompt's, so every token keeps the position a plain prefill gives it. Rows
    with nothing stored (``prefix.picture_rows``) compute their whole prompt, pictures included
    (``prefix.picture_kwargs``). Returns the cache's span, the attention mask over its first ``H + C`` columns,
    the last logits ``[B, V]`` and the cache.
    """
    input_ids, mask = model_kwargs["input_ids"], model_kwargs["attention_mask"]  # [B, T], [B, T]
    device, (rows, width) = input_ids.device, input_ids.shape
    stored = torch.tensor(prefix.lengths, device=device)  # [B]
    tail = mask.sum(1) - stored  # [B] prompt tokens each row computes (>= 1)
    head, comp = int(stored.max()), int(tail.max())
    cache = step.cache(net, rows, head + comp + budget, device)
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
    ids = input_ids[:, width - comp :].masked_fill(hole, pad_id)  # [B, C]
    extra = {"adapter_names": adapter_names} if adapter_names is not None else {}
    out = net(
        input_ids=ids,
        attention_mask=full,
        position_ids=positions[..., width - comp :],
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
        **prefix.picture_kwargs,
        **extra,
    )
    return cache.get_max_length(), full, out.logits[:, -1], cache


def has_sliding_layers(net) -> bool:
    """Whether some attention layer keeps a sliding window (its cache is not laid out by absolute column)."""
    return any(t != "full_attention" for t in getattr(_text_config(net), "layer_types", None) or [])


def _text_config(net):
    """The language model's config (a multimodal model nests it; a text model is its own)."""
    config = net.config
    return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config


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


def choose_decoder(decoder: str, model) -> str:
    """``vzero`` or ``generate``, for the ``decoder`` setting (see :class:`~vzero.model.policy.Policy`)."""
    if decoder not in DECODERS:
        raise ValueError(f"model.decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if decoder == "generate":
        return decoder
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(base, "_prepare_position_ids_for_generation"):
        return "vzero"
    if decoder == "vzero":
        raise ValueError(f"model.decoder='vzero' cannot decode {type(base).__name__}: it has no rule for its positions")
    log.info("rollouts decode with HF generate: %s has no rule for its positions", type(base).__name__)
    return "generate"
