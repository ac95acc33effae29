"""The ray caster that draws CLEVR-style scenes: camera, solids, shading and shadows.

Rendering is numpy ray casting inside each object's projected box (2x2 samples per pixel), a key light with Lambert +
Blinn-Phong (plus a studio reflection for metal), and blurred projected shadows on the ground. Objects are shaded in a
gamma-2 space (one square root back to sRGB), then composited in sRGB. A scene is the plain dict of
:func:`vzero.data.pairs.clevr.sample_scene`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLORS: dict[str, tuple[int, int, int]] = {
    "gray": (87, 87, 87),
    "red": (173, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 105, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}
RADIUS = {"small": 0.35, "large": 0.7}
"""Object radius in world units, as in CLEVR. It bounds every shape's ground footprint, the cube's diagonal included,
so swapping an object's shape can never create an overlap."""

_CUBE_HALF = 1 / math.sqrt(2)  # cube half-side per unit radius (CLEVR's choice): its footprint diagonal is the radius


def _height(shape: str, r: float) -> float:
    return 2 * r * _CUBE_HALF if shape == "cube" else 2 * r


class Camera:
    """Pinhole camera for a scene's camera dict at one image size."""

    def __init__(self, camera: dict[str, Any], size: tuple[int, int]) -> None:
        self.pos = np.asarray(camera["position"], np.float64)
        fwd = np.asarray(camera["target"], np.float64) - self.pos
        self.fwd = fwd / np.linalg.norm(fwd)
        right = np.cross(self.fwd, [0.0, 0.0, 1.0])
        self.right = right / np.linalg.norm(right)
        self.up = np.cross(self.right, self.fwd)
        # ``fov`` spans the width of the largest 3:2 frame inside the image, so any aspect ratio sees the whole scene.
        self.frame = min(size[0], 1.5 * size[1])
        self.focal = self.frame / 2 / math.tan(math.radians(camera["fov"]) / 2)
        self.cx, self.cy = size[0] / 2, size[1] / 2

    def project(self, pts: np.ndarray) -> np.ndarray:
        """World points ``(n, 3)`` to pixel coordinates ``(n, 2)``."""
        p = np.asarray(pts, np.float64) - self.pos
        z = p @ self.fwd
        return np.stack([self.cx + self.focal * (p @ self.right) / z, self.cy - self.focal * (p @ self.up) / z], 1)

    def depth(self, pt: Any) -> float:
        return float((np.asarray(pt) - self.pos) @ self.fwd)

    def rays(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, ...]:
        """Unit ray directions (three float32 ``(len(v), len(u))`` arrays) through pixel columns ``u``, rows ``v``."""
        u = (np.asarray(u, np.float32) - self.cx)[None, :]
        v = (np.asarray(v, np.float32) - self.cy)[:, None]
        f, r, up = (np.float32(a) for a in (self.fwd * self.focal, self.right, self.up))
        d = [f[k] + u * r[k] - v * up[k] for k in range(3)]
        inv = 1 / np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
        return d[0] * inv, d[1] * inv, d[2] * inv


def pixel_box(cam: Camera, obj: dict[str, Any], height: float) -> tuple[float, float, float, float]:
    """Image box of the object's footprint square extruded to ``height``."""
    r, (x, y) = RADIUS[obj["size"]], obj["position"]
    uv = cam.project([[x + sx * r, y + sy * r, z] for sx in (-1, 1) for sy in (-1, 1) for z in (0.0, height)])
    return float(uv[:, 0].min()), float(uv[:, 1].min()), float(uv[:, 0].max()), float(uv[:, 1].max())


# Ray casts: eye ``o``, unit directions ``d``; each returns (hit mask, distance, normal x, y, z) over the ray grid.


def _hit_sphere(o: np.ndarray, d: tuple[np.ndarray, ...], c: Any, r: float) -> tuple[np.ndarray, ...]:
    ox, oy, oz = (np.float32(o[k] - c[k]) for k in range(3))
    b = d[0] * ox + d[1] * oy + d[2] * oz
    disc = b * b - np.float32(ox * ox + oy * oy + oz * oz - r * r)
    t = -b - np.sqrt(np.maximum(disc, 0))
    inv = np.float32(1 / r)
    return disc > 0, t, (ox + t * d[0]) * inv, (oy + t * d[1]) * inv, (oz + t * d[2]) * inv


def _hit_cylinder(o: np.ndarray, d: tuple[np.ndarray, ...], c: Any, r: float, h: float) -> tuple[np.ndarray, ...]:
    ox, oy, oz = (np.float32(o[k] - c[k]) for k in range(3))  # c is the base centre
    # Rays point down from above the top, so whichever of top cap and side a ray meets, it meets first.
    t_top = (np.float32(h) - oz) / d[2]
    tx, ty = ox + t_top * d[0], oy + t_top * d[1]
    top = tx * tx + ty * ty <= r * r
    a, b = d[0] * d[0] + d[1] * d[1], d[0] * ox + d[1] * oy
    disc = b * b - a * np.float32(ox * ox + oy * oy - r * r)
    t_side = (-b - np.sqrt(np.maximum(disc, 0))) / np.maximum(a, 1e-12)
    z = oz + t_side * d[2]
    t = np.where(top, t_top, t_side)
    # A slightly rounded rim, as on CLEVR's model, gives metal rims a thin highlight.
    px, py, pz = ox + t * d[0], oy + t * d[1], oz + t * d[2]
    rho = np.sqrt(px * px + py * py) + np.float32(1e-6)
    band = np.float32(1 / (0.08 * r))
    wr = np.clip((rho - np.float32(0.92 * r)) * band, 0, 1) / rho
    wz = np.clip((pz - np.float32(h - 0.08 * r)) * band, 0, 1)
    inv = 1 / np.sqrt((px * px + py * py) * wr * wr + wz * wz + np.float32(1e-12))
    return top | ((disc > 0) & (z >= 0) & (z <= h)), t, px * wr * inv, py * wr * inv, wz * inv


def _hit_cube(o: np.ndarray, d: tuple[np.ndarray, ...], c: Any, a: float, rot: float) -> tuple[np.ndarray, ...]:
    cs, sn = np.float32(math.cos(rot)), np.float32(math.sin(rot))
    ox, oy, oz = (float(o[k] - c[k]) for k in range(3))  # c is the cube's centre
    # Slab test in the cube's own frame (world turned by -rot about the vertical).
    lo, ld = [cs * ox + sn * oy, -sn * ox + cs * oy, oz], [cs * d[0] + sn * d[1], -sn * d[0] + cs * d[1], d[2]]
    near, far = np.float32(-np.inf), np.float32(np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(3):
            t1, t2 = (-a - lo[k]) / ld[k], (a - lo[k]) / ld[k]
            near, far = np.maximum(near, np.minimum(t1, t2)), np.minimum(far, np.maximum(t1, t2))
    hit = (near < far) & (near > 0)
    t = np.where(hit, near, 0)
    # CLEVR's cubes have rounded edges: bend the normal toward the edge within a thin band, which also catches light.
    inner, band = np.float32(a * 0.9), np.float32(1 / (a * 0.1))
    n = [np.copysign(np.maximum(np.abs(lo[k] + t * ld[k]) - inner, 0) * band, lo[k] + t * ld[k]) for k in range(3)]
    inv = 1 / np.sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2] + np.float32(1e-12))
    return hit, t, (cs * n[0] - sn * n[1]) * inv, (sn * n[0] + cs * n[1]) * inv, n[2] * inv


def _circle(x: float, y: float, r: float, ang: np.ndarray, z: float) -> np.ndarray:
    return np.stack([x + r * np.cos(ang), y + r * np.sin(ang), np.full(len(ang), z)], 1)


def _halve(a: np.ndarray) -> np.ndarray:
    """Average 2x2 blocks over the last two axes (strided sums are faster than a reshaped mean)."""
    return (a[..., 0::2, 0::2] + a[..., 1::2, 0::2] + a[..., 0::2, 1::2] + a[..., 1::2, 1::2]) * np.float32(0.25)


class Renderer:
    """Renders object lists under one camera and light, sharing the ground and caching object patches."""

    def __init__(self, scene: dict[str, Any], size: tuple[int, int]) -> None:
        self.size = size
        self.cam = Camera(scene["camera"], size)
        self.eye = self.cam.pos
        light = np.asarray(scene["light"]["direction"], np.float64)
        self.light = light / np.linalg.norm(light)
        self.intensity = float(scene["light"].get("intensity", 1.0))
        self._patches: dict[tuple, tuple | None] = {}
        # The backdrop is smooth, so shade it on a 4x coarser grid and let a bilinear resize fill in.
        w, h = size
        sw, sh = max(2, w // 4), max(2, h // 4)
        d = self.cam.rays((np.arange(sw) + 0.5) * (w / sw), (np.arange(sh) + 0.5) * (h / sh))
        t = np.float32(-self.eye[2]) / np.minimum(d[2], np.float32(-1e-6))
        target = scene["camera"]["target"]
        gx, gy = (np.float32(self.eye[k] - target[k]) + t * d[k] for k in range(2))
        hx, hy, hz = (np.float32(self.light[k]) - d[k] for k in range(3))
        sheen = (hz / np.sqrt(hx * hx + hy * hy + hz * hz)) ** 24
        # A seamless backdrop: brightest around the scene centre, falling off smoothly, with a broad sheen.
        ground = (0.16 + 0.15 / (1 + (gx * gx + gy * gy) / 60)) * self.intensity + 0.05 * sheen
        small = Image.fromarray((np.sqrt(np.clip(ground, 0, 1)) * 255).astype(np.float32), "F")
        self.ground = np.asarray(small.resize(size, Image.Resampling.BILINEAR))  # sRGB, 0-255, one channel
        self.ground_rgb = np.repeat((self.ground + 0.5).astype(np.uint8)[:, :, None], 3, axis=2)

    def _shade(self, obj: dict[str, Any], *a: np.ndarray) -> np.ndarray:
        """Colour ``(3, m)`` of hit samples, given flat arrays of their ray directions, distances and normals."""
        d, t, n = a[:3], a[3], a[4:]
        lx, ly, lz = (np.float32(v) for v in self.light)
        ndl = np.maximum(n[0] * lx + n[1] * ly + n[2] * lz, 0) * np.float32(self.intensity)
        hx, hy, hz = lx - d[0], ly - d[1], lz - d[2]
        ndh = np.maximum(n[0] * hx + n[1] * hy + n[2] * hz, 0) / np.sqrt(hx * hx + hy * hy + hz * hz)
        base = (np.asarray(COLORS[obj["color"]], np.float32)[:, None] / 255) ** 2
        if obj["material"] == "rubber":
            # Matte: hemisphere ambient (backdrop above, floor below), diffuse, and a faint broad sheen.
            return base * (0.21 + 0.05 * n[2] + 0.8 * ndl) + (0.05 * ndh**10)[None]
        ndd = n[0] * d[0] + n[1] * d[1] + n[2] * d[2]
        rx, ry, rz = d[0] - 2 * ndd * n[0], d[1] - 2 * ndd * n[1], d[2] - 2 * ndd * n[2]
        # Metal mirrors a studio: the floor below (dark close by, as in the contact shadow), a brighter backdrop above
        # with the key light's glare, and a tall softbox at the light's bearing for the streaks on upright faces.
        # Perspective then grades even flat faces.
        reach = (np.float32(self.eye[2]) + t * d[2]) / np.maximum(-rz, 0.05)
        floor = 0.02 + 0.16 * (1 - np.exp(-1.2 * reach))
        up = 1 / (1 + np.exp(-15 * rz))
        rdl = np.maximum(rx * lx + ry * ly + rz * lz, 0)
        bearing = np.maximum(rx * lx + ry * ly, 0) / np.sqrt(rx * rx + ry * ry + 1e-6) / math.hypot(lx, ly)
        env = floor * (1 - up) + up * (0.6 + 0.5 * rz + 1.5 * rdl**10) + 0.8 * bearing**30 * (1 + rz)
        fresnel = 1 + (1 + ndd) ** 3  # grazing angles mirror more
        glare = 2.0 * ndh**120 + 0.2 * ndh**20
        # Metal reflects its own colour, brighter than its diffuse albedo.
        return base * (0.12 * ndl) + (env * fresnel)[None] * base**0.65 + glare[None]

    def _patch(self, obj: dict[str, Any]) -> tuple | None:
        """``(x0, y0, x1, y1, premultiplied colour, coverage)`` of one object, or None when it is off-image."""
        key = (obj["shape"], obj["size"], obj["material"], obj["color"], *obj["position"], obj["rotation"])
        if key not in self._patches:
            self._patches[key] = self._cast(obj)
        return self._patches[key]

    def _cast(self, obj: dict[str, Any]) -> tuple | None:
        r, (x, y) = RADIUS[obj["size"]], obj["position"]
        box = pixel_box(self.cam, obj, _height(obj["shape"], r))
        x0, y0 = max(0, int(box[0]) - 1), max(0, int(box[1]) - 1)
        x1, y1 = min(self.size[0], int(box[2]) + 2), min(self.size[1], int(box[3]) + 2)
        if x1 <= x0 or y1 <= y0:
            return None
        # Two by two samples per pixel, for anti-aliased edges.
        us = x0 + (np.arange((x1 - x0) * 2, dtype=np.float32) + 0.5) * np.float32(0.5)
        vs = y0 + (np.arange((y1 - y0) * 2, dtype=np.float32) + 0.5) * np.float32(0.5)
        d = self.cam.rays(us, vs)
        if obj["shape"] == "sphere":
            hit, t, *n = _hit_sphere(self.eye, d, (x, y, r), r)
        elif obj["shape"] == "cylinder":
            hit, t, *n = _hit_cylinder(self.eye, d, (x, y, 0.0), r, 2 * r)
        else:
            a = r * _CUBE_HALF
            hit, t, *n = _hit_cube(self.eye, d, (x, y, a), a, math.radians(obj["rotation"]))
        sel = np.flatnonzero(hit)
        if not len(sel):
            return None
        # Shade only the samples that hit: the box around a solid is often half empty.
        col = np.zeros((3, hit.size), np.float32)
        col[:, sel] = np.sqrt(np.clip(self._shade(obj, *(v.ravel()[sel] for v in (*d, t, *n))), 0, 1)) * 255
        rgb = np.ascontiguousarray(_halve(col.reshape(3, *hit.shape)).transpose(1, 2, 0))
        return x0, y0, x1, y1, rgb, _halve(hit.astype(np.float32))[:, :, None]

    def _shadow_factor(self, objects: list[dict[str, Any]]) -> tuple[int, int, np.ndarray]:
        """Ground darkening by cast shadows and contact occlusion: ``(x0, y0, factor)`` over the region it touches."""
        w, h = self.size
        lx, ly, lz = self.light
        ring = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        shadows: list[np.ndarray] = []
        contacts: list[np.ndarray] = []

        for obj in objects:
            r, (x, y) = RADIUS[obj["size"]], obj["position"]
            if obj["shape"] == "sphere":  # its shadow is cast by the great circle facing the light
                e1 = np.cross(self.light, [0.0, 0.0, 1.0])
                e1 /= np.linalg.norm(e1)
                rims = [[x, y, r] + r * (np.outer(np.cos(ring), e1) + np.outer(np.sin(ring), np.cross(self.light, e1)))]
            else:  # bottom and top outlines; a cube's corners lie on its footprint circle
                cube = math.radians(obj["rotation"] + 45) + np.arange(4) * math.pi / 2
                ang, top = (ring if obj["shape"] == "cylinder" else cube), _height(obj["shape"], r)
                rims = [_circle(x, y, r, ang, z) for z in (0.0, top)]
            # Cast the outlines along the light onto the ground; a prism's shadow is its two caps and its side quads.
            uv = [self.cam.project(p - np.outer(p[:, 2] / lz, [lx, ly, lz])) for p in rims]
            shadows += uv
            if len(uv) == 2:
                shadows += list(np.stack([uv[0], np.roll(uv[0], -1, 0), np.roll(uv[1], -1, 0), uv[1]], 1))
            contacts.append(self.cam.project(_circle(x, y, 1.05 * r, ring, 0.0)))
        blur = 2.5 * self.cam.frame / 480
        # Blur only around the polygons; the padding covers the kernel's reach, so the result is the same.
        pts, pad = np.concatenate(shadows + contacts), int(6 * blur) + 3
        x0, y0 = max(0, int(pts[:, 0].min()) - pad), max(0, int(pts[:, 1].min()) - pad)
        x1, y1 = max(x0 + 1, min(w, int(pts[:, 0].max()) + pad)), max(y0 + 1, min(h, int(pts[:, 1].max()) + pad))
        factor = np.ones((y1 - y0, x1 - x0), np.float32)
        for polys, radius, strength in ((shadows, blur, 0.62), (contacts, 2 * blur, 0.35)):
            mask = Image.new("L", (x1 - x0, y1 - y0))
            draw = ImageDraw.Draw(mask)
            for uv in polys:
                draw.polygon([(u - x0, v - y0) for u, v in uv], fill=255)
            mask = mask.filter(ImageFilter.GaussianBlur(radius))
            factor *= 1 - np.asarray(mask, np.float32) * np.float32(strength / 255)
        return x0, y0, np.sqrt(factor)  # applied to sRGB values

    def render(self, objects: list[dict[str, Any]]) -> Image.Image:
        """The scene with these objects, as an RGB image."""
        out = self.ground_rgb.copy()
        if not objects:
            return Image.fromarray(out, "RGB")
        # Painter's order, far to near: with disjoint footprints, centre depth orders these solids' occlusions.
        order = sorted(objects, key=lambda o: -self.cam.depth([*o["position"], RADIUS[o["size"]]]))
        patches = [p for p in map(self._patch, order) if p is not None]
        sx, sy, factor = self._shadow_factor(objects)
        # Only the region the shadows and objects touch is recomposited; the rest is the cached ground.
        boxes = [p[:4] for p in patches] + [(sx, sy, sx + factor.shape[1], sy + factor.shape[0])]
        x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        img = np.repeat(self.ground[y0:y1, x0:x1, None], 3, axis=2)
        img[sy - y0 : sy - y0 + factor.shape[0], sx - x0 : sx - x0 + factor.shape[1]] *= factor[:, :, None]
        for px0, py0, px1, py1, rgb, alpha in patches:
            sub = img[py0 - y0 : py1 - y0, px0 - x0 : px1 - x0]
            sub *= 1 - alpha
            sub += rgb
        img += np.float32(0.5)
        out[y0:y1, x0:x1] = np.clip(img, 0, 255).astype(np.uint8)
        return Image.fromarray(out, "RGB")


def render_scene(scene: dict[str, Any], size: tuple[int, int] = (480, 320)) -> Image.Image:
    """Render one scene (as from :func:`sample_scene`) to an RGB image of ``size = (width, height)``."""
    return Renderer(scene, (int(size[0]), int(size[1]))).render(scene["objects"])
