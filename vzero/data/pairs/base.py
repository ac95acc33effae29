"""The pair type every source yields, and the indexing and sharding they share.

A source is a read-only sequence of :class:`ImagePair`. Procedural sources (CLEVR-style scenes, charts) compute
pair ``i`` from ``(seed, i)`` alone, so any rank can build any pair without talking to the others, and
``shard(rank, world_size)`` hands each rank a disjoint, interleaved slice.
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
