"""Checkpoint files written whole or not at all, verified before anything in them is used, and the random state a
resumed run needs to continue bit for bit.

:class:`VerifiedCheckpointIO` is the Lightning checkpoint plugin of ``vzero fit`` and ``vzero validate``:

- **Writing.** The checkpoint goes to a temporary file in the destination's own folder (``.<name>.<random>.partial``),
  which is flushed, fsynced and then ``os.replace``-d over the destination: one rename on one filesystem, so a reader
  sees the old file or the new one, never a mix, wherever ``$TMPDIR`` is. The folder is fsynced after the rename.
  Temporaries that killed writes left in that folder are removed at its next save (one run writes a folder at a time).
- **Verifying.** A checkpoint is torch's zip archive, and every member of it carries a CRC-32. Every member is read and
  checked before ``torch.load`` sees the file, and the tensors of ``state_dict`` are checked against the SHA-256 that
  was stored in the checkpoint when it was written (:data:`DIGEST_KEY`; a checkpoint without one, e.g. written by
  plain Lightning, is checked by its CRCs alone). A zero-byte, truncated, garbage or bit-flipped file, or one that
  torch's safe loader refuses, raises one :class:`CheckpointError` naming the file and what is wrong.

Sharded checkpoints (the folder ``ModelParallelStrategy`` writes with ``torch.distributed.checkpoint``) do not pass
through a ``CheckpointIO``: their shards are written and read by ``torch.distributed.checkpoint`` alone, not atomically.
Their :data:`SHARDED_METADATA` file, which holds everything but the weights and the optimizer state (the run record
among it), is verified by its CRCs when a resume reads it (:func:`load_sharded_metadata`). Remote (``fsspec``) paths are
not covered: this plugin writes local files.

What a checkpoint holds of the model, a file or a sharded folder: its trainable weights only (:func:`trainable_state`;
the frozen base is loaded again from its name), never a NaN or an infinity (:func:`check_finite`, on writing and on
loading).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import secrets
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

log = logging.getLogger(__name__)

DIGEST_KEY = "state_dict_sha256"
"""The checkpoint key that holds :func:`state_digest` of its ``state_dict``."""
TMP_SUFFIX = ".partial"
"""Temporaries are ``.<final name>.<random>.partial`` in the final file's folder."""
SHARDED_METADATA = "meta.pt"
"""The file of a sharded checkpoint folder that Lightning's ``ModelParallelStrategy`` writes (on rank 0, after the
shards) with everything but the weights and the optimizer state: the run record, the loops', callbacks' and data's
state."""
SHARDED_INDEX = ".metadata"
"""The index ``torch.distributed.checkpoint`` writes beside a sharded checkpoint's shards."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted: empty, truncated, not a checkpoint, or corrupt."""


def state_digest(state_dict: Mapping[str, Any]) -> str:
    """SHA-256 (hex) over the tensors of a state dict, in key order: each key, dtype, shape and raw bytes. Non-tensor
    values are left out. Independent of the device the tensors are on."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        value = state_dict[key]
        if not isinstance(value, torch.Tensor):
            continue
        t = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(value.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def verify_archive(path: Path) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a whole zip archive whose every member matches its CRC-32."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): its write was interrupted, or it was truncated")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as err:
        raise CheckpointError(
            f"checkpoint {path} ({size} bytes) is not a readable torch checkpoint (truncated, damaged, other): {err}"
        ) from None
    except Exception as err:  # a flipped header byte fails in many ways (decode, struct, zlib, EOF)
        raise CheckpointError(f"checkpoint {path} is corrupt: its zip structure is damaged ({err!r})") from None
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is corrupt: member {bad!r} fails its CRC-32 or header check")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporaries that killed writes left in ``folder``; returns what was removed."""
    removed = []
    for tmp in folder.glob(f".*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    if removed:
        log.info("removed %d partial checkpoint(s) left by interrupted writes in %s", len(removed), folder)
    return removed


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":  # folders cannot be opened for fsync elsewhere
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class VerifiedCheckpointIO(TorchCheckpointIO):
    """Atomic, fsynced checkpoint writes in the destination's folder, and verified loads (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)
        checkpoint = {**checkpoint, DIGEST_KEY: state_digest(checkpoint.get("state_dict", {}))}
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        try:
            with open(tmp, "xb") as f:  # unlike mkstemp's 0600, the permissions follow the umask, as a plain write's
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_folder(path.parent)

    def load_checkpoint(
        self,
        path,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        if path.is_dir():
            raise CheckpointError(f"checkpoint {path} is a folder (a sharded checkpoint?), not a checkpoint file")
        verify_archive(path)
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=weights_only)
        except Exception as err:
            # Never pass on torch's advice to retry with weights_only=False: that runs whatever the file holds.
            detail = str(err).split("WeightsUnpickler error:")[-1].strip().splitlines()[0] if str(err) else ""
            raise CheckpointError(f"checkpoint {path} could not be loaded: {type(err).__name__}: {detail}") from None
        if not isinstance(checkpoint, dict):
            raise CheckpointError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
        stored = checkpoint.pop(DIGEST_KEY, None)
        if stored is not None and stored != state_digest(checkpoint.get("state_dict", {})):
            raise CheckpointError(f"checkpoint {path} is corrupt: its state_dict does not match the SHA-256 it stored")
        return checkpoint


def load_sharded_metadata(folder: str | os.PathLike) -> dict[str, Any]:
    """The :data:`SHARDED_METADATA` of the sharded checkpoint ``folder``, on the CPU, verified as a checkpoint file is
    (its CRCs: it holds no state dict to hash); a folder that is not a whole sharded checkpoint, or a damaged file, is
    one :class:`CheckpointError` naming it."""
    folder = Path(folder)
    missing = [name for name in (SHARDED_INDEX, SHARDED_METADATA) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{folder} is a folder, but not a whole sharded checkpoint: it lacks {' and '.join(missing)} (a save that "
            "was interrupted, or not a checkpoint)"
        )
    return VerifiedCheckpointIO().load_checkpoint(folder / SHARDED_METADATA, map_location="cpu", weights_only=True)


# ---- random state ----------------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """The global random state training draws from (torch CPU, every CUDA device when CUDA is up, numpy, Python's
    ``random``), in types that torch's safe loader accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned. A saved CUDA state is restored only where CUDA is up with as many
    devices; otherwise it is skipped with a warning."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(state["cuda"]):
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            log.warning("the checkpoint's CUDA random state (%d devices) was not restored", len(state["cuda"]))


# ---- what a checkpoint holds of the model -------------------------------------------------------------------------

WEIGHTS_PREFIX = "net."
"""Trainable weights sit under ``net.`` in a checkpoint's ``state_dict`` (the training module's attribute)."""


def trainable_names(net: torch.nn.Module) -> set[str]:
    """The ``state_dict`` keys of ``net``'s trainable tensors: the adapter, or every weight of a full fine-tune."""
    return {f"{WEIGHTS_PREFIX}{n}" for n, p in net.named_parameters() if p.requires_grad}


def trainable_state(net: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Only what training changes, never the frozen base: the entries of ``state_dict`` that ``net`` trains."""
    trainable = trainable_names(net)
    return {k: v for k, v in state_dict.items() if k in trainable}


def check_trainable(net: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise ``KeyError`` unless ``state_dict`` holds every tensor ``net`` trains."""
    missing = trainable_names(net) - set(state_dict)
    if missing:
        raise KeyError(
            f"the checkpoint lacks {len(missing)} trainable weights (e.g. {sorted(missing)[0]}): "
            "was it written with a different model.vlm.lora setting?"
        )


def trained_weights(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A checkpoint's trainable tensors, named as in the model (``net.`` stripped)."""
    state = checkpoint.get("state_dict") or {}
    return {k[len(WEIGHTS_PREFIX) :]: v for k, v in state.items() if k.startswith(WEIGHTS_PREFIX)}


def check_finite(
    state_dict: Mapping[str, torch.Tensor], action: str, device: torch.device, reduce: Callable | None = None
) -> None:
    """Raise ``FloatingPointError`` (``action``: what is refused) if a tensor of ``state_dict`` holds a NaN or an
    infinity on any rank: ``reduce`` sums the count over ranks, so every rank raises, or none."""
    bad = sorted(k for k, v in state_dict.items() if not torch.isfinite(_local(v)).all())
    count = torch.tensor(float(len(bad)), device=device)
    if reduce is not None:
        count = reduce(count, reduce_op="sum")
    if count:
        example = f" (e.g. {bad[0]})" if bad else " (on another rank)"
        raise FloatingPointError(f"{action}: {int(count)} trainable tensor(s) hold NaN or inf{example}")


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (no collective); any other tensor as is."""
    return t.to_local() if hasattr(t, "to_local") else t
