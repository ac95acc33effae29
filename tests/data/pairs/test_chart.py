import json

import numpy as np
import pytest

from vzero.data.pairs.chart import KINDS, ChartPairs

SIZE = (240, 160)  # smaller than the default keeps the suite fast; layout scales with size


def _same(a, b) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b))


def test_pair_is_a_pure_function_of_seed_and_index():
    first, again = ChartPairs(n=5, seed=7, size=SIZE)[3], ChartPairs(n=50, seed=7, size=SIZE)[3]
    assert _same(first.original, again.original) and _same(first.modified, again.modified)
    assert first.meta == again.meta
    assert first.meta["index"] == 3 and first.meta["seed"] == 7
    other = ChartPairs(n=5, seed=8, size=SIZE)[3]
    assert other.meta["table"] != first.meta["table"]


def test_modified_table_swaps_two_distinct_values_of_one_series():
    source = ChartPairs(n=15, seed=2, size=SIZE)
    for pair in source:
        meta = pair.meta
        table, modified, swap = meta["table"], meta["modified_table"], meta["swap"]
        assert pair.domain == "chart" and meta["chart"] in KINDS
        assert modified["title"] == table["title"] and modified["categories"] == table["categories"]
        assert list(modified["series"]) == list(table["series"])
        changed = [name for name in table["series"] if table["series"][name] != modified["series"][name]]
        assert changed == [swap["series"]]
        before, after = table["series"][swap["series"]], modified["series"][swap["series"]]
        diff = [k for k in range(len(before)) if before[k] != after[k]]
        assert len(diff) == 2
        a, b = diff
        assert before[a] == after[b] and before[b] == after[a] and before[a] != before[b]
        assert sorted(swap["categories"]) == sorted([table["categories"][a], table["categories"][b]])
        assert 3 <= len(table["categories"]) <= 6 and 1 <= len(table["series"]) <= 3
        if meta["chart"] == "pie":
            assert len(table["series"]) == 1
        assert not _same(pair.original, pair.modified)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_renders_rgb_at_the_requested_size(kind):
    pair = ChartPairs(n=2, seed=0, size=SIZE, kinds=[kind])[1]
    assert pair.meta["chart"] == kind
    for image in (pair.original, pair.modified):
        assert image.mode == "RGB" and image.size == SIZE
        assert np.asarray(image).std() > 0  # something was drawn
    assert not _same(pair.original, pair.modified)


def test_shards_are_disjoint_and_match_the_source():
    source = ChartPairs(n=5, seed=4, size=SIZE, kinds=["bar"])
    shards = [source.shard(rank, 2) for rank in range(2)]
    indices = [[pair.meta["index"] for pair in shard] for shard in shards]
    assert indices == [[0, 2, 4], [1, 3]]
    assert _same(shards[1][0].original, source[1].original)


def test_meta_is_json_serialisable():
    meta = ChartPairs(n=3, seed=5, size=SIZE)[2].meta
    assert json.loads(json.dumps(meta)) == meta
    values = [v for series in meta["table"]["series"].values() for v in series]
    assert all(type(v) in (int, float) for v in values)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"n": 0}, "n"),
        ({"n": 2.5}, "n"),
        ({"seed": -1}, "seed"),
        ({"seed": "0"}, "seed"),
        ({"size": (480,)}, "size"),
        ({"size": (10, 320)}, "size"),
        ({"size": (480.0, 320)}, "size"),
        ({"kinds": []}, "kinds"),
        ({"kinds": "bar"}, "kinds"),
        ({"kinds": ["bar", "scatter"]}, "kinds"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=rf"^{argument} "):
        ChartPairs(**kwargs)
