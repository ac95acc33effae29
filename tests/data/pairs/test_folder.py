import contextlib
import json
import os
import re
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vzero.data.pairs.base import PairSourceError
from vzero.data.pairs.folder import FolderImages, FolderPairs

SIZE = (32, 24)


def _image(path: Path, size=SIZE, seed=0, fmt=None) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_bytes(width: int, height: int, idat: bytes) -> bytes:
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _good_pairs(folder: Path) -> None:
    """Two good pairs, ``a`` (with a sidecar) and ``b`` (jpeg, upper-case extension)."""
    _image(folder / "a_original.png", seed=1)
    _image(folder / "a_modified.png", seed=2)
    (folder / "a.json").write_text(json.dumps({"edit": "red cup removed"}))
    _image(folder / "b_original.JPG", seed=3, fmt="JPEG")
    _image(folder / "b_modified.JPG", seed=4, fmt="JPEG")


@contextlib.contextmanager
def _deadline(seconds: int = 10):
    """Fail instead of hanging forever if something blocks (e.g. opening a FIFO)."""

    def _timeout(signum, frame):
        raise TimeoutError("blocked: a pair source must never wait on a FIFO")

    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --- bad inputs: each makes one file bad; returns the file name the error must mention -------------------------------


def _corrupt(folder: Path) -> str:
    _image(folder / "c_modified.png")
    (folder / "c_original.png").write_bytes(b"this is not an image" * 10)
    return "c_original.png"


def _zero_byte(folder: Path) -> str:
    _image(folder / "c_original.png")
    (folder / "c_modified.png").write_bytes(b"")
    return "c_modified.png"


def _truncated(folder: Path) -> str:
    data = _image(folder / "c_original.png").read_bytes()
    _image(folder / "c_modified.png")
    (folder / "c_original.png").write_bytes(data[: len(data) // 2])
    return "c_original.png"


def _missing_partner(folder: Path) -> str:
    _image(folder / "c_original.png")
    return "c_original.png"


def _duplicate_partner(folder: Path) -> str:
    _image(folder / "c_original.png")
    _image(folder / "c_original.jpg", fmt="JPEG")
    _image(folder / "c_modified.png")
    return "c_original."


def _size_mismatch(folder: Path) -> str:
    _image(folder / "c_original.png")
    _image(folder / "c_modified.png", size=(40, 24))
    return "c_modified.png"


def _non_image(folder: Path) -> str:
    (folder / "notes.txt").write_text("hello")
    return "notes.txt"


def _unpaired_image(folder: Path) -> str:
    _image(folder / "cat.png")
    return "cat.png"


def _bad_sidecar(folder: Path) -> str:
    _image(folder / "c_original.png")
    _image(folder / "c_modified.png")
    (folder / "c.json").write_text("{not json")
    return "c.json"


def _orphan_sidecar(folder: Path) -> str:
    (folder / "z.json").write_text("{}")
    return "z.json"


def _subfolder(folder: Path) -> str:
    _image(folder / "sub" / "d_original.png")
    return "sub"


def _fifo(folder: Path) -> str:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    _image(folder / "c_original.png")
    os.mkfifo(folder / "c_modified.png")
    return "c_modified.png"


def _bomb(folder: Path) -> str:
    _image(folder / "c_modified.png")
    (folder / "c_original.png").write_bytes(_png_bytes(100_000, 100_000, zlib.compress(b"")))
    return "c_original.png"


PAIR_CASES = [
    _corrupt,
    _zero_byte,
    _truncated,
    _missing_partner,
    _duplicate_partner,
    _size_mismatch,
    _non_image,
    _unpaired_image,
    _bad_sidecar,
    _orphan_sidecar,
    _subfolder,
    _fifo,
    _bomb,
]


# --- FolderPairs, folder mode -----------------------------------------------------------------------------------------


def test_folder_pairs_happy_path(tmp_path):
    _good_pairs(tmp_path)
    (tmp_path / ".DS_Store").write_bytes(b"\0junk")
    source = FolderPairs(tmp_path, domain="real")
    assert len(source) == 2 and source.skipped == []
    a, b = source
    assert a.meta["name"] == "a" and a.meta["edit"] == "red cup removed"
    assert a.meta["original_path"] == str(tmp_path / "a_original.png")
    assert a.meta["modified_path"] == str(tmp_path / "a_modified.png")
    assert b.meta["name"] == "b" and a.domain == b.domain == "real"
    for pair in (a, b):
        assert pair.original.mode == pair.modified.mode == "RGB"
        assert pair.original.size == pair.modified.size == SIZE
    with Image.open(tmp_path / "a_original.png") as expected:
        assert np.array_equal(np.asarray(a.original), np.asarray(expected.convert("RGB")))
    assert [p.meta["name"] for p in source.shard(1, 2)] == ["b"]


@pytest.mark.parametrize("make_bad", PAIR_CASES, ids=lambda f: f.__name__.strip("_"))
def test_folder_pairs_bad_input_raises_naming_the_file(tmp_path, make_bad):
    _good_pairs(tmp_path)
    name = make_bad(tmp_path)
    with _deadline(), pytest.raises(PairSourceError, match=re.escape(name)):
        FolderPairs(tmp_path)


@pytest.mark.parametrize("make_bad", PAIR_CASES, ids=lambda f: f.__name__.strip("_"))
def test_folder_pairs_bad_input_is_skipped_and_recorded(tmp_path, make_bad):
    _good_pairs(tmp_path)
    name = make_bad(tmp_path)
    with _deadline():
        source = FolderPairs(tmp_path, on_error="skip")
        assert [pair.meta["name"] for pair in source] == ["a", "b"]
    assert len(source.skipped) == 1
    path, reason = source.skipped[0]
    assert name in path and reason


def test_decompression_bomb_warning_range_is_bad_input(tmp_path, monkeypatch):
    _good_pairs(tmp_path)
    _image(tmp_path / "c_original.png", size=(64, 48))
    _image(tmp_path / "c_modified.png", size=(64, 48))
    # 64x48 lies between the limit and twice it, where Pillow only warns; the source must still refuse the file.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(PairSourceError, match="c_original.png"):
        FolderPairs(tmp_path)
    with pytest.warns(Image.DecompressionBombWarning):
        source = FolderPairs(tmp_path, on_error="skip")
    assert [pair.meta["name"] for pair in source] == ["a", "b"]
    assert len(source.skipped) == 1 and "c_original.png" in source.skipped[0][0]


def _undecodable(folder: Path) -> None:
    """A PNG whose chunks and checksums are fine (so ``verify`` passes) but whose pixel data is not zlib."""
    _image(folder / "c_original.png")
    (folder / "c_modified.png").write_bytes(_png_bytes(*SIZE, b"definitely not a zlib stream"))


def test_decode_time_failure_raises_naming_the_file(tmp_path):
    _good_pairs(tmp_path)
    _undecodable(tmp_path)
    source = FolderPairs(tmp_path)
    assert len(source) == 3
    with pytest.raises(PairSourceError, match="c_modified.png"):
        source[2]


def test_decode_time_failure_in_skip_mode_moves_on_deterministically(tmp_path):
    _good_pairs(tmp_path)
    _undecodable(tmp_path)
    source = FolderPairs(tmp_path, on_error="skip")
    assert source[2].meta["name"] == "a"  # wraps around to the next good pair
    assert source[2].meta["name"] == "a"
    assert len(source.skipped) == 1 and "c_modified.png" in source.skipped[0][0]
    assert [p.meta["name"] for p in source] == ["a", "b", "a"]


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_empty_or_missing_folder_always_raises(tmp_path, on_error):
    with pytest.raises(PairSourceError, match=re.escape(str(tmp_path))):
        FolderPairs(tmp_path, on_error=on_error)
    (tmp_path / ".hidden_original.png").write_bytes(b"")
    with pytest.raises(PairSourceError, match=re.escape(str(tmp_path))):
        FolderImages(tmp_path, on_error=on_error)
    (tmp_path / "notes.txt").write_text("only a stray file")
    with pytest.raises(PairSourceError, match=re.escape(str(tmp_path))) as error:
        FolderPairs(tmp_path, on_error=on_error)
    assert ("notes.txt" if on_error == "raise" else "1 bad inputs skipped") in str(error.value)
    with pytest.raises(PairSourceError, match="nope"):
        FolderPairs(tmp_path / "nope", on_error=on_error)
    with pytest.raises(PairSourceError, match="nope"):
        FolderImages(tmp_path / "nope", on_error=on_error)


def test_invalid_on_error_names_the_argument(tmp_path):
    _good_pairs(tmp_path)
    with pytest.raises(ValueError, match="on_error"):
        FolderPairs(tmp_path, on_error="ignore")
    with pytest.raises(ValueError, match="domain"):
        FolderImages(tmp_path, domain="")


# --- FolderPairs, manifest mode ---------------------------------------------------------------------------------------


def _manifest(path: Path, lines: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + "\n")
    return path


def _good_manifest_files(root: Path) -> list:
    _image(root / "imgs" / "x_original.png", seed=1)
    _image(root / "imgs" / "x_modified.png", seed=2)
    _image(root / "single.png", seed=3)
    return [
        {"original": "imgs/x_original.png", "modified": "imgs/x_modified.png", "meta": {"edit": "hat"}},
        "",
        {"original": "single.png", "modified": None, "domain": "clevr"},
    ]


@pytest.mark.parametrize("as_dir", [False, True], ids=["file", "dir"])
def test_manifest_happy_path(tmp_path, as_dir):
    name = "manifest.jsonl" if as_dir else "pairs.jsonl"
    manifest = _manifest(tmp_path / name, _good_manifest_files(tmp_path))
    source = FolderPairs(tmp_path if as_dir else manifest)
    assert len(source) == 2 and source.skipped == []
    x, single = source
    assert x.meta["name"] == "x" and x.meta["edit"] == "hat" and x.domain == "real"
    assert x.meta["original_path"] == str((tmp_path / "imgs" / "x_original.png").resolve())
    assert x.modified is not None and x.modified.size == x.original.size == SIZE
    assert single.modified is None and single.meta["modified_path"] is None and single.domain == "clevr"
    assert single.meta["manifest_line"] == 3


def _escape_dotdot(root: Path) -> tuple[dict, str]:
    _image(root.parent / "outside.png")
    return {"original": "../outside.png"}, "outside"


def _escape_absolute(root: Path) -> tuple[dict, str]:
    target = _image(root / "inside.png")
    return {"original": str(target.resolve())}, "absolute"


def _escape_symlink(root: Path) -> tuple[dict, str]:
    outside = _image(root.parent / "outside.png")
    (root / "link.png").symlink_to(outside)
    return {"original": "link.png"}, "outside"


def _missing_target(root: Path) -> tuple[dict, str]:
    return {"original": "imgs/x_original.png", "modified": "imgs/gone.png"}, "gone.png"


def _corrupt_target(root: Path) -> tuple[dict, str]:
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return {"original": "bad.png"}, "bad.png"


def _not_json(root: Path) -> tuple[str, str]:
    return "{original: oops", "manifest.jsonl:4"


def _not_object(root: Path) -> tuple[list, str]:
    return ["x.png"], "manifest.jsonl:4"


def _no_original(root: Path) -> tuple[dict, str]:
    return {"modified": "single.png"}, "manifest.jsonl:4"


MANIFEST_CASES = [
    _escape_dotdot,
    _escape_absolute,
    _escape_symlink,
    _missing_target,
    _corrupt_target,
    _not_json,
    _not_object,
    _no_original,
]


@pytest.mark.parametrize("make_bad", MANIFEST_CASES, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_manifest_bad_entry(tmp_path, make_bad, on_error):
    root = tmp_path / "root"
    lines = _good_manifest_files(root)
    bad, expected = make_bad(root)
    manifest = _manifest(root / "manifest.jsonl", [*lines, bad])
    if on_error == "raise":
        with pytest.raises(PairSourceError, match=expected) as error:
            FolderPairs(manifest)
        assert "manifest.jsonl:4" in str(error.value) or expected in str(error.value)
        return
    source = FolderPairs(root, on_error="skip")
    assert [pair.meta["name"] for pair in source] == ["x", "single"]
    assert len(source.skipped) == 1
    where, reason = source.skipped[0]
    assert expected in where + reason and "manifest.jsonl:4" in where + reason


def test_manifest_that_is_a_fifo_does_not_hang(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(tmp_path / "manifest.jsonl")
    with _deadline(), pytest.raises(PairSourceError, match="manifest.jsonl"):
        FolderPairs(tmp_path, on_error="skip")


# --- FolderImages -----------------------------------------------------------------------------------------------------


def test_folder_images_happy_path(tmp_path):
    _image(tmp_path / "b.png", seed=1)
    _image(tmp_path / "a.JPEG", seed=2, fmt="JPEG")
    _image(tmp_path / "c.bmp", seed=3)
    (tmp_path / "a.json").write_text(json.dumps({"caption": "a dog"}))
    (tmp_path / ".hidden.txt").write_text("ignored")
    (tmp_path / "manifest.jsonl").write_text("")
    source = FolderImages(tmp_path, domain="real")
    assert [p.meta["name"] for p in source] == ["a.JPEG", "b.png", "c.bmp"]
    first = source[0]
    assert first.modified is None and first.meta["modified_path"] is None and first.meta["caption"] == "a dog"
    assert first.original.mode == "RGB" and first.original.size == SIZE and first.domain == "real"


def _bad_image_sidecar(folder: Path) -> str:
    _image(folder / "d.png")
    (folder / "d.json").write_text("[1, 2")
    return "d.json"


IMAGE_CASES = [
    _corrupt,
    _zero_byte,
    _truncated,
    _non_image,
    _bad_image_sidecar,
    _orphan_sidecar,
    _subfolder,
    _fifo,
    _bomb,
]


def _single_images(folder: Path) -> None:
    _image(folder / "a.png", seed=1)
    _image(folder / "b.png", seed=2)


@pytest.mark.parametrize("make_bad", IMAGE_CASES, ids=lambda f: f.__name__.strip("_"))
def test_folder_images_bad_input(tmp_path, make_bad):
    _single_images(tmp_path)
    name = make_bad(tmp_path)
    with _deadline(), pytest.raises(PairSourceError, match=re.escape(name)):
        FolderImages(tmp_path)
    with _deadline():
        source = FolderImages(tmp_path, on_error="skip")
        names = [pair.meta["name"] for pair in source]
    assert len(source.skipped) == 1 and name in source.skipped[0][0]
    # The good images come through (plus a bad case's healthy c_* helper image); the bad file and its image do not.
    assert names[:2] == ["a.png", "b.png"] and set(names[2:]) <= {"c_original.png", "c_modified.png"}
