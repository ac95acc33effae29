"""The pair type every source yields, and the indexing and sharding they share.

A source is a read-only sequence of :class:`ImagePair`. Procedural sources (CLEVR-style scenes, charts) compute
pair ``i`` from ``(seed, i)`` alone, so any rank can build any pair without talking to the others, and
``shard(rank, world_size)`` hands each rank a disjoint, interleaved slice.

Every picture reaches a game as 8-bit RGB through :func:`to_rgb`, which :class:`ImagePair` applies to whatever a
source hands it (files decoded by the folder sources, rendered scenes and charts, a user's own source): high-bit-depth
pictures are scaled to 8 bits by their value range and transparent ones composited on :data:`BACKGROUND`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image

OnError = Literal["raise", "skip"]
"""What a file-backed source does with bad input: ``raise`` a :class:`PairSourceError` naming the file, or ``skip`` it
and record it in the source's ``skipped`` list."""


def is_int(value: Any) -> bool:
    """An int (Python or numpy), and not a bool: the check behind every count, seed and size argument."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class PairSourceError(ValueError):
    """Bad input to a pair source. The message always names the offending file, folder or key."""


@dataclass(frozen=True)
class ImagePair:
    """One game's pictures.

    Civilians see ``original``. The spy sees ``modified``, or a blank picture when ``modified`` is None or the game is
    configured for blank spies.
    """

    original: Image.Image
    modified: Image.Image | None
    domain: str
    """One of ``clevr``, ``chart`` or ``real``; it picks the spy's instruction."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Source-specific ground truth (scene objects, chart tables, file paths). Never shown to a model."""

    def __post_init__(self) -> None:
        # The one place every picture passes: whatever mode a source produced, a game sees 8-bit RGB (see to_rgb).
        object.__setattr__(self, "original", to_rgb(self.original))
        if self.modified is not None:
            object.__setattr__(self, "modified", to_rgb(self.modified))


class PairSource(Sequence[ImagePair]):
    """Base class: subclasses implement ``__len__`` and ``_get(index)`` for a non-negative index."""

    def __len__(self) -> int:
        raise NotImplementedError

    def _get(self, index: int) -> ImagePair:
        raise NotImplementedError

    def __getitem__(self, index: int) -> ImagePair:  # type: ignore[override]
        if not isinstance(index, int):
            raise TypeError(f"{type(self).__name__} indices must be int, not {type(index).__name__}")
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"{type(self).__name__} index {index} out of range for {n} pairs")
        return self._get(index)

    def __iter__(self) -> Iterator[ImagePair]:
        for i in range(len(self)):
            yield self[i]

    def shard(self, rank: int, world_size: int) -> PairSource:
        """The pairs ``rank, rank + world_size, ...``: disjoint across ranks, together covering the source."""
        return Shard(self, rank, world_size)

    def held_out(self, n: int) -> PairSource:
        """``n`` pairs of the same kind that share no picture with this source, for evaluation. Procedural sources
        draw them from another seed; a source of files cannot, and says so."""
        raise PairSourceError(
            f"{type(self).__name__} cannot hold out evaluation pairs by itself: name a separate source of pictures "
            "in eval.pairs"
        )


HELD_OUT_SEED = 1_000_003
"""Procedural sources hold out evaluation pairs by drawing them from ``seed + HELD_OUT_SEED``."""


class Shard(PairSource):
    """An interleaved, read-only view of another source."""

    def __init__(self, base: PairSource, rank: int, world_size: int) -> None:
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.base, self.rank, self.world_size = base, rank, world_size

    def __len__(self) -> int:
        return max(0, (len(self.base) - self.rank + self.world_size - 1) // self.world_size)

    def _get(self, index: int) -> ImagePair:
        return self.base[self.rank + index * self.world_size]


def blank_like(image: Image.Image) -> Image.Image:
    """The blank picture a spy sees in blank-spy games: mid-grey, the size of the civilians' picture."""
    return Image.new("RGB", image.size, (128, 128, 128))


BACKGROUND = (255, 255, 255)
"""The colour transparent pixels are composited on: white, as a page or a viewer shows a transparent picture. (Not the
blank spy picture's mid-grey, so a transparent picture never looks like a blank one.)"""

HIGH_BIT_RANGES: dict[str, tuple[float, float]] = {
    "I;16": (0, 65535),
    "I;16B": (0, 65535),
    "I;16L": (0, 65535),
    "I;16N": (0, 65535),
    "I": (0, 65535),
    "F": (0.0, 1.0),
}
"""The value range of each single-channel high-bit-depth mode that :func:`to_rgb` maps onto 0-255: 16-bit modes
their full 0-65535; ``I`` (32-bit integers, which is how Pillow hands out 16-bit samples of some formats) 0-65535 too;
``F`` (32-bit floats) 0-1, the float-image convention."""

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def to_rgb(image: Image.Image) -> Image.Image:
    """The 8-bit RGB picture a game shows, from a picture of any Pillow mode. The one conversion every picture goes
    through (:class:`ImagePair` applies it); an RGB picture without transparency comes back as is.

    - **High bit depth.** Single-channel modes of more than 8 bits (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``, ``I``,
      ``F``; e.g. a 16-bit grayscale PNG) are scaled linearly from their mode's value range
      (:data:`HIGH_BIT_RANGES`: 0-65535 for the integer modes, 0-1 for ``F``) to 0-255, rounding to the nearest
      level, and shown as grey. A picture whose values fall outside its mode's range (an ``I`` picture holding
      32-bit data, an ``F`` picture in 0-255) is stretched from its own minimum to its own maximum instead; NaN and
      infinite values become black. (Pillow's own ``convert("RGB")`` clips these modes at 255, which turns a 16-bit
      picture almost entirely white.) 16-bit RGB and RGBA files have no Pillow mode of their own: Pillow reads them
      as ``RGB`` / ``RGBA`` with each sample's high byte, the same scaling.
    - **Transparency.** A picture with an alpha channel (``RGBA``, ``LA``, ``PA`` and their premultiplied forms) or
      a transparency key (``P`` with a transparent palette entry, ``L``, ``RGB`` or ``I;16`` with a colour key) is
      alpha-composited over :data:`BACKGROUND`, white: fully transparent pixels become white whatever colour they
      store, half-transparent ones are blended.
    - Every other mode (``L``, ``P``, ``1``, ``CMYK``, ``YCbCr``, ...) goes through Pillow's ``convert("RGB")``.
    """
    transparency = image.info.get("transparency")
    if image.mode in HIGH_BIT_RANGES:
        image = _to_8bit(image, transparency)
    elif image.mode == "RGB" and transparency is None:
        return image
    if image.mode in _ALPHA_MODES or transparency is not None or _palette_has_alpha(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_8bit(image: Image.Image, transparency: Any) -> Image.Image:
    """A single-channel high-bit-depth picture as ``L`` (or ``LA`` where its transparency key hides pixels)."""
    values = np.asarray(image).astype(np.float64)  # [H, W]
    lo, hi = HIGH_BIT_RANGES[image.mode]
    finite = np.isfinite(values)
    if finite.any() and (values[finite].min() < lo or values[finite].max() > hi):
        lo, hi = float(values[finite].min()), float(values[finite].max())
    scaled = (np.where(finite, values, lo) - lo) * (255.0 / max(hi - lo, 1e-12))
    gray = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")
    if isinstance(transparency, (int, float)) and not isinstance(transparency, bool):
        alpha = np.where(values == transparency, 0, 255).astype(np.uint8)
        return Image.merge("LA", (gray, Image.fromarray(alpha, "L")))
    return gray


def _palette_has_alpha(image: Image.Image) -> bool:
    return image.mode == "P" and image.palette is not None and "A" in image.palette.mode
