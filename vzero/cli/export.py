"""``vzero export``: a checkpoint as a peft adapter folder and, with ``--merge``, a merged Hugging Face model folder.

A checkpoint carries what export needs (its record: the base model as the user named it, the LoRA settings, the
dtype), so no config is needed::

    vzero export --ckpt_path checkpoints/tiny/<run>/last.ckpt --out exports/tiny --merge

writes ``exports/tiny/adapter/`` (``adapter_config.json``, ``adapter_model.safetensors`` and the processor) and
``exports/tiny/merged/`` (the base model with the adapter folded into its weights, and its processor), which
``AutoModelForImageTextToText.from_pretrained`` loads, as do vLLM, VLMEvalKit and lmms-eval as a local model. A full
fine-tune has no adapter: its checkpoint exports to ``merged/`` only. The adapter's ``base_model_name_or_path`` is the
base as the run named it (a hub id, a folder, or ``tiny``, which only vzero resolves), never a cache folder. The adapter
is written in fp32, as it trains (an older checkpoint's bf16 adapter is cast up); the merged model in
``model.vlm.dtype``, the adapter rounded into it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import torch

from vzero.cli.renamed import upgrade_settings
from vzero.cli.runs import CheckpointError, load_checkpoint, load_trained_weights
from vzero.cli.train import quiet
from vzero.model import ModelConfig, load_vlm
from vzero.tiny import resolve

log = logging.getLogger(__name__)


def model_config(record: dict, ckpt_path: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` of a checkpoint's ``hyper_parameters``, loaded unquantised (an adapter trained on
    quantised weights applies to the full-precision ones, which is what a merge needs)."""
    fields = upgrade_settings(record).get("vlm")
    if not isinstance(fields, dict):
        raise CheckpointError(
            f"{ckpt_path} has no model settings (hyper_parameters.vlm): it was written by an older vzero; "
            "load it with `vzero fit --ckpt_path` for one more step to write a checkpoint that has one"
        )
    return dataclasses.replace(ModelConfig.from_dict(fields), quantization="none", gradient_checkpointing=False)


def load_trained(ckpt_path: str | Path):
    """The checkpoint's model with its trained weights, its processor and its config: ``(net, processor, config)``."""
    checkpoint = load_checkpoint(ckpt_path)
    config = model_config(checkpoint.get("hyper_parameters") or {}, ckpt_path)
    net, processor = load_vlm(config, name_or_path=resolve(config.name_or_path))
    load_trained_weights(net, checkpoint, ckpt_path)
    return net.eval(), processor, config


def export(ckpt_path: str | Path, out: str | Path, merge: bool = False) -> dict[str, Path]:
    """Write the adapter (and, with ``merge`` or for a full fine-tune, the merged model) under ``out``; returns the
    folders written, by kind (``adapter``, ``merged``)."""
    out = Path(out)
    net, processor, config = load_trained(ckpt_path)
    written = {}
    if config.lora is not None:
        folder = out / "adapter"
        net.save_pretrained(folder)
        processor.save_pretrained(folder)
        settings = folder / "adapter_config.json"
        adapter = json.loads(settings.read_text())
        adapter["base_model_name_or_path"] = config.name_or_path  # the name, not where this machine caches it
        settings.write_text(json.dumps(adapter, indent=2, sort_keys=True) + "\n")
        written["adapter"] = folder
    if merge or config.lora is None:
        folder = out / "merged"
        merged = net.merge_and_unload() if config.lora is not None else net
        merged.save_pretrained(folder)
        processor.save_pretrained(folder)
        written["merged"] = folder
    return written


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="vzero export",
        description="Export a checkpoint as a peft adapter folder and, with --merge, a merged Hugging Face model.",
        allow_abbrev=False,
    )
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by `vzero fit`")
    parser.add_argument("--out", required=True, help="the folder to write adapter/ (and merged/) into")
    parser.add_argument("--merge", action="store_true", help="also write the base model with the adapter merged in")
    args = parser.parse_args(argv)
    quiet()
    try:
        with torch.no_grad():
            written = export(args.ckpt_path, args.out, args.merge)
    except CheckpointError as error:
        raise SystemExit(f"vzero export: error: {error}") from None
    for kind, folder in written.items():
        print(f"wrote {kind}: {folder}")
