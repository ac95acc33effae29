"""clevr-qa and clevr-diff answers, recomputed a second way: from the question's words and the scene graph by a rule
of this file's own, and from the rendered pixels. Each check also catches a corrupted answer."""

import colorsys
import re
from dataclasses import replace

import numpy as np
import pytest

from vzero.data.pairs.clevr import MATERIALS, SHAPES, SIZES
from vzero.data.pairs.clevr_render import COLORS
from vzero.suites.score import score

COLUMNS = ("size", "color", "material", "shape")
VOCABULARY = {v: col for col, values in zip(COLUMNS, (SIZES, tuple(COLORS), MATERIALS, SHAPES)) for v in values}


def _phrase(words: str) -> dict[str, str]:
    """``large red metal cubes`` -> {"size": "large", ...}, read word by word (plural ``s`` dropped)."""
    found = {}
    for word in words.split():
        if word in ("object", "objects"):
            continue
        word = word[:-1] if word not in VOCABULARY and word[:-1] in VOCABULARY else word
        assert word in VOCABULARY, f"unknown word {word!r} in {words!r}"
        assert VOCABULARY[word] not in found, words
        found[VOCABULARY[word]] = word
    return found


def _mask(objects, words: str) -> np.ndarray:
    """The objects the phrase names, as a boolean mask over a table of the scene (numpy, column by column)."""
    table = np.array([[o[c] for c in COLUMNS] for o in objects])
    mask = np.ones(len(objects), bool)
    for column, value in _phrase(words).items():
        mask &= table[:, COLUMNS.index(column)] == value
    return mask


def recompute_qa(q) -> str:
    """A clevr-qa answer from the question's text and the scene alone."""
    objects = q.meta["pair"]["scene"]["objects"]
    if m := re.match(r"How many (.+) are there\?", q.text):
        return str(int(_mask(objects, m[1]).sum()))
    if m := re.match(r"Is there an? (.+)\?", q.text):
        return "yes" if _mask(objects, m[1]).any() else "no"
    if m := re.match(r"Are there (more|fewer) (.+) than (.+)\?", q.text):
        a, b = _mask(objects, m[2]).sum(), _mask(objects, m[3]).sum()
        return "yes" if (a > b if m[1] == "more" else a < b) else "no"
    if m := re.match(r"Are there the same number of (.+) and (.+)\?", q.text):
        return "yes" if _mask(objects, m[1]).sum() == _mask(objects, m[2]).sum() else "no"
    m = re.match(r"What (color|shape|material|size) is the (.+?)(?: made of)?\?", q.text)
    assert m, q.text
    (k,) = np.flatnonzero(_mask(objects, m[2]))  # the object must be the only one its phrase names
    return objects[k][m[1]]


def _changed(pair_meta) -> list[int]:
    """Objects whose color or shape differs between the two scenes (not read from the change log)."""
    before, after = pair_meta["scene"]["objects"], pair_meta["modified_scene"]["objects"]
    return [i for i, (a, b) in enumerate(zip(before, after)) if (a["color"], a["shape"]) != (b["color"], b["shape"])]


def _named(q) -> int:
    m = re.search(r"What did the (.+) in the first picture become", q.text)
    (k,) = np.flatnonzero(_mask(q.meta["pair"]["scene"]["objects"], m[1]))
    return int(k)


def recompute_diff(q) -> str:
    meta = q.meta["pair"]
    changed = _changed(meta)
    if q.kind == "how_many":
        return str(len(changed))
    if q.kind == "which":
        (k,) = changed
        return " ".join(meta["scene"]["objects"][k][c] for c in COLUMNS)
    after = meta["modified_scene"]["objects"][_named(q)]
    return f"{after['color']} {after['shape']}"


_HUES = {name: colorsys.rgb_to_hsv(*(np.array(rgb) / 255))[0] for name, rgb in COLORS.items()}


def pixel_color(image, pixel) -> str:
    """The color name of the picture around an object's centre: grey if unsaturated, else the nearest hue."""
    x, y = pixel
    patch = np.asarray(image, float)[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3].reshape(-1, 3) / 255
    hue, saturation, _ = colorsys.rgb_to_hsv(*np.median(patch, 0))
    if saturation < 0.25:
        return "gray"
    return min((c for c in COLORS if c != "gray"), key=lambda c: min(abs(hue - _HUES[c]), 1 - abs(hue - _HUES[c])))


def pixel_changed(q) -> list[int]:
    """Objects whose centre looks different in the second picture."""
    before, after = (np.asarray(image, float) for image in q.images)
    out = []
    for i, obj in enumerate(q.meta["pair"]["scene"]["objects"]):
        x, y = obj["pixel"]
        window = (slice(max(0, y - 2), y + 3), slice(max(0, x - 2), x + 3))
        # The median over the window ignores a neighbour's edge reaching into it; only a hidden centre fools it.
        if np.median(np.abs(before[window] - after[window]).max(2)) > 10:
            out.append(i)
    return out


def _corrupt(q):
    """The same question with a wrong answer of the same form."""
    if q.answer in ("yes", "no"):
        return replace(q, answer="no" if q.answer == "yes" else "yes")
    if q.answer.isdigit():
        return replace(q, answer=str(int(q.answer) + 1))
    words = q.answer.split()
    column = VOCABULARY[words[0]]
    values = [v for v, c in VOCABULARY.items() if c == column]
    words[0] = values[(values.index(words[0]) + 1) % len(values)]
    return replace(q, answer=" ".join(words))


def _same(q, expected: str) -> bool:
    """Whether ``expected`` answers ``q``, as the suite scores it."""
    return score(f"\\boxed{{{expected}}}", q)[0]


@pytest.mark.parametrize("suite, recompute", [("clevr_qa", recompute_qa), ("clevr_diff", recompute_diff)])
def test_every_answer_recomputed_from_the_text_and_the_scene(suite, recompute, request):
    suite = request.getfixturevalue(suite)
    kinds = set()
    for q in suite:
        assert _same(q, recompute(q)), (q.text, q.answer, recompute(q))
        assert not _same(_corrupt(q), recompute(q)), q.text
        kinds.add(q.kind)
    assert kinds == set(suite.kinds) and len(kinds) == (7 if suite.name == "clevr-qa" else 3)


def test_color_answers_and_counts_read_from_the_pixels(clevr_qa):
    """Each object's color as the picture shows it: the color queries' answers, and the counts recounted with it."""
    colors, counts = [], []
    for q in clevr_qa:
        objects = q.meta["pair"]["scene"]["objects"]
        seen = [{**o, "color": pixel_color(q.images[0], o["pixel"])} for o in objects]
        if q.kind == "query_color":
            m = re.match(r"What color is the (.+?)\?", q.text)
            (k,) = np.flatnonzero(_mask(objects, m[1]))
            colors.append((seen[k]["color"] == q.answer, seen[k]["color"] == _corrupt(q).answer))
        elif q.kind == "count":
            recount = str(int(_mask(seen, re.match(r"How many (.+) are there\?", q.text)[1]).sum()))
            counts.append((recount == q.answer, recount == _corrupt(q).answer))
    for checks in (colors, counts):
        right, corrupted = np.mean(checks, 0)
        assert len(checks) >= 60 and right >= 0.95 and corrupted <= 0.05, (len(checks), right, corrupted)


def test_what_changed_read_from_the_pixels(clevr_diff):
    """The objects whose centres differ between the two pictures: how many, which, and the new color."""
    checks = {kind: [] for kind in clevr_diff.kinds}
    for q in clevr_diff:
        changed = pixel_changed(q)
        objects = q.meta["pair"]["scene"]["objects"]
        if q.kind == "how_many":
            checks[q.kind].append((str(len(changed)) == q.answer, str(len(changed)) == _corrupt(q).answer))
        elif q.kind == "which":
            seen = " ".join(objects[changed[0]][c] for c in COLUMNS) if len(changed) == 1 else ""
            checks[q.kind].append((_same(q, seen), _same(_corrupt(q), seen)))
        else:
            k = _named(q)
            color = pixel_color(q.images[1], objects[k]["pixel"])
            checks[q.kind].append(
                (k in changed and q.answer.startswith(color + " "), _corrupt(q).answer.startswith(color))
            )
    for kind, results in checks.items():
        right, corrupted = np.mean(results, 0)
        assert len(results) >= 60 and right >= 0.95 and corrupted <= 0.05, (kind, len(results), right, corrupted)
