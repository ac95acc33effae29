"""Procedural CLEVR-style pairs: a ray-cast scene of solids, and a copy with some objects' colour and shape changed.

Pair ``i`` is a pure function of ``(seed, i)``; camera, light, positions, sizes and materials are shared, so the two
pictures differ only around the changed objects. A scene is a plain dict (:func:`sample_scene`), drawn by
:mod:`vzero.data.pairs.clevr_render`.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from vzero.data.pairs.base import HELD_OUT_SEED, ImagePair, PairSource, is_int
from vzero.data.pairs.clevr_render import COLORS, RADIUS, Camera, Renderer, pixel_box

SHAPES = ("cube", "sphere", "cylinder")
SIZES = ("small", "large")
MATERIALS = ("rubber", "metal")
_AREA = 3.0  # object centres lie in [-_AREA, _AREA]^2
_GAP = 0.15  # minimum clearance between footprints
_MAX_OCCLUSION = 0.45  # largest share of a farther object's projected box that a nearer one's box may cover


def _area(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Area of the intersection of two boxes ``(x0, y0, x1, y1)``."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def sample_scene(
    rng: np.random.Generator, n_objects: int | tuple[int, int] = (4, 6), size: tuple[int, int] = (480, 320)
) -> dict[str, Any]:
    """A random scene: jittered camera and light, non-overlapping objects inside the image and not hidden.

    Args:
        rng: The only source of randomness.
        n_objects: An exact count or an inclusive ``(low, high)`` range.
        size: The image size ``(width, height)`` that the visibility checks and the objects' ``pixel`` refer to.

    Returns:
        ``{"objects": [...], "camera": {...}, "light": {...}}``, objects ordered left to right in the image.
    """
    lo, hi = (n_objects, n_objects) if isinstance(n_objects, (int, np.integer)) else n_objects
    margin = max(3.0, 0.02 * min(size[0], 1.5 * size[1]))
    for _ in range(1000):
        az, el = rng.uniform(0, 2 * math.pi), math.radians(rng.uniform(30, 40))
        dist = rng.uniform(10.5, 12.0)
        target = [float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.3, 0.3)), 0.0]
        eye = [target[0] + dist * math.cos(el) * math.cos(az), target[1] + dist * math.cos(el) * math.sin(az)]
        camera = {"position": [*eye, dist * math.sin(el)], "target": target, "fov": float(rng.uniform(47, 51))}
        # Key light from the camera's left and a little behind it, as in CLEVR: shadows fall right and away.
        l_az, l_el = az + math.radians(rng.uniform(-80, -30)), math.radians(rng.uniform(40, 60))
        direction = [math.cos(l_el) * math.cos(l_az), math.cos(l_el) * math.sin(l_az), math.sin(l_el)]
        light = {"direction": direction, "intensity": float(rng.uniform(0.9, 1.05))}
        cam = Camera(camera, size)
        objects: list[dict[str, Any]] = []
        boxes: list[tuple[tuple[float, ...], float]] = []
        for _ in range(int(rng.integers(lo, hi + 1))):
            names = [str(rng.choice(v)) for v in (SHAPES, SIZES, MATERIALS, list(COLORS))]
            obj: dict[str, Any] = dict(zip(("shape", "size", "material", "color"), names))
            obj["rotation"] = float(rng.uniform(0, 360))
            r = RADIUS[obj["size"]]
            for _ in range(50):
                x, y = (float(v) for v in rng.uniform(-_AREA, _AREA, 2))
                if any(math.dist((x, y), o["position"]) < r + RADIUS[o["size"]] + _GAP for o in objects):
                    continue
                obj["position"] = [x, y]
                # Checked with the tallest shape, so a shape swap keeps the object inside and visible.
                box = pixel_box(cam, obj, 2 * r)
                if min(box[:2]) < margin or box[2] > size[0] - margin or box[3] > size[1] - margin:
                    continue
                depth = cam.depth([x, y, r])
                hidden = (_area(box, b) / _area(*[box if depth > d else b] * 2) for b, d in boxes)
                if any(h > _MAX_OCCLUSION for h in hidden):
                    continue
                u, v = cam.project([[x, y, r]])[0]
                obj["pixel"] = [round(float(u)), round(float(v))]
                objects.append(obj)
                boxes.append((box, depth))
                break
            else:
                break  # crowded: start the scene again
        else:
            objects.sort(key=lambda o: o["pixel"][0])
            return {"objects": objects, "camera": camera, "light": light}
    raise RuntimeError(f"could not place {n_objects} objects in a {size} image")


def describe_object(obj: dict[str, Any]) -> str:
    """E.g. ``"a large red metal cube"``."""
    return f"a {obj['size']} {obj['color']} {obj['material']} {obj['shape']}"


def describe_scene(scene: dict[str, Any]) -> str:
    """All objects, left to right: ``"A large red metal cube, a small cyan rubber sphere."``."""
    text = ", ".join(describe_object(o) for o in scene["objects"])
    return text[:1].upper() + text[1:] + "."


class ClevrPairs(PairSource):
    """CLEVR-style pairs whose modified picture changes the colour and the shape of ``n_changes`` objects.

    Args:
        n: Number of pairs.
        seed: Pair ``i`` depends only on ``(seed, i)``.
        size: Image size ``(width, height)``.
        n_objects: Inclusive range of objects per scene.
        n_changes: Objects changed in the modified scene.
    """

    def __init__(
        self,
        n: int = 2000,
        seed: int = 0,
        size: tuple[int, int] = (480, 320),
        n_objects: tuple[int, int] = (4, 6),
        n_changes: int = 2,
    ) -> None:
        if not is_int(n) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        if not is_int(seed) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if not isinstance(size, (tuple, list)) or len(size) != 2 or not all(is_int(s) and s >= 32 for s in size):
            raise ValueError(f"size must be (width, height), two ints >= 32, got {size!r}")
        lo_hi = tuple(n_objects) if isinstance(n_objects, (tuple, list)) else ()
        if len(lo_hi) != 2 or not all(is_int(k) for k in lo_hi) or not 1 <= lo_hi[0] <= lo_hi[1] <= 8:
            raise ValueError(f"n_objects must be (low, high), ints with 1 <= low <= high <= 8, got {n_objects!r}")
        if not is_int(n_changes) or not 1 <= n_changes <= lo_hi[0]:
            raise ValueError(f"n_changes must be an int in [1, n_objects[0]={lo_hi[0]}], got {n_changes!r}")
        self.n, self.seed, self.n_changes = int(n), int(seed), int(n_changes)
        self.size, self.n_objects = (int(size[0]), int(size[1])), (int(lo_hi[0]), int(lo_hi[1]))

    def __len__(self) -> int:
        return self.n

    def held_out(self, n: int) -> ClevrPairs:
        return ClevrPairs(n, self.seed + HELD_OUT_SEED, self.size, self.n_objects, self.n_changes)

    def _get(self, index: int) -> ImagePair:
        rng = np.random.default_rng([self.seed, index])
        scene = sample_scene(rng, self.n_objects, self.size)
        modified = copy.deepcopy(scene)
        changes = []
        for k in sorted(int(k) for k in rng.choice(len(scene["objects"]), self.n_changes, replace=False)):
            obj = modified["objects"][k]
            color = [c for c in COLORS if c != obj["color"]][rng.integers(len(COLORS) - 1)]
            shape = [s for s in SHAPES if s != obj["shape"]][rng.integers(len(SHAPES) - 1)]
            old = {"color": obj["color"], "shape": obj["shape"]}
            changes.append({"index": k, "from": old, "to": {"color": color, "shape": shape}})
            obj["color"], obj["shape"] = color, shape
        renderer = Renderer(scene, self.size)  # shares the ground and the unchanged objects' patches
        original, changed = renderer.render(scene["objects"]), renderer.render(modified["objects"])
        meta = dict(index=index, seed=self.seed, scene=scene, modified_scene=modified, changes=changes)
        return ImagePair(original, changed, "clevr", {**meta, "description": describe_scene(scene)})
