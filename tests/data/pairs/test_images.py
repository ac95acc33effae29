"""Pictures of every depth and transparency reach a game as the 8-bit RGB they show: real PNG (and WebP) files written
by Pillow into a folder, read back through FolderImages and FolderPairs."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vzero.data.pairs.base import BACKGROUND, ImagePair, to_rgb
from vzero.data.pairs.folder import FolderImages, FolderPairs

W, H = 64, 16
WHITE = np.array(BACKGROUND, dtype=np.uint8)
assert BACKGROUND == (255, 255, 255)  # the documented background; the expectations below spell it out


def as_mode(values: np.ndarray, mode: str) -> Image.Image:
    """A 16-bit picture in one of Pillow's 16-bit modes (``convert`` between them clips at 255)."""
    order = {"I;16B": ">u2", "I;16L": "<u2"}.get(mode, "=u2")
    return Image.frombytes(mode, (values.shape[1], values.shape[0]), values.astype(order).tobytes())


def ramp16() -> np.ndarray:
    """A 16-bit horizontal ramp over the whole 0-65535 range: [H, W] uint16."""
    return np.tile(np.linspace(0, 65535, W).round().astype(np.uint16), (H, 1))


def through_sources(tmp_path: Path, image: Image.Image, ext: str = "png", **save) -> list[np.ndarray]:
    """Save ``image`` as a file and read it back through both folder sources: [H, W, 3] uint8 arrays."""
    single, pairs = tmp_path / "single", tmp_path / "pairs"
    single.mkdir(parents=True)
    pairs.mkdir(parents=True)
    image.save(single / f"x.{ext}", **save)
    image.save(pairs / f"x_original.{ext}", **save)
    image.save(pairs / f"x_modified.{ext}", **save)
    out = []
    for pair in (FolderImages(single)[0], FolderPairs(pairs)[0]):
        for picture in (pair.original, pair.modified):
            if picture is None:
                continue
            assert picture.mode == "RGB" and picture.size == image.size
            out.append(np.asarray(picture))
    return out


# --- high bit depth ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped_to_white(tmp_path, mode):
    values = ramp16()
    image = as_mode(values, mode)
    expected = np.rint(values / 257.0).astype(np.uint8)  # 0-65535 onto 0-255
    for rgb in through_sources(tmp_path, image):
        assert (rgb == 255).all(-1).mean() < 0.05  # Pillow's convert("RGB") alone gives 99.5% white
        np.testing.assert_array_equal(rgb, np.repeat(expected[..., None], 3, -1))


def test_a_dark_16_bit_png_stays_dark(tmp_path):
    values = np.full((H, W), 1000, dtype=np.uint16)  # 1.5% of full scale
    (rgb,) = {a.tobytes(): a for a in through_sources(tmp_path, Image.fromarray(values))}.values()
    assert (rgb == 4).all()  # round(1000 / 257)


def _png16(path: Path, pixels: np.ndarray, color_type: int) -> None:
    """A 16-bit-per-sample PNG (colour type 2: RGB, 6: RGBA), which Pillow can read but not write: [H, W, C] uint16."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def test_a_16_bit_rgb_png_keeps_its_colours(tmp_path):
    ramp = ramp16()
    pixels = np.stack([ramp, ramp[:, ::-1], np.full_like(ramp, 32768)], -1)  # [H, W, 3]
    _png16(tmp_path / "x.png", pixels, color_type=2)
    rgb = np.asarray(FolderImages(tmp_path)[0].original).astype(int)
    assert np.abs(rgb - pixels / 257.0).max() <= 1  # Pillow keeps each sample's high byte


def test_a_16_bit_rgba_png_is_scaled_and_composited(tmp_path):
    ramp = ramp16()
    alpha = np.zeros_like(ramp)
    alpha[:, W // 2 :] = 65535
    pixels = np.stack([ramp, np.zeros_like(ramp), np.full_like(ramp, 65535), alpha], -1)  # [H, W, 4]
    _png16(tmp_path / "x.png", pixels, color_type=6)
    rgb = np.asarray(FolderImages(tmp_path)[0].original).astype(int)
    assert (rgb[:, : W // 2] == 255).all()
    assert np.abs(rgb[:, W // 2 :] - pixels[:, W // 2 :, :3] / 257.0).max() <= 1


def test_int_and_float_pictures_are_scaled_by_their_modes_range():
    ramp = ramp16().astype(np.float64)
    expected = np.rint(ramp / 257.0).astype(np.uint8)
    as_int = to_rgb(Image.fromarray(ramp.astype(np.int32), "I"))
    as_float = to_rgb(Image.fromarray((ramp / 65535).astype(np.float32), "F"))
    np.testing.assert_array_equal(np.asarray(as_int)[..., 0], expected)
    assert np.abs(np.asarray(as_float)[..., 0].astype(int) - expected).max() <= 1
    for mode in ("I;16L", "I;16N"):  # Pillow cannot write these to a file
        np.testing.assert_array_equal(np.asarray(to_rgb(as_mode(ramp16(), mode)))[..., 0], expected)


def test_values_outside_the_modes_range_are_stretched_from_their_own_extremes():
    values = np.tile(np.linspace(-1e6, 3e6, W), (H, 1))  # [H, W]
    as_int = np.asarray(to_rgb(Image.fromarray(values.astype(np.int32), "I")))[..., 0]
    as_float = np.asarray(to_rgb(Image.fromarray(values.astype(np.float32), "F")))[..., 0]
    for gray in (as_int, as_float):
        assert gray[0, 0] == 0 and gray[0, -1] == 255 and (np.diff(gray[0].astype(int)) >= 0).all()
    nan = np.full((H, W), np.nan, dtype=np.float32)
    nan[:, 1] = 0.5
    assert np.asarray(to_rgb(Image.fromarray(nan, "F")))[0, 0, 0] == 0  # NaN is black


# --- transparency -----------------------------------------------------------------------------------------------------


def _hidden_red(mode: str = "RGBA") -> Image.Image:
    """Left half: red stored under alpha 0; right half: opaque blue; last column: blue at alpha 128."""
    pixels = np.zeros((H, W, 4), dtype=np.uint8)
    pixels[:, : W // 2] = (255, 0, 0, 0)
    pixels[:, W // 2 :] = (0, 0, 255, 255)
    pixels[:, -1] = (0, 0, 255, 128)
    return Image.fromarray(pixels, "RGBA").convert(mode)


@pytest.mark.parametrize(("ext", "save"), [("png", {}), ("webp", {"lossless": True, "exact": True})])
def test_an_rgba_picture_is_composited_on_white_not_shown_with_its_hidden_colours(tmp_path, ext, save):
    for rgb in through_sources(tmp_path, _hidden_red(), ext, **save):
        assert (rgb[:, : W // 2] == WHITE).all()  # not the red hidden under alpha 0
        assert (rgb[:, W // 2 : -1] == (0, 0, 255)).all()
        np.testing.assert_allclose(rgb[:, -1], [[127, 127, 255]] * H, atol=1)  # half blue over white


def test_an_la_picture_is_composited_on_white(tmp_path):
    pixels = np.zeros((H, W, 2), dtype=np.uint8)
    pixels[:, : W // 2] = (0, 0)  # black under alpha 0
    pixels[:, W // 2 :] = (40, 255)
    for rgb in through_sources(tmp_path, Image.fromarray(pixels, "LA")):
        assert (rgb[:, : W // 2] == 255).all() and (rgb[:, W // 2 :] == 40).all()


def test_a_palette_picture_with_a_transparent_entry_is_composited_on_white(tmp_path):
    image = Image.new("P", (W, H), 0)
    image.putpalette([255, 0, 0, 0, 128, 0])  # entry 0 red (transparent), entry 1 green
    image.paste(1, (W // 2, 0, W, H))
    for rgb in through_sources(tmp_path, image, transparency=0):
        assert (rgb[:, : W // 2] == 255).all() and (rgb[:, W // 2 :] == (0, 128, 0)).all()


@pytest.mark.parametrize(("mode", "key", "other"), [("RGB", (1, 2, 3), (9, 9, 9)), ("L", 7, 90)])
def test_a_colour_key_is_transparent(tmp_path, mode, key, other):
    image = Image.new(mode, (W, H), key)
    image.paste(other, (W // 2, 0, W, H))
    expected = other if mode == "RGB" else (other,) * 3
    for rgb in through_sources(tmp_path, image, transparency=key):
        assert (rgb[:, : W // 2] == 255).all() and (rgb[:, W // 2 :] == expected).all()


def test_a_16_bit_png_with_a_transparent_value_is_scaled_and_composited(tmp_path):
    values = np.full((H, W), 30000, dtype=np.uint16)
    values[:, : W // 2] = 0
    for rgb in through_sources(tmp_path, Image.fromarray(values), transparency=0):
        assert (rgb[:, : W // 2] == 255).all() and (rgb[:, W // 2 :] == 117).all()  # round(30000 / 257)


def test_opaque_pictures_are_unchanged(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    for rgb in through_sources(tmp_path, Image.fromarray(pixels)):
        np.testing.assert_array_equal(rgb, pixels)
    gray = pixels[..., 0]
    for rgb in through_sources(tmp_path / "gray", Image.fromarray(gray)):
        np.testing.assert_array_equal(rgb, np.repeat(gray[..., None], 3, -1))
    opaque = np.dstack([pixels, np.full((H, W), 255, np.uint8)])
    for rgb in through_sources(tmp_path / "rgba", Image.fromarray(opaque, "RGBA")):
        np.testing.assert_array_equal(rgb, pixels)


def test_every_pair_a_source_yields_is_8_bit_rgb():
    sixteen = Image.fromarray(ramp16())
    pair = ImagePair(sixteen, _hidden_red(), "real")
    assert pair.original.mode == pair.modified.mode == "RGB"
    assert (np.asarray(pair.modified)[:, : W // 2] == 255).all()
    rgb = Image.new("RGB", (W, H))
    assert ImagePair(rgb, None, "real").original is rgb  # already RGB: no copy
