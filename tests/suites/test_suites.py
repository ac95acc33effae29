"""The generated suites: determinism, held-out pictures, answer balance, the common API and its errors."""

import time

import pytest

from vzero.data.pairs import ChartPairs, ClevrPairs
from vzero.data.pairs.base import HELD_OUT_SEED
from vzero.suites import SUITES, Suite, SuiteError, load_suite, make_suite

SIZES = {"clevr-qa": (160, 112), "clevr-diff": (160, 112), "chart-qa": (240, 160)}


def _fingerprint(suite: Suite) -> list:
    return [(q.kind, q.text, q.answer, tuple(image.tobytes() for image in q.images)) for q in suite]


@pytest.mark.parametrize("name", sorted(SUITES))
def test_the_same_seed_gives_the_same_suite_and_a_longer_one_extends_it(name):
    a = make_suite(name, 14, seed=5, size=SIZES[name])
    again = make_suite(name, 14, seed=5, size=SIZES[name])
    longer = make_suite(name, 20, seed=5, size=SIZES[name])
    other = make_suite(name, 14, seed=6, size=SIZES[name])
    assert _fingerprint(a) == _fingerprint(again) == _fingerprint(longer)[:14]
    assert [q.text for q in a] != [q.text for q in other]
    assert len(a) == 14 and a.name == name


@pytest.mark.parametrize(
    "name, source", [("clevr-qa", ClevrPairs), ("clevr-diff", ClevrPairs), ("chart-qa", ChartPairs)]
)
def test_pictures_come_from_the_held_out_stream_never_from_training(name, source):
    suite = make_suite(name, 6, seed=2, size=SIZES[name])
    for q in suite:
        meta = q.meta["pair"]
        assert meta["seed"] == 2 + HELD_OUT_SEED
        changes = {"n_changes": len(meta["changes"])} if "changes" in meta else {}
        held_out = source(1000, 2, SIZES[name], **changes).held_out(1000)[meta["index"]]
        training = source(1000, 2, SIZES[name], **changes)[meta["index"]]
        assert q.images[0].tobytes() == held_out.original.tobytes() != training.original.tobytes()
        assert all(image.mode == "RGB" and image.size == SIZES[name] for image in q.images)
    assert all(len(q.images) == (2 if name == "clevr-diff" else 1) for q in suite)


@pytest.mark.parametrize("fixture", ["clevr_qa", "clevr_diff", "chart_qa"])
def test_every_kind_is_balanced_far_from_its_best_blind_answer(fixture, request):
    suite = request.getfixturevalue(fixture)
    blind, chance = suite.blind(), suite.chance()
    assert set(blind) == set(chance) == set(suite.kinds)
    for kind, (answer, accuracy) in blind.items():
        n = sum(k == kind for k, _ in suite.answers())
        assert n >= 30, (kind, n)
        # Two-answer kinds sit at one half; every other kind well under it, and near its chance level.
        assert accuracy <= 0.55 and accuracy <= chance[kind] + 0.12, (kind, answer, accuracy, chance[kind])


def test_chance_levels(clevr_qa, clevr_diff, chart_qa):
    qa = clevr_qa.chance()
    assert qa["query_color"] == pytest.approx(1 / 8) and qa["query_shape"] == pytest.approx(1 / 3)
    assert qa["exists"] == qa["compare"] == qa["query_size"] == 0.5
    assert 1 / 7 <= qa["count"] <= 1 / 5  # 4-6 objects: 0..n
    assert clevr_diff.chance()["how_many"] == pytest.approx(1 / 3)
    assert chart_qa.chance()["compare"] == 0.5


@pytest.mark.parametrize("fixture", ["clevr_qa", "clevr_diff", "chart_qa"])
def test_every_question_asks_for_a_box_and_the_reference_answer_scores(fixture, request):
    suite = request.getfixturevalue(fixture)
    for q in suite:
        assert "\\boxed{}" in q.text and q.answer
        assert suite.score(f"I see it. \\boxed{{{q.answer}}}", q) == (True, True), q.text


def test_tally_counts_right_wrong_and_unparsed(clevr_qa):
    responses = [f"\\boxed{{{q.answer}}}" for q in clevr_qa]
    responses[0] = "no box"
    responses[1] = "\\boxed{wrong}"
    tally = clevr_qa.tally(responses)
    assert tally["all"].total == 500 and tally["all"].correct == 498 and tally["all"].unparsed == 1
    assert set(tally) == {"all", *clevr_qa.kinds}
    assert sum(t.total for k, t in tally.items() if k != "all") == 500
    first = clevr_qa[0].kind
    assert tally[first].unparsed == 1 and tally[first].accuracy < 1
    with pytest.raises(SuiteError, match="responses"):
        clevr_qa.tally(responses[:-1])


def test_indexing(clevr_qa):
    assert clevr_qa[-1].text == clevr_qa[len(clevr_qa) - 1].text
    with pytest.raises(IndexError):
        clevr_qa[len(clevr_qa)]
    with pytest.raises(TypeError):
        clevr_qa["0"]
    assert "clevr-qa" in repr(clevr_qa)


@pytest.mark.parametrize(
    "args, match",
    [
        (("mmmu",), "unknown suite"),
        (("clevr-qa", 0), "n must be"),
        (("clevr-qa", 5, -1), "seed must be"),
        (("clevr-qa", 5, 0, (160,)), "size must be"),
        (("chart-qa", 5, 0, (60, 60)), "chart-qa"),
    ],
)
def test_bad_arguments_raise_a_suite_error(args, match):
    with pytest.raises(SuiteError, match=match):
        make_suite(*args)


def test_load_suite_by_name_or_file(tmp_path):
    suite = load_suite("clevr-diff", n=3, size=(160, 112))
    assert suite.name == "clevr-diff" and len(suite) == 3
    with pytest.raises(SuiteError, match="neither a suite name"):
        load_suite("no-such-suite")
    with pytest.raises(SuiteError, match="no such file"):
        load_suite(tmp_path / "missing.jsonl")


def test_five_hundred_questions_are_cheap():
    """Generation takes CPU-seconds per 500 questions (the figure depends on the machine; this bounds it loosely)."""
    start = time.process_time()
    make_suite("clevr-qa", 100, seed=1, size=(160, 112))
    assert time.process_time() - start < 5 * 100 / 500 * 3  # 3x headroom over ~5 CPU-seconds per 500


def test_a_suite_needs_questions():
    with pytest.raises(SuiteError, match="no questions"):
        Suite("empty", [])
