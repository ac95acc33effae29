"""CLEVR-style pairs: determinism, sharding, the changed objects, scene validity and argument checks."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from PIL import Image

from vzero.data.pairs.clevr import (
    COLORS,
    MATERIALS,
    RADIUS,
    SHAPES,
    SIZES,
    ClevrPairs,
    describe_object,
    sample_scene,
)
from vzero.data.pairs.clevr_render import render_scene

SMALL = (160, 112)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _same(a, b) -> bool:
    return (
        a.meta == b.meta
        and a.original.tobytes() == b.original.tobytes()
        and a.modified.tobytes() == b.modified.tobytes()
    )


@pytest.fixture(scope="module")
def small() -> ClevrPairs:
    return ClevrPairs(n=12, seed=3, size=SMALL)


def test_constants():
    assert SHAPES == ("cube", "sphere", "cylinder")
    assert SIZES == ("small", "large")
    assert MATERIALS == ("rubber", "metal")
    assert COLORS["gray"] == (87, 87, 87) and COLORS["yellow"] == (255, 238, 51) and len(COLORS) == 8


def test_same_seed_and_index_give_the_same_pair_in_any_order(small):
    again = ClevrPairs(n=12, seed=3, size=SMALL)
    again[7]  # asking for other pairs first must not change pair 5
    assert _same(small[5], again[5])
    assert small[5].meta["index"] == 5 and small[5].meta["seed"] == 3


def test_different_index_or_seed_gives_a_different_pair(small):
    a, b = small[0], small[1]
    other = ClevrPairs(n=12, seed=4, size=SMALL)[0]
    for x in (b, other):
        assert x.meta["scene"] != a.meta["scene"]
        assert x.original.tobytes() != a.original.tobytes()


def test_shards_are_disjoint_interleaved_views(small):
    world = 3
    shards = [small.shard(r, world) for r in range(world)]
    seen = [p.meta["index"] for s in shards for p in s]
    assert sorted(seen) == list(range(len(small)))
    for r, k in [(0, 0), (1, 2), (2, 3)]:
        assert _same(shards[r][k], small[r + k * world])


def test_image_mode_size_and_domain(small):
    pair = small[2]
    assert pair.domain == "clevr"
    for image in (pair.original, pair.modified):
        assert image.mode == "RGB" and image.size == SMALL
    assert render_scene(pair.meta["scene"], (96, 64)).size == (96, 64)


def test_meta_is_plain_json(small):
    meta = small[4].meta
    assert json.loads(json.dumps(meta)) == meta
    assert set(meta) == {"index", "seed", "scene", "modified_scene", "changes", "description"}
    obj = meta["scene"]["objects"][0]
    assert set(obj) == {"shape", "size", "material", "color", "position", "rotation", "pixel"}
    assert all(isinstance(v, int) for v in obj["pixel"]) and all(isinstance(v, float) for v in obj["position"])


def test_modified_scene_changes_colour_and_shape_of_exactly_n_objects(small):
    for pair in small:
        scene, modified, changes = pair.meta["scene"], pair.meta["modified_scene"], pair.meta["changes"]
        assert len(changes) == 2 and len({c["index"] for c in changes}) == 2
        assert modified["camera"] == scene["camera"] and modified["light"] == scene["light"]
        assert len(modified["objects"]) == len(scene["objects"])
        changed = {c["index"]: c for c in changes}
        for k, (old, new) in enumerate(zip(scene["objects"], modified["objects"])):
            keep = {"size", "material", "position", "rotation", "pixel"}
            assert {f: old[f] for f in keep} == {f: new[f] for f in keep}
            if k in changed:
                c = changed[k]
                assert c["from"] == {"color": old["color"], "shape": old["shape"]}
                assert c["to"] == {"color": new["color"], "shape": new["shape"]}
                assert new["color"] != old["color"] and new["shape"] != old["shape"]
            else:
                assert new == old


def test_n_changes_is_respected():
    pair = ClevrPairs(n=1, seed=1, size=SMALL, n_objects=(3, 3), n_changes=3)[0]
    assert len(pair.meta["changes"]) == 3 and len(pair.meta["scene"]["objects"]) == 3


def test_images_differ_near_the_changed_objects_only():
    size = (240, 160)
    source = ClevrPairs(n=4, seed=0, size=size)
    yy, xx = np.mgrid[: size[1], : size[0]]
    for pair in source:
        diff = np.abs(_pixels(pair.original) - _pixels(pair.modified)).sum(2) > 24
        near = np.zeros(diff.shape, bool)
        for change in pair.meta["changes"]:
            u, v = pair.meta["scene"]["objects"][change["index"]]["pixel"]
            assert diff[max(0, v - 3) : v + 4, max(0, u - 3) : u + 4].any(), "no change at a changed object"
            # The object, its shadow and its contact shade stay within a quarter of the width.
            near |= (xx - u) ** 2 + (yy - v) ** 2 < (0.25 * size[0]) ** 2
        assert diff[near].any()
        assert diff[~near].mean() < 0.005


def test_scenes_are_valid():
    size = SMALL
    for i in range(60):
        scene = sample_scene(np.random.default_rng([7, i]), (4, 6), size)
        objects = scene["objects"]
        assert 4 <= len(objects) <= 6
        for obj in objects:
            assert obj["shape"] in SHAPES and obj["size"] in SIZES
            assert obj["material"] in MATERIALS and obj["color"] in COLORS
            assert 0 <= obj["pixel"][0] < size[0] and 0 <= obj["pixel"][1] < size[1]
            assert 0 <= obj["rotation"] < 360
        for a, b in itertools.combinations(objects, 2):
            assert math.dist(a["position"], b["position"]) >= RADIUS[a["size"]] + RADIUS[b["size"]]
        assert [o["pixel"][0] for o in objects] == sorted(o["pixel"][0] for o in objects)
    assert len(sample_scene(np.random.default_rng(0), 3)["objects"]) == 3


def test_descriptions(small):
    obj = {"shape": "cube", "size": "large", "material": "metal", "color": "red"}
    assert describe_object(obj) == "a large red metal cube"
    meta = small[0].meta
    text = meta["description"]
    assert text[0].isupper() and text.endswith(".")
    assert text.lower().rstrip(".") == ", ".join(describe_object(o) for o in meta["scene"]["objects"])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": -1}, "n"),
        ({"seed": -2}, "seed"),
        ({"size": (20, 20)}, "size"),
        ({"size": (100,)}, "size"),
        ({"n_objects": (3, 2)}, "n_objects"),
        ({"n_objects": (0, 2)}, "n_objects"),
        ({"n_changes": 0}, "n_changes"),
        ({"n_changes": 5}, "n_changes"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name} "):
        ClevrPairs(**kwargs)
