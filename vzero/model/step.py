"""The forward of one decode step, eager or captured as one graph, and the static caches it owns.

A CUDA graph replays on the addresses it was recorded with, so a compiled step owns the memory of its static caches
(:meth:`DecodeStep.cache`); every batch's cache views that memory from its start, so a batch of a shape seen before
gets the very same addresses.
"""

from __future__ import annotations

import math

import torch

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

        config = text_config(net)
        if not self.compiled:
            return StaticCache(config=config, max_cache_len=length)
        if has_sliding_layers(net):
            raise ValueError("model.decoding.compile does not cover models with sliding-window attention layers")
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
                f"model.decoding.compile: torch.compile could not capture {type(base).__name__}'s decode step in one "
                f"graph; set model.decoding.compile to false for this model ({type(err).__name__}: {err})"
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


def has_sliding_layers(net) -> bool:
    """Whether some attention layer keeps a sliding window (its cache is not laid out by absolute column)."""
    return any(t != "full_attention" for t in getattr(text_config(net), "layer_types", None) or [])


def text_config(net):
    """The language model's config (a multimodal model nests it; a text model is its own)."""
    config = net.config
    return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
