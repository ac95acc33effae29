"""Model output is untrusted text: before it re-enters anyone's prompt, every spelling of a control token is broken.

Sampling suppresses the special *ids*, and decoding skips them, but a model can still *spell* ``<|image_pad|>`` or
``<|im_end|>`` with ordinary tokens. Kept as a clue and encoded into the next player's prompt, that text would become
the special token: a picture placeholder the processor has no picture for (``StopIteration`` in
``get_text_with_replacements``), a video placeholder (``get_rope_index`` fails), or a chat-turn boundary injected into
every later player's prompt.

This module *neutralises* such text rather than encoding it specially: :class:`SafeText` inserts a mark (a space,
unless a control token contains one) after the first character of every occurrence of every control token, so
``<|im_end|>`` reads ``< |im_end|>`` in the game, its prompts and the logs. No occurrence survives, overlapping ones
included, and none is created: a new one would have to contain the mark, which no control token does. Text without
a control-token spelling is returned unchanged, so it parses exactly as before; applying it twice changes nothing more.

The control tokens come from the processor and its tokenizer (:func:`control_tokens`), so any model family is covered:
Qwen's ``<|vision_start|>``, InternVL's ``<IMG_CONTEXT>`` and ``<img>``, Gemma's ``<start_of_image>``, and so on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_MARKS = (" ", "\u2009", "\u00b7", "\ufffd")
"""Candidate marks, in order of preference: the first one no control token contains is used."""


def control_tokens(processor) -> tuple[str, ...]:
    """Every special or added token of ``processor`` and its tokenizer, and the processor's placeholder strings.

    Args:
        processor: an HF processor (with a ``tokenizer``) or a bare tokenizer.

    Returns:
        Sorted, without duplicates. Whitespace-only and one-character tokens are left out: they are ordinary text
        (like Gemma's added ``"\\n\\n"``), and no mark inside them could break them.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    found: set[str] = set(getattr(tokenizer, "all_special_tokens", ()))
    found |= {getattr(t, "content", str(t)) for t in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    found |= set(getattr(processor, "all_special_multimodal_tokens", ()) or ())
    for owner in {id(processor): processor, id(tokenizer): tokenizer}.values():
        # Placeholders and markers that a processor keeps as attributes: image_token, boi_token, start_image_token, ...
        found |= {v for k, v in vars(owner).items() if k.endswith("_token") and isinstance(v, str)}
    return tuple(sorted(t for t in found if isinstance(t, str) and len(t) > 1 and not t.isspace()))


class SafeText:
    """Neutralises control-token spellings in text; the identity on text that has none.

    Args:
        tokens: the control tokens, e.g. from :func:`control_tokens`.
    """

    def __init__(self, tokens: Iterable[str]) -> None:
        self.tokens = tuple(sorted({t for t in tokens if len(t) > 1 and not t.isspace()}))
        self.mark = next((m for m in _MARKS if not any(m in t for t in self.tokens)), None)
        if self.mark is None:
            raise ValueError(f"every candidate mark {_MARKS!r} occurs in a control token")
        # Where a token may start: one of their first characters. Then a set lookup per distinct length decides, so
        # a tokenizer with thousands of added tokens (Gemma's) costs a few lookups per candidate, not a regex each.
        self._set = frozenset(self.tokens)
        lengths: dict[str, set[int]] = {}
        for t in self.tokens:
            lengths.setdefault(t[0], set()).add(len(t))
        self._lengths = {c: sorted(n) for c, n in lengths.items()}
        self._firsts = re.compile("[" + "".join(map(re.escape, sorted(lengths))) + "]") if lengths else None

    @classmethod
    def for_processor(cls, processor) -> SafeText:
        return cls(control_tokens(processor))

    def __call__(self, text: str) -> str:
        """``text`` with the mark after the first character of every control-token occurrence."""
        if self._firsts is None:
            return text
        cuts = [
            m.start() + 1
            for m in self._firsts.finditer(text)
            if any(text[m.start() : m.start() + n] in self._set for n in self._lengths[m.group()])
        ]
        if not cuts:
            return text
        pieces, last = [], 0
        for cut in cuts:
            pieces += [text[last:cut], self.mark]
            last = cut
        pieces.append(text[last:])
        return "".join(pieces)
