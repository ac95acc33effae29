"""chart-qa answers, recomputed a second way: from the question's words and the chart's table by a rule of this file's
own, and from the chart's pixels (bar heights, pie wedge areas). Each check also catches a corrupted answer."""

import math
import re
from dataclasses import replace

import numpy as np

from vzero.suites.score import score


def _series(table, name):
    return table["series"][name] if name else next(iter(table["series"].values()))


def recompute(q) -> str:
    """A chart-qa answer from the question's text and the table alone (and the margins a question needs)."""
    table = q.meta["pair"]["table"]
    categories = table["categories"]
    peak = max(v for values in table["series"].values() for v in values)
    if m := re.match(r"What is the value(?: of (.+?))? for (.+?)\? Answer", q.text):
        value = _series(table, m[1])[categories.index(m[2])]
        return str(value)
    if m := re.match(r"What percentage of the total is (.+?)\? Answer", q.text):
        values = _series(table, None)
        return str(100 * values[categories.index(m[1])] / math.fsum(values))
    if m := re.match(r"Which \w+ has the (largest|smallest) (?:share|value(?: of (.+?))?)\? Answer", q.text):
        ranked = sorted(zip(_series(table, m[2]), categories), reverse=m[1] == "largest")
        assert abs(ranked[0][0] - ranked[1][0]) >= 0.05 * peak, "the extreme must stand out"
        return ranked[0][1]
    m = (
        re.match(r"Is the share of (?P<a>.+?) (?P<word>greater|less) than the share of (?P<b>.+?)\?", q.text)
        or re.match(r"Is the value of (?P<s>.+?) for (?P<a>.+?) (?P<word>greater|less) than for (?P<b>.+?)\?", q.text)
        or re.match(r"Is the value for (?P<a>.+?) (?P<word>greater|less) than the value for (?P<b>.+?)\?", q.text)
    )
    assert m, q.text
    values = _series(table, m.groupdict().get("s"))
    a, b = values[categories.index(m["a"])], values[categories.index(m["b"])]
    assert abs(a - b) >= 0.10 * peak, "compared values must lie apart"
    return "yes" if (a > b) == (m["word"] == "greater") else "no"


def _corrupt(q):
    if q.answer in ("yes", "no"):
        return replace(q, answer="no" if q.answer == "yes" else "yes")
    if q.match == "number":
        return replace(q, answer=f"{float(q.answer) * 1.25 + 1:.1f}")
    others = [c for c in q.meta["pair"]["table"]["categories"] if c != q.answer]
    return replace(q, answer=others[0])


def _same(q, expected: str) -> bool:
    return score(f"\\boxed{{{expected}}}", q)[0]


def test_every_answer_recomputed_from_the_text_and_the_table(chart_qa):
    for q in chart_qa:
        expected = recompute(q)
        assert _same(q, expected), (q.text, q.answer, expected)
        assert not _same(_corrupt(q), expected), q.text
        if q.kind == "value":  # the reference is the table's value itself, and the tolerance ChartQA's 5%
            assert float(q.answer) == float(expected)
            unit = 1 if all(isinstance(v, int) for s in q.meta["pair"]["table"]["series"].values() for v in s) else 0.1
            assert q.tolerance == max(0.05 * float(expected), unit / 2)
    assert set(chart_qa.kinds) == {"value", "share", "largest", "smallest", "compare"}


def bar_heights(image) -> list[int]:
    """Every bar's height in pixels, left to right: coloured runs standing on the lowest coloured row."""
    a = np.asarray(image, int)
    coloured = (a.max(2) - a.min(2)) > 40  # every palette colour; text, axes and grid are grey
    base = int(np.flatnonzero(coloured.any(1)).max())
    row, heights, x = a[base - 1], [], 0
    while x < a.shape[1]:
        if not coloured[base - 1, x]:
            x += 1
            continue
        start = x
        while x + 1 < a.shape[1] and coloured[base - 1, x + 1] and np.abs(row[x + 1] - row[start]).max() <= 24:
            x += 1
        x += 1
        if x - start >= 2:  # not an anti-aliased seam between two bars
            mid = (start + x) // 2
            same = coloured[: base + 1, mid] & (np.abs(a[: base + 1, mid] - row[mid]).max(1) <= 60)
            top = base
            while top >= 0 and same[top]:
                top -= 1
            heights.append(base - top)
    return heights


def pie_shares(image, values) -> list[float]:
    """Each category's share in percent, as the area of its wedge's colour (found at the wedge's middle angle)."""
    a = np.asarray(image, int)
    coloured = (a.max(2) - a.min(2)) > 40
    ys, xs = np.nonzero(coloured)
    cy, cx, radius = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2, (ys.max() - ys.min()) / 2
    colours, counts = np.unique(a[coloured], axis=0, return_counts=True)
    area = {tuple(c): n for c, n in zip(colours, counts) if n > 20}  # wedges, not anti-aliased edges
    total, start, shares = sum(values), 90.0, []
    for v in values:  # wedges run clockwise from twelve o'clock, in category order
        mid = math.radians(start - 180 * v / total)
        start -= 360 * v / total
        x, y = round(cx + 0.85 * radius * math.cos(mid)), round(cy - 0.85 * radius * math.sin(mid))
        shares.append(100 * area.get(tuple(a[y, x]), 0) / sum(area.values()))
    return shares


def test_bar_answers_read_from_the_bar_heights(chart_qa):
    checked = set()
    for q in chart_qa:
        meta = q.meta["pair"]
        if meta["chart"] != "bar":
            continue
        table = meta["table"]
        names, categories = list(table["series"]), table["categories"]
        heights = np.array(bar_heights(q.images[0]), float).reshape(len(categories), len(names))  # [category, series]
        peak = max(v for values in table["series"].values() for v in values)
        seen = {name: heights[:, s] * peak / heights.max() for s, name in enumerate(names)}  # values read off pixels
        m = re.search(r" of (.+?) for | of (.+?)\?", q.text) if len(names) > 1 else None
        values = seen[(m[1] or m[2]) if m else names[0]]
        if q.kind == "value":
            read = values[categories.index(re.search(r" for (.+?)\?", q.text)[1])]
            assert abs(read - float(q.answer)) <= 0.03 * peak, (q.text, q.answer, read)
            assert abs(read - float(_corrupt(q).answer)) > 0.03 * peak
        elif q.kind in ("largest", "smallest"):
            pick = np.argmax(values) if q.kind == "largest" else np.argmin(values)
            assert categories[pick] == q.answer != _corrupt(q).answer, q.text
        else:
            a, word, b = re.search(r"for (.+?) (greater|less) than (?:the value )?for (.+?)\?", q.text).groups()
            bigger = values[categories.index(a)] > values[categories.index(b)]
            assert ("yes" if bigger == (word == "greater") else "no") == q.answer, q.text
        checked.add(q.kind)
    assert checked == {"value", "largest", "smallest", "compare"}


def test_pie_shares_read_from_the_wedge_areas(chart_qa):
    n = 0
    for q in chart_qa:
        if q.kind != "share":
            continue
        values = next(iter(q.meta["pair"]["table"]["series"].values()))
        category = re.match(r"What percentage of the total is (.+?)\?", q.text)[1]
        read = pie_shares(q.images[0], values)[q.meta["pair"]["table"]["categories"].index(category)]
        assert abs(read - float(q.answer)) <= 3, (q.text, q.answer, read)  # labels printed on a wedge hide some
        assert abs(read - float(_corrupt(q).answer)) > 3
        n += 1
    assert n >= 20
