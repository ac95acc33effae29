"""Sources of label-free image pairs: procedural scenes and charts, or folders of pictures."""

from vzero.data.pairs.base import ImagePair, OnError, PairSource, PairSourceError, Shard, blank_like
from vzero.data.pairs.chart import ChartPairs
from vzero.data.pairs.clevr import ClevrPairs
from vzero.data.pairs.folder import FolderImages, FolderPairs

__all__ = [
    "ChartPairs",
    "ClevrPairs",
    "FolderImages",
    "FolderPairs",
    "ImagePair",
    "OnError",
    "PairSource",
    "PairSourceError",
    "Shard",
    "blank_like",
]
