"""The prompt store: the longest stored prefix per picture and side, never past its rules, within its budget."""

import torch

from vzero.model.prefix import PrefixStore

LAYERS, HEADS, DIM = 2, 3, 4


def states(ids: list[int]) -> torch.Tensor:
    """A batch's prompt states for one row whose every token's state is its id: [layers, 2, 1, heads, T, dim]."""
    return torch.tensor(ids, dtype=torch.float32)[None, None, None, None, :, None].expand(
        LAYERS, 2, 1, HEADS, len(ids), DIM
    )


class Pic:
    """A stand-in picture: the store only uses its identity."""


def test_the_longest_common_prefix_of_the_same_picture_and_side():
    store, a, b = PrefixStore(10**6), Pic(), Pic()
    with store.session():
        store.keep([[1, 2, 3, 4, 5]], [a], ["trained"], states([1, 2, 3, 4, 5]))
        store.keep([[1, 2, 3, 9, 9, 9]], [a], ["trained"], states([1, 2, 3, 9, 9, 9]))
        prompts = [[1, 2, 3, 4, 7, 8], [1, 2, 3, 9, 9, 9, 1], [1, 2, 3, 4, 7], [1, 2, 3, 4, 7], [1, 2, 6]]
        found = store.find(
            prompts, [a, a, b, a, a], ["trained", "trained", "trained", "reference", "trained"], [2, 2, 2, 2, 2]
        )
    assert found.lengths == [4, 6, 0, 0, 2]  # other picture and other side: nothing
    assert found.picture_rows == [2, 3]
    assert found.states[0][0, 1, 0, :, 0].tolist() == [1, 2, 3, 4]
    assert found.states[1].shape == (LAYERS, 2, HEADS, 6, DIM)
    assert sum(found.lengths) == 12
    assert store.bytes == 0  # let go when the session ended


def test_a_prefix_stops_before_the_last_token_and_must_cover_the_picture():
    store, a = PrefixStore(10**6), Pic()
    with store.session():
        store.keep([[1, 2, 3, 4]], [a], ["trained"], states([1, 2, 3, 4]))
        # The same prompt: all but its last token (whose logits start the decoding).
        assert store.find([[1, 2, 3, 4]], [a], ["trained"], [2]).lengths == [3]
        # A prefix that ends inside the picture (before index 3) is not used.
        assert store.find([[1, 2, 5, 6]], [a], ["trained"], [3]).lengths == [0]


def test_outside_a_session_or_with_no_budget_nothing_is_kept():
    a = Pic()
    store = PrefixStore(10**6)
    store.keep([[1, 2, 3]], [a], ["trained"], states([1, 2, 3]))
    assert store.bytes == 0 and store.find([[1, 2, 3, 4]], [a], ["trained"], [1]).lengths == [0]
    off = PrefixStore(0)
    with off.session():
        off.keep([[1, 2, 3]], [a], ["trained"], states([1, 2, 3]))
        assert off.bytes == 0 and off.find([[1, 2, 3, 4]], [a], ["trained"], [1]).lengths == [0]


def test_the_budget_lets_the_least_recently_used_go_first():
    one = LAYERS * 2 * HEADS * 4 * DIM * 4  # bytes of a 4-token prompt
    store, a, b, c = PrefixStore(2 * one), Pic(), Pic(), Pic()
    with store.session():
        store.keep([[1, 1, 1, 1]], [a], ["trained"], states([1, 1, 1, 1]))
        store.keep([[2, 2, 2, 2]], [b], ["trained"], states([2, 2, 2, 2]))
        assert store.find([[1, 1, 1, 1, 5]], [a], ["trained"], [1]).lengths == [4]  # a is now the most recent
        store.keep([[3, 3, 3, 3]], [c], ["trained"], states([3, 3, 3, 3]))  # over budget: b goes
        assert store.bytes == 2 * one
        found = store.find([[1, 1, 9], [2, 2, 9], [3, 3, 9]], [a, b, c], ["trained"] * 3, [1, 1, 1])
        assert found.lengths == [2, 0, 2]
        store.keep([list(range(20))], [a], ["trained"], states(list(range(20))))  # larger than the budget: not kept
        assert store.bytes == 2 * one


def test_a_picture_keeps_its_most_recent_prompts_and_one_copy_of_each():
    store, a = PrefixStore(10**6, per_picture=2), Pic()
    with store.session():
        for first in (1, 2, 3, 3):
            store.keep([[first, 5, 5]], [a], ["trained"], states([first, 5, 5]))
        assert store.bytes == 2 * LAYERS * 2 * HEADS * 3 * DIM * 4
        found = store.find([[1, 5, 5, 0], [2, 5, 5, 0], [3, 5, 5, 0]], [a] * 3, ["trained"] * 3, [1, 1, 1])
        assert found.lengths == [0, 3, 3]
