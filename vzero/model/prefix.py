"""Reuse of prompt keys and values across a rollout's turns.

Within one rollout the weights do not change, and a player's next prompt repeats most of an earlier one: the chat
header, the picture, the rules, the role and the clues already said. :class:`PrefixStore` keeps each prompt's keys and
values after its prefill, by picture and side (the weights that play the row), and hands a later prompt the longest
stored prefix it repeats token for token, so that its prefill computes only the rest
(:class:`vzero.model.decode.VzeroDecoder` lays the batch out).

Keys and values depend on a token, its position and everything before it. The same tokens with the same picture get
the same positions (Qwen-VL's multimodal positions depend only on the tokens before and the picture's grid), so the
stored states are what a fresh prefill computes, up to float rounding in a differently shaped batch. A prefix is used
only when it covers the picture whole, so a row's picture features are either all stored or all computed, and when it
leaves at least the last token to compute, whose logits start the decoding.

The store lives for one rollout (:meth:`PrefixStore.session`): after an optimizer step its states would be stale.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from vzero.model.inputs import Side


@dataclass(frozen=True)
class Prefix:
    """What a batch takes from the store, row by row.

    ``lengths[i]`` leading prompt tokens of row ``i`` come from ``states[i]`` (``[layers, 2, heads, lengths[i],
    head_dim]``: keys then values), none where it is 0.
    """

    lengths: list[int]
    states: list[torch.Tensor | None]

    @property
    def picture_rows(self) -> list[int]:
        """The rows whose picture tokens the prefill computes (those with nothing stored)."""
        return [i for i, n in enumerate(self.lengths) if n == 0]


@dataclass(eq=False)
class _Entry:
    ids: torch.Tensor  # [T] int64, on the CPU
    states: torch.Tensor  # [layers, 2, heads, T, head_dim]
    picture: object  # held, so that no other picture can take its id while the entry lives

    @property
    def bytes(self) -> int:
        return self.states.numel() * self.states.element_size()


class PrefixStore:
    """Prompts' keys and values by (picture, side), within a byte budget; the least recently used go first.

    Args:
        budget_bytes: at most this many bytes of states are kept. 0 keeps none.
        per_picture: at most this many prompts are kept per picture and side (a game's players share a picture, and
            a player's own last prompt is the longest prefix of its next one).
    """

    def __init__(self, budget_bytes: int, per_picture: int = 8) -> None:
        self.budget_bytes, self.per_picture = budget_bytes, per_picture
        self._groups: dict[tuple[int, Side], list[_Entry]] = {}  # per (picture, side): least recently used first
        self._order: OrderedDict[int, tuple[int, Side]] = OrderedDict()  # id(entry) -> its group, LRU first
        self._bytes = 0
        self._active = False

    @property
    def active(self) -> bool:
        return self._active and self.budget_bytes > 0

    @property
    def bytes(self) -> int:
        return self._bytes

    @contextlib.contextmanager
    def session(self) -> Iterator[PrefixStore]:
        """Within this block prompts are kept and reused; they are let go when it ends (sessions do not nest)."""
        if self._active:
            yield self
            return
        self._active = True
        try:
            yield self
        finally:
            self._active = False
            self.clear()

    def clear(self) -> None:
        self._groups.clear()
        self._order.clear()
        self._bytes = 0

    def find(
        self, prompts: Sequence[list[int]], pictures: Sequence[object], sides: Sequence[Side], picture_ends: list[int]
    ) -> Prefix:
        """The longest stored prefix of each prompt, for the same picture and side (empty outside a session).

        Args:
            picture_ends: per row, the index just after its last picture token; a shorter prefix is not used.
        """
        lengths, states = [], []
        for ids, picture, side, end in zip(prompts, pictures, sides, picture_ends):
            group = self._group(picture, side) if self.active else []
            row = torch.tensor(ids)
            best, best_len = None, 0
            for entry in group:
                n = min(len(entry.ids), len(row) - 1)  # the last prompt token is always computed
                common = int((entry.ids[:n] == row[:n]).long().cumprod(0).sum())
                if common > best_len:
                    best, best_len = entry, common
            if best is None or best_len < end:
                lengths.append(0)
                states.append(None)
                continue
            group.remove(best)
            group.append(best)
            self._order.move_to_end(id(best))
            lengths.append(best_len)
            states.append(best.states[:, :, :, :best_len])
        return Prefix(lengths, states)

    def keep(
        self, prompts: Sequence[list[int]], pictures: Sequence[object], sides: Sequence[Side], states: torch.Tensor
    ) -> None:
        """Store each row's prompt states (``states``: ``[layers, 2, B, heads, T, head_dim]``, row ``i``'s prompt in
        its first ``len(prompts[i])`` columns, as :class:`~vzero.model.decode.Decoded` carries them)."""
        if not self.active:
            return
        for i, (ids, picture, side) in enumerate(zip(prompts, pictures, sides)):
            group = self._group(picture, side)
            if any(len(e.ids) == len(ids) and e.ids.tolist() == list(ids) for e in group):
                continue  # the same prompt again (a vote's samples): one copy serves them all
            entry = _Entry(torch.tensor(ids), states[:, :, i, :, : len(ids)].clone(), picture)
            if entry.bytes > self.budget_bytes:
                continue
            if len(group) >= self.per_picture:
                self._drop(group[0])
            group.append(entry)
            self._order[id(entry)] = (id(picture), side)
            self._bytes += entry.bytes
            while self._bytes > self.budget_bytes:
                oldest, key = next(iter(self._order.items()))
                self._drop(next(e for e in self._groups[key] if id(e) == oldest))

    def _group(self, picture, side: Side) -> list[_Entry]:
        # Entries hold their picture, so while a group has entries no other picture can have its id.
        return self._groups.setdefault((id(picture), side), [])

    def _drop(self, entry: _Entry) -> None:
        key = self._order.pop(id(entry))
        group = self._groups[key]
        group.remove(entry)
        self._bytes -= entry.bytes
