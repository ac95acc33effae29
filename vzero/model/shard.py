"""FSDP2 sharding of any HF model, for Lightning's ``ModelParallelStrategy``.

Each block that HF marks as unsplittable (``_no_split_modules``: the decoder layers and vision blocks) becomes its own
FSDP unit, then the root. ``generate`` is registered as a forward method, so that the root's parameters are gathered
for it too (otherwise the vision tower meets sharded DTensors outside ``forward``).
"""

from __future__ import annotations

from torch import nn


def shard_model(model: nn.Module, mesh) -> nn.Module:
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    blocks = set(getattr(base, "_no_split_modules", None) or [])
    if not blocks:
        raise ValueError(f"{type(base).__name__} declares no _no_split_modules: cannot choose FSDP units")
    units = [m for m in model.modules() if type(m).__name__ in blocks]
    for unit in units:
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    register_fsdp_forward_method(model, "generate")
    return model
