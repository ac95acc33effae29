"""Config keys renamed since, and how old configs and checkpoints still load.

An old key still parses (``vzero fit --help`` lists it as deprecated) and is folded into its new key before anything is
built, with a warning that says what to write instead: the fields or the value it sets win. A checkpoint's
``hyper_parameters`` under old names are read the same way (:func:`upgrade_settings`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from jsonargparse import Namespace

from vzero.model import ModelConfig
from vzero.model.decode import Decoder
from vzero.rl.stage import StageConfig

log = logging.getLogger(__name__)

RENAMED: dict[str, tuple[str, object]] = {
    "phases": ("stage", StageConfig),
    "model.model": ("model.vlm", ModelConfig),
    "model.decoder": ("model.decoding.decoder", Decoder),
    "model.compile_decode": ("model.decoding.compile", bool),
    "model.reuse_prompts_gb": ("model.decoding.reuse_prompts_gb", float),
    "model.max_batch_size": ("model.decoding.max_batch_size", int),
}
"""Old key -> (new key, the old key's type)."""
MODULE = "model."
"""The training module's group: its keys are the module's arguments, which a checkpoint's ``hyper_parameters`` hold."""


def add_renamed(parser) -> None:
    """Let ``parser`` read every old key (None when absent)."""
    for old, (new, kind) in RENAMED.items():
        parser.add_argument(f"--{old}", type=kind | None, default=None, help=f"Deprecated: the old name of ``{new}``.")


def fold_renamed(cfg: Namespace) -> None:
    """Move what the old keys of ``cfg`` set to their new keys (a group's fields that differ from its defaults; a
    plain value whole), saying so, and drop the old keys."""
    for old, (new, kind) in RENAMED.items():
        value = cfg.get(old)
        if old in cfg:
            del cfg[old]
        if value is None:
            continue
        log.warning("the config key '%s' is deprecated: write '%s' instead (the same %s)", old, new, _what(value))
        if not isinstance(value, Namespace):
            cfg[new] = value
            continue
        default = flatten(asdict(kind()))
        for key, leaf in value.items():
            if key not in default or default[key] != leaf:
                cfg[f"{new}.{key}"] = leaf


def upgrade_settings(settings: dict) -> dict:
    """A checkpoint's ``hyper_parameters`` (the training module's arguments) under today's names: an older
    checkpoint's renamed arguments are moved to their new place, saying so."""
    out = dict(settings)
    for old, (new, _) in RENAMED.items():
        key = old.removeprefix(MODULE)
        if not old.startswith(MODULE) or key not in out:
            continue
        log.warning("the checkpoint's setting '%s' is read as '%s' (renamed since)", key, new.removeprefix(MODULE))
        group, _, field = new.removeprefix(MODULE).partition(".")
        value = out.pop(key)
        out[group] = {**(out.get(group) or {}), field: value} if field else value
    return out


def _what(value: object) -> str:
    return "fields" if isinstance(value, Namespace) else "value"


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """A nested dict's leaves by dotted key (an empty or None branch is a leaf)."""
    out: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
