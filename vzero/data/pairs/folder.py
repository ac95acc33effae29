"""Pair sources backed by files: a folder of ``<name>_original``/``<name>_modified`` images, a JSONL manifest, or any
folder of single images (whose spy sees a blank picture).

Files are checked once at construction (cheaply: ``stat`` plus Pillow's ``verify``) and decoded on access. Bad input
either raises :class:`PairSourceError` naming the file, or, with ``on_error="skip"``, is recorded in ``skipped`` and
left out. Nothing here reads from a FIFO or device, and Pillow's decompression-bomb limit stays in force.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from vzero.data.pairs.base import ImagePair, OnError, PairSource, PairSourceError
from vzero.data.pairs.files import (
    BadInput,
    check_pair,
    decode,
    inside,
    probe,
    read_sidecar,
    read_text,
    require_regular,
    size_text,
)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
MANIFEST_NAME = "manifest.jsonl"
_ROLES = ("original", "modified")


@dataclass(frozen=True)
class _Entry:
    original: Path
    modified: Path | None
    domain: str
    meta: dict[str, Any] = field(default_factory=dict)


class _FileSource(PairSource):
    """Shared bookkeeping: the checked entries, the skip list, and decoding with skip-ahead on late failures."""

    def __init__(self, root: str | Path, domain: str, on_error: OnError) -> None:
        if on_error not in get_args(OnError):
            raise ValueError(f"on_error must be one of {get_args(OnError)}, got {on_error!r}")
        if not isinstance(domain, str) or not domain:
            raise ValueError(f"domain must be a non-empty string, got {domain!r}")
        self.root = Path(root)
        self.domain = domain
        self.on_error: OnError = on_error
        self.skipped: list[tuple[str, str]] = []
        """``(path, reason)`` for every bad file or manifest line left out (only with ``on_error="skip"``)."""
        self._entries: list[_Entry] = []
        self._failed: set[int] = set()
        if not os.path.exists(self.root):
            raise PairSourceError(f"{self.root}: no such file or folder")

    def __len__(self) -> int:
        return len(self._entries)

    def _get(self, index: int) -> ImagePair:
        n = len(self._entries)
        # In skip mode a pair that only fails at decode time is dropped and the next good one served instead, so a
        # given index always maps to the same pair once the failures are known.
        for step in range(n):
            i = (index + step) % n
            if i in self._failed:
                continue
            try:
                return self._load(self._entries[i])
            except BadInput as bad:
                if self.on_error == "raise":
                    raise PairSourceError(str(bad)) from bad
                self._failed.add(i)
                self.skipped.append((bad.where, bad.reason))
        raise PairSourceError(f"{self.root}: none of the {n} pairs could be decoded; see .skipped")

    def _load(self, entry: _Entry) -> ImagePair:
        original = decode(entry.original)
        modified = None
        if entry.modified is not None:
            modified = decode(entry.modified)
            if modified.size != original.size:
                sizes = f"{size_text(modified.size)} differs from {entry.original} ({size_text(original.size)})"
                raise BadInput(entry.modified, f"decoded size {sizes}")
        return ImagePair(original, modified, entry.domain, copy.deepcopy(entry.meta))

    def _reject(self, where: str | Path, reason: str) -> None:
        if self.on_error == "raise":
            raise PairSourceError(f"{where}: {reason}")
        self.skipped.append((str(where), reason))

    def _require_entries(self, where: Path) -> None:
        if not self._entries:  # even in skip mode: there is nothing to play
            note = f" ({len(self.skipped)} bad inputs skipped; see .skipped)" if self.skipped else ""
            raise PairSourceError(f"{where}: no usable images found, nothing to play{note}")

    def _listing(self, folder: Path) -> list[tuple[Path, str, str]]:
        # Not stat'ed here: an image-named FIFO is then reported once, as a bad member of its pair, not also as a
        # stray file that leaves its partner unpaired.
        try:
            paths = sorted(folder.iterdir(), key=lambda p: p.name)
        except OSError as e:
            raise PairSourceError(f"{folder}: cannot list folder ({e.strerror or e})") from e
        return [(p, p.stem, p.suffix.lower()) for p in paths if not p.name.startswith(".")]

    def _reject_stray(self, path: Path, expected: str) -> None:
        try:
            require_regular(path)
        except BadInput as bad:
            self._reject(bad.where, bad.reason)
        else:
            self._reject(path, f"not an image (png, jpg, jpeg, webp, bmp) or {expected}")


class FolderPairs(_FileSource):
    """Pairs of images on disk, from a folder of ``<name>_original``/``<name>_modified`` files or a JSONL manifest.

    ``root`` is one of:

    * a ``.jsonl`` manifest, or a folder holding ``manifest.jsonl``: one JSON object per non-blank line,
      ``{"original": path, "modified": path or null, "domain": str, "meta": {...}}``, where only ``original`` is
      required, paths are relative to the manifest's folder and must stay inside it, and a null ``modified`` means the
      spy sees a blank picture; other keys are ignored;
    * otherwise a folder of ``<name>_original.<ext>`` and ``<name>_modified.<ext>`` images (png, jpg, jpeg, webp or
      bmp, any case) with optional ``<name>.json`` sidecars whose object is merged into ``meta``. Pairs are sorted by
      name, so indices are stable.

    ``meta`` holds ``name``, ``original_path`` and ``modified_path`` plus the sidecar's or manifest's ``meta``.

    Error policy: a missing ``root``, an unreadable manifest, or finding no usable pair at all always raises
    :class:`PairSourceError`. Every other bad input -- a corrupt, truncated, zero-byte or oversized (decompression
    bomb) image, a non-regular file, a missing or duplicate partner, a pair whose sizes differ, a non-image file, an
    invalid sidecar, a malformed manifest line, a manifest path that is missing or escapes the manifest's folder --
    raises :class:`PairSourceError` naming the file (or manifest and line) when ``on_error="raise"``, and with
    ``on_error="skip"`` is appended to ``skipped`` as ``(path, reason)`` and left out. Files are checked at
    construction; an image that only fails when decoded raises on access, or in skip mode is recorded and the next
    good pair (wrapping around) is returned instead. Hidden files are ignored.

    Args:
        root: Folder of pairs, folder holding ``manifest.jsonl``, or a ``.jsonl`` manifest.
        domain: Domain of every pair (a manifest line may override it).
        on_error: ``raise`` or ``skip`` bad input, as above.
    """

    def __init__(self, root: str | Path, domain: str = "real", on_error: OnError = "raise") -> None:
        super().__init__(root, domain, on_error)
        if self.root.is_dir():
            manifest = self.root / MANIFEST_NAME
            if os.path.lexists(manifest):
                self._scan_manifest(manifest)
            else:
                self._scan_folder(self.root)
        elif self.root.suffix.lower() == ".jsonl":
            self._scan_manifest(self.root)
        else:
            raise PairSourceError(f"{self.root}: expected a folder of pairs or a .jsonl manifest")

    def _scan_folder(self, folder: Path) -> None:
        groups: dict[str, dict[str, list[Path]]] = {}
        sidecars: dict[str, Path] = {}
        for path, stem, suffix in self._listing(folder):
            if suffix in IMAGE_EXTENSIONS:
                role = next((r for r in _ROLES if stem.endswith(f"_{r}") and len(stem) > len(r) + 1), None)
                if role is None:
                    self._reject(path, "image name must end in _original or _modified")
                    continue
                groups.setdefault(stem[: -len(role) - 1], {r: [] for r in _ROLES})[role].append(path)
            elif suffix == ".json" and stem not in sidecars:
                sidecars[stem] = path
            else:
                self._reject_stray(path, "a pair's <name>.json sidecar")
        for stem, path in sidecars.items():
            if stem not in groups:
                self._reject(path, f"sidecar without a pair: no {stem}_original or {stem}_modified image")

        for name in sorted(groups):
            roles = groups[name]
            if any(len(paths) > 1 for paths in roles.values()):
                for role, paths in roles.items():
                    for extra in paths[1:]:
                        self._reject(extra, f"duplicate {role} image for pair {name!r} (also {paths[0].name})")
                continue
            if not all(roles.values()):
                present = next(paths[0] for paths in roles.values() if paths)
                missing = next(r for r in _ROLES if not roles[r])
                self._reject(present, f"missing partner {name}_{missing}.<ext>")
                continue
            original, modified = roles["original"][0], roles["modified"][0]
            try:
                extra = read_sidecar(sidecars[name]) if name in sidecars else {}
                check_pair(original, modified)
            except BadInput as bad:
                self._reject(bad.where, f"{bad.reason} (pair {name!r} left out)")
                continue
            meta = {"name": name, **extra, "original_path": str(original), "modified_path": str(modified)}
            self._entries.append(_Entry(original, modified, self.domain, meta))
        self._require_entries(folder)

    def _scan_manifest(self, manifest: Path) -> None:
        try:
            text = read_text(manifest, "manifest")
        except BadInput as bad:
            raise PairSourceError(str(bad)) from bad
        base = manifest.parent.resolve()
        # Split on "\n" only: str.splitlines would also break inside JSON strings holding U+2028 and friends.
        for lineno, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                self._entries.append(self._manifest_entry(base, f"{manifest}:{lineno}", line, lineno))
            except BadInput as bad:
                self._reject(bad.where, bad.reason)
        self._require_entries(manifest)

    def _manifest_entry(self, base: Path, where: str, line: str, lineno: int) -> _Entry:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(where, f"not valid JSON ({e.msg})") from e
        if not isinstance(obj, dict):
            raise BadInput(where, f"expected a JSON object, got {type(obj).__name__}")
        if not isinstance(obj.get("original"), str) or not obj["original"]:
            raise BadInput(where, 'missing "original" path')
        modified_rel = obj.get("modified")
        if modified_rel is not None and (not isinstance(modified_rel, str) or not modified_rel):
            raise BadInput(where, '"modified" must be a path or null')
        domain = obj.get("domain", self.domain)
        if not isinstance(domain, str) or not domain:
            raise BadInput(where, '"domain" must be a non-empty string')
        extra = obj.get("meta")
        extra = {} if extra is None else extra
        if not isinstance(extra, dict):
            raise BadInput(where, '"meta" must be a JSON object')

        original = inside(base, obj["original"], where)
        modified = inside(base, modified_rel, where) if modified_rel is not None else None
        try:
            if modified is None:
                probe(original)
            else:
                check_pair(original, modified)
        except BadInput as bad:
            raise BadInput(bad.where, f"{bad.reason} (from {where})") from bad
        name = original.stem.removesuffix("_original") or original.stem
        meta = {
            "name": name,
            **extra,
            "original_path": str(original),
            "modified_path": None if modified is None else str(modified),
            "manifest_line": lineno,
        }
        return _Entry(original, modified, domain, meta)


class FolderImages(_FileSource):
    """Every image at the top level of a folder, each a pair whose spy sees a blank picture (``modified=None``).

    Images (png, jpg, jpeg, webp, bmp, any case) are sorted by file name; ``meta`` holds ``name`` (the file name),
    ``original_path`` and ``modified_path`` (None), plus the object of an optional ``<stem>.json`` sidecar.
    Subfolders are not searched.

    Error policy: a missing ``root`` or a folder with no usable image always raises :class:`PairSourceError`. Every
    other bad input -- a corrupt, truncated, zero-byte or oversized (decompression bomb) image, a non-regular file
    (subfolder, FIFO, device), a non-image file, an invalid or orphaned sidecar -- raises :class:`PairSourceError`
    naming the file when ``on_error="raise"``, and with ``on_error="skip"`` is appended to ``skipped`` as
    ``(path, reason)`` and left out. An image that only fails when decoded raises on access, or in skip mode is
    recorded and the next good image (wrapping around) is returned instead. Hidden files and ``manifest.jsonl`` are
    ignored.

    Args:
        root: Folder of images.
        domain: Domain of every pair.
        on_error: ``raise`` or ``skip`` bad input, as above.
    """

    def __init__(self, root: str | Path, domain: str = "real", on_error: OnError = "raise") -> None:
        super().__init__(root, domain, on_error)
        if not self.root.is_dir():
            raise PairSourceError(f"{self.root}: not a folder")
        images: list[Path] = []
        sidecars: dict[str, Path] = {}
        for path, stem, suffix in self._listing(self.root):
            if suffix in IMAGE_EXTENSIONS:
                images.append(path)
            elif suffix == ".json" and stem not in sidecars:
                sidecars[stem] = path
            elif path.name != MANIFEST_NAME:
                self._reject_stray(path, "an image's <stem>.json sidecar")
        stems = {path.stem for path in images}
        for stem, path in sidecars.items():
            if stem not in stems:
                self._reject(path, f"sidecar without an image: no {stem}.<ext>")

        for path in images:
            try:
                extra = read_sidecar(sidecars[path.stem]) if path.stem in sidecars else {}
                probe(path)
            except BadInput as bad:
                self._reject(bad.where, bad.reason)
                continue
            meta = {"name": path.name, **extra, "original_path": str(path), "modified_path": None}
            self._entries.append(_Entry(path, None, self.domain, meta))
        self._require_entries(self.root)
