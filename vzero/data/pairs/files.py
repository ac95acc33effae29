"""Checking and reading one input file safely, for the file-backed pair sources of :mod:`vzero.data.pairs.folder`.

Only regular files are opened (a FIFO or device could block forever); images are verified cheaply at construction and
decoded to 8-bit RGB on access; Pillow's decompression-bomb limit stays in force; manifest paths may not leave their
folder. Every failure is one :class:`BadInput` naming the file and what is wrong.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from PIL import Image

from vzero.data.pairs.base import to_rgb


class BadInput(Exception):
    """A bad input file (or manifest line) and why; the caller raises or records it according to ``on_error``."""

    def __init__(self, where: str | Path, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = str(where), reason


def size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def require_regular(path: Path) -> os.stat_result:
    """Stat (following links) and refuse anything but a regular file: opening a FIFO or device could block forever."""
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise BadInput(path, "broken symbolic link" if os.path.lexists(path) else "no such file") from e
    except OSError as e:
        raise BadInput(path, f"cannot stat ({e.strerror or e})") from e
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (FIFO, socket or device)"
        raise BadInput(path, f"{kind}; only regular files are read")
    return st


def _check_pixels(image: Image.Image, path: Path) -> None:
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that; treat the whole range as a bomb, read at call time
    # so a caller's own limit applies.
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        raise BadInput(path, f"{size_text(image.size)} exceeds Pillow's decompression-bomb limit of {limit} pixels")


def probe(path: Path) -> tuple[int, int]:
    """Cheap construction-time check of one image file; returns its size or raises :class:`BadInput`."""
    if require_regular(path).st_size == 0:
        raise BadInput(path, "empty (zero-byte) file")
    try:
        with Image.open(path) as image:
            size = image.size
            _check_pixels(image, path)
            image.verify()
    except BadInput:
        raise
    except Image.DecompressionBombError as e:
        raise BadInput(path, f"decompression bomb ({e})") from e
    # Pillow's plugins raise many exception types on malformed data (OSError, SyntaxError, struct.error, ...).
    except Exception as e:
        raise BadInput(path, f"unreadable or corrupt image ({type(e).__name__}: {e})") from e
    return size


def decode(path: Path) -> Image.Image:
    """Fully decode one image file to 8-bit RGB, closing the file; raises :class:`BadInput` naming it on any failure.

    The only place a file's pixels are read. The conversion is :func:`~vzero.data.pairs.base.to_rgb`'s: a 16-bit
    picture is scaled from 0-65535 to 0-255 (not clipped to white), and a transparent one (RGBA, LA, a palette or
    colour key with transparency) is composited on white, so pixels hidden under alpha 0 never show.
    """
    require_regular(path)  # the file may have been replaced since construction
    try:
        with Image.open(path) as image:
            _check_pixels(image, path)
            image.load()
            rgb = to_rgb(image)
            return image.copy() if rgb is image else rgb  # a plain in-memory picture, detached from the file
    except BadInput:
        raise
    except Image.DecompressionBombError as e:
        raise BadInput(path, f"decompression bomb ({e})") from e
    except Exception as e:  # see _probe
        raise BadInput(path, f"cannot decode image ({type(e).__name__}: {e})") from e


def check_pair(original: Path, modified: Path) -> None:
    size_original, size_modified = probe(original), probe(modified)
    if size_original != size_modified:
        sizes = f"{size_text(size_modified)} differs from {original} ({size_text(size_original)})"
        raise BadInput(modified, f"size {sizes}")


def read_text(path: Path, what: str) -> str:
    """A regular file's UTF-8 text; anything else, or a file that cannot be read as such, is :class:`BadInput`
    (``cannot read {what} (...)``)."""
    require_regular(path)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(path, f"cannot read {what} ({e})") from e


def read_sidecar(path: Path) -> dict[str, Any]:
    require_regular(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(path, f"invalid JSON sidecar ({e})") from e
    if not isinstance(value, dict):
        raise BadInput(path, f"sidecar must hold a JSON object, got {type(value).__name__}")
    return value


def inside(base: Path, relative: str, where: str) -> Path:
    """Resolve a manifest path, refusing absolute paths and anything (``..``, symlinks) that lands outside ``base``."""
    if Path(relative).is_absolute():
        raise BadInput(where, f"path {relative!r} is absolute; manifest paths must be relative to {base}")
    try:
        resolved = (base / relative).resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: symlink loop on Python < 3.13
        raise BadInput(where, f"cannot resolve path {relative!r} ({e})") from e
    if not resolved.is_relative_to(base):
        raise BadInput(where, f"path {relative!r} resolves outside the manifest's folder {base}")
    return resolved
