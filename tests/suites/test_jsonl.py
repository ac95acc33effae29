"""A user's JSONL suite: the happy path, and every kind of bad row named by file and line, or skipped and counted."""

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vzero.suites import SuiteError, load_jsonl, load_suite


def _image(path: Path, mode="RGB", size=(24, 16)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(str(path))).integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").convert(mode).save(path)
    return path.name


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _truncated_png(path: Path) -> None:
    """Valid chunks (Pillow's verify passes) around pixel data cut short (only a full decode fails)."""
    raw = b"".join(b"\x00" + bytes(range(3 * 8)) for _ in range(8))
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + _chunk(b"IDAT", zlib.compress(raw)[:20]) + _chunk(b"IEND", b""))


def _write(folder: Path, rows: list) -> Path:
    path = folder / "suite.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def _good(folder: Path) -> list[dict]:
    _image(folder / "img" / "cat.png", "RGBA")
    _image(folder / "b.png")
    return [
        {"images": ["img/cat.png"], "question": "What animal is this?", "answer": "cat", "kind": "animal"},
        {"images": ["img/cat.png", "b.png"], "question": "Which is brighter?", "answer": "B", "choices": ["L", "R"]},
        {"images": ["b.png"], "question": "How many? Answer in \\boxed{}.", "answer": 3, "extra": "ignored"},
    ]


def test_a_good_file(tmp_path):
    rows = _good(tmp_path)
    suite = load_jsonl(_write(tmp_path, [rows[0], "", "   ", rows[1], rows[2]]))
    assert suite.name == "suite" and len(suite) == 3 and suite.skipped == []
    animal, brighter, count = suite[0], suite[1], suite[2]
    assert animal.kind == "animal" and count.kind == "default" and count.answer == "3"
    assert all(image.mode == "RGB" for q in suite for image in q.images)  # the RGBA cat is composited to RGB
    assert len(brighter.images) == 2 and brighter.answer == "R" and brighter.choices == ("L", "R")
    assert "A. L\nB. R" in brighter.text and brighter.text.endswith("Give the letter of your choice inside \\boxed{}.")
    assert animal.text.endswith("Give your answer inside \\boxed{}.") and count.text.count("\\boxed") == 1
    assert suite.score("\\boxed{B}", brighter) == (True, True) and suite.score("\\boxed{r}", brighter)[0]
    assert suite.score("\\boxed{three}", count)[0] and suite.score("It is a \\boxed{Cat}.", animal)[0]
    assert suite.chance()["default"] == pytest.approx((1 / 2 + 1 / 2) / 2)  # one choice question, one open
    assert suite.blind()["default"][1] == 0.5
    assert [q.meta["line"] for q in suite] == [1, 4, 5]
    assert load_suite(tmp_path / "suite.jsonl").answers() == suite.answers()


def _bad_rows(folder: Path) -> dict[str, tuple[object, str]]:
    """Each kind of defect: a row and a phrase its error must contain."""
    (folder / "empty.png").write_bytes(b"")
    (folder / "garbage.png").write_bytes(b"this is not a picture at all")
    (folder / "notes.txt").write_text("hello")
    (folder / "sub").mkdir()
    _truncated_png(folder / "truncated.png")
    outside = folder.parent / f"{folder.name}-outside.png"
    _image(outside)
    (folder / "link.png").symlink_to(outside)
    os.mkfifo(folder / "fifo.png")

    def row(**kw):
        return {"images": ["b.png"], "question": "q?", "answer": "a", **kw}

    return {
        "json": ('{"images": ["b.png"], "question": ', "not valid JSON"),
        "array": ('["b.png", "q?", "a"]', "expected a JSON object, got list"),
        "no images": ({"question": "q?", "answer": "a"}, 'missing "images"'),
        "no question": ({"images": ["b.png"], "answer": "a"}, 'missing "question"'),
        "no answer": ({"images": ["b.png"], "question": "q?"}, 'missing "answer"'),
        "images a string": (row(images="b.png"), '"images" must be a non-empty list'),
        "images empty": (row(images=[]), '"images" must be a non-empty list'),
        "image a number": (row(images=[3]), '"images" must be a non-empty list'),
        "question a number": (row(question=7), '"question" must be a non-empty string'),
        "answer a bool": (row(answer=True), '"answer" must be a non-empty string or a number'),
        "answer blank": (row(answer="  "), '"answer" must be'),
        "kind a list": (row(kind=["x"]), '"kind" must be a non-empty string'),
        "one choice": (row(choices=["a"]), '"choices" must be a list of two or more'),
        "choices repeat": (row(choices=["a", "A."]), "repeat an option"),
        "answer not a choice": (row(answer="zebra", choices=["x", "y"]), "none of the choices"),
        "missing file": (row(images=["nope.png"]), "no such file"),
        "zero bytes": (row(images=["empty.png"]), "empty (zero-byte) file"),
        "corrupt": (row(images=["garbage.png"]), "unreadable or corrupt image"),
        "not an image": (row(images=["notes.txt"]), "unreadable or corrupt image"),
        "truncated": (row(images=["truncated.png"]), "cannot decode image"),
        "folder": (row(images=["sub"]), "a folder"),
        "fifo": (row(images=["fifo.png"]), "not a regular file"),
        "parent path": (row(images=["../x.png"]), "outside"),
        "absolute path": (row(images=[str(outside)]), "is absolute"),
        "symlink out": (row(images=["link.png"]), "outside"),
    }


DEFECTS = [
    "json", "array", "no images", "no question", "no answer", "images a string", "images empty", "image a number",
    "question a number", "answer a bool", "answer blank", "kind a list", "one choice", "choices repeat",
    "answer not a choice", "missing file", "zero bytes", "corrupt", "not an image", "truncated", "folder", "fifo",
    "parent path", "absolute path", "symlink out",
]  # fmt: skip


@pytest.mark.parametrize("defect", DEFECTS)
def test_a_bad_row_is_an_error_naming_file_and_line(tmp_path, defect):
    good = _good(tmp_path)
    bad, phrase = _bad_rows(tmp_path)[defect]
    path = _write(tmp_path, [good[0], good[1], bad, good[2]])
    with pytest.raises(SuiteError) as info:
        load_jsonl(path)
    assert str(info.value).startswith(f"{path}:3: ") and phrase in str(info.value), str(info.value)


def test_skip_mode_counts_every_bad_row_and_keeps_the_good_ones(tmp_path):
    good = _good(tmp_path)
    bad = _bad_rows(tmp_path)
    assert list(bad) == DEFECTS
    rows = [good[0], *(row for row, _ in bad.values()), good[1], good[2]]
    suite = load_jsonl(_write(tmp_path, rows), on_error="skip")
    assert len(suite) == 3 and [q.answer for q in suite] == ["cat", "R", "3"]
    assert [line for line, _ in suite.skipped] == list(range(2, 2 + len(bad)))
    for (line, reason), (_, phrase) in zip(suite.skipped, bad.values()):
        assert phrase in reason, (line, reason)


def test_a_file_that_cannot_be_a_suite_always_raises(tmp_path):
    with pytest.raises(SuiteError, match="no such file"):
        load_jsonl(tmp_path / "missing.jsonl", on_error="skip")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"question": "caf\xe9"}\n')
    with pytest.raises(SuiteError, match="cannot read"):
        load_jsonl(tmp_path / "latin1.jsonl")
    path = _write(tmp_path, ["not json", {"question": "q"}])
    with pytest.raises(SuiteError, match=r"no usable questions \(2 bad rows skipped"):
        load_jsonl(path, on_error="skip")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(SuiteError, match="no usable questions"):
        load_jsonl(tmp_path / "blank.jsonl")
    with pytest.raises(SuiteError, match="on_error"):
        load_jsonl(path, on_error="ignore")


def test_a_picture_changed_after_loading_is_named_on_access(tmp_path):
    suite = load_jsonl(_write(tmp_path, _good(tmp_path)))
    (tmp_path / "b.png").write_bytes(b"")
    assert suite[0].images  # its own picture is intact
    with pytest.raises(SuiteError, match=r"suite\.jsonl:2: .*b\.png.*changed since the suite was loaded"):
        suite[1]
