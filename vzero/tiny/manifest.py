"""The shipped ``tiny``'s manifest: each file's size and SHA-256, written by the recipe and checked on every load.

``tiny`` ships inside the package (``vzero/tiny/shipped``) so that a first run starts at once, editable install or
not; :mod:`vzero.tiny.recipe` rebuilds it. :func:`verify` checks every file against ``MANIFEST.json``, so a damaged or
edited file is an error naming that file instead of a model that silently behaves differently.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

SHIPPED = Path(__file__).resolve().parent / "shipped"
MANIFEST = "MANIFEST.json"
REBUILD = "python -m vzero.tiny.recipe"


class ShippedModelError(RuntimeError):
    """A shipped model folder whose files do not match its manifest."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, **about) -> dict:
    """Record every file of ``folder`` (but the manifest) with its size and SHA-256, and ``about`` beside them."""
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": sha256(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"files": files, **about}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def verify(folder: Path) -> Path:
    """``folder`` if every file its manifest lists is there with the recorded size and SHA-256; else a clear error."""
    where = folder / MANIFEST
    try:
        files = json.loads(where.read_text())["files"]
    except FileNotFoundError:
        raise ShippedModelError(f"{where} is missing: reinstall vzero, or rebuild the model with `{REBUILD}`") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ShippedModelError(f"{where} is not a valid manifest ({e}): reinstall vzero or run `{REBUILD}`") from None
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            raise ShippedModelError(f"{path} is missing (listed in {where}): reinstall vzero or run `{REBUILD}`")
        size, digest = path.stat().st_size, sha256(path)
        if size != entry["bytes"] or digest != entry["sha256"]:
            raise ShippedModelError(
                f"{path} does not match {where}: {size} bytes, sha256 {digest[:16]}..., expected {entry['bytes']} "
                f"bytes, sha256 {entry['sha256'][:16]}... (damaged or edited): reinstall vzero or run `{REBUILD}`"
            )
    return folder
