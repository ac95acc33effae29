"""The embedded toy model: a real Qwen2.5-VL at toy size, with its tokenizer, random build, self-supervised
pretraining, and the names ``tiny`` / ``tiny-random`` resolved to cached folders before any loader sees them."""

from vzero.tiny.cache import NAMES, cache_dir, ensure_pretrained, ensure_random, resolve

__all__ = ["NAMES", "cache_dir", "ensure_pretrained", "ensure_random", "resolve"]
