"""Answering a suite: counts that add up, unparsed answers counted, equal calls on every rank, 1.0 when all right."""

import pytest

from vzero.rollout.suites import (
    SuiteSpec,
    answer_suite,
    count_vector,
    from_vector,
    parse_suites,
    plan,
    question_text,
    side_by_side,
    suite_metrics,
)
from vzero.suites import make_suite, score

SIZE = (120, 80)


@pytest.fixture(scope="module")
def diff_suite():
    return make_suite("clevr-diff", 7, seed=0, size=SIZE)


def test_a_policy_that_answers_right_scores_one(diff_suite, scripted_policy):
    policy = scripted_policy(diff_suite, lambda q: f"Let me look. \\boxed{{{q.answer}}}")
    tallies = answer_suite(policy, diff_suite, chunk=3)
    assert tallies["all"].total == 7 and tallies["all"].correct == 7 and tallies["all"].unparsed == 0
    metrics = suite_metrics("clevr-diff", tallies)
    assert metrics["eval/clevr-diff/accuracy"] == 1.0
    assert metrics["eval/clevr-diff/accuracy_lo"] < 1.0 == metrics["eval/clevr-diff/accuracy_hi"]
    assert all(metrics[f"eval/clevr-diff/{k}/accuracy"] == 1.0 for k in diff_suite.kinds)
    assert policy.calls == [3, 3, 1]  # 7 questions in calls of 3; one rank pads nothing


def test_unparsed_answers_are_wrong_and_counted(diff_suite, scripted_policy):
    responses = ["no box at all", "\\boxed{}", "\\boxed{open", "\\boxed{zebra}"]
    policy = scripted_policy(diff_suite, lambda q: responses[len(q.text) % 4])
    tallies = answer_suite(policy, diff_suite)
    expected = [responses[len(q.text) % 4] for q in diff_suite]
    assert tallies["all"].correct == 0
    assert tallies["all"].unparsed == sum(not score(r, q)[1] for r, q in zip(expected, diff_suite))
    assert tallies["all"].unparsed == sum(r != "\\boxed{zebra}" for r in expected) > 0
    assert suite_metrics("d", tallies)["eval/d/unparseable"] == tallies["all"].unparsed / 7


@pytest.mark.parametrize("n, world, chunk", [(7, 3, 2), (3, 4, 16), (10, 2, 3), (1, 1, 1), (100, 1, 64)])
def test_ranks_share_the_questions_in_equal_calls(n, world, chunk):
    plans = [plan(n, world, rank, chunk) for rank in range(world)]
    assert len({tuple(len(c) for c in calls) for calls, _ in plans}) == 1  # the same calls, of the same sizes
    counted = [i for calls, k in plans for i in [j for c in calls for j in c][:k]]
    assert sorted(counted) == list(range(n))  # every question counted once, on one rank
    assert all(sum(len(c) for c in calls) == -(-n // world) for calls, _ in plans)  # padded to an equal share only


def test_ranks_make_equal_generate_calls_and_their_counts_sum_to_one_rank(diff_suite, scripted_policy):
    def answer(q):
        return f"\\boxed{{{q.answer}}}" if q.kind == "how_many" else "\\boxed{maybe}"

    single = answer_suite(scripted_policy(diff_suite, answer), diff_suite, chunk=2)
    policies = [scripted_policy(diff_suite, answer) for _ in range(3)]
    shares = [answer_suite(p, diff_suite, world=3, rank=r, chunk=2) for r, p in enumerate(policies)]
    assert policies[0].calls == policies[1].calls == policies[2].calls == [2, 1]  # 3, 2 and 2 questions, padded
    summed = [sum(v) for v in zip(*(count_vector(s, diff_suite.kinds) for s in shares))]
    assert from_vector(summed, diff_suite.kinds) == single
    assert single["how_many"].correct == single["how_many"].total > 0 and single["all"].correct < 7


def test_the_random_tiny_model_answers_and_its_counts_add_up(random_policy):
    from vzero.model.sampling import SamplingConfig

    suite = make_suite("clevr-qa", 4, seed=0, size=SIZE)
    texts: list = []
    greedy = SamplingConfig(0.0, max_new_tokens=8)
    tallies = answer_suite(random_policy, suite, chunk=3, sampling=greedy, responses=texts)
    assert [i for i, _ in texts] == [0, 1, 2, 3]
    total = tallies["all"]
    assert total.total == 4 == sum(tallies[k].total for k in suite.kinds)
    assert total.correct == sum(score(t, suite[i])[0] for i, t in texts)
    assert total.unparsed == sum(not score(t, suite[i])[1] for i, t in texts)
    again = answer_suite(random_policy, suite, chunk=2, sampling=greedy)
    assert again == tallies  # greedy: the same answers whatever the chunking


def test_two_pictures_are_shown_side_by_side(diff_suite):
    q = diff_suite[0]
    combined = side_by_side(q.images)
    assert combined.size == (2 * SIZE[0] + 8, SIZE[1])
    assert combined.crop((0, 0, *SIZE)).tobytes() == q.images[0].convert("RGB").tobytes()
    assert question_text(q).startswith("This image shows 2 pictures side by side") and q.text in question_text(q)


def test_suite_specs_parse_and_bad_ones_name_the_key():
    assert parse_suites(["clevr-qa:50", {"name": "chart-qa"}, "my.jsonl"]) == [
        SuiteSpec("clevr-qa", 50),
        SuiteSpec("chart-qa", 100),
        SuiteSpec("my.jsonl", 100),
    ]
    assert parse_suites("clevr-qa, clevr-diff:4") == [SuiteSpec("clevr-qa"), SuiteSpec("clevr-diff", 4)]
    assert parse_suites(None) == []
    for bad, message in [
        (["clevr-qa:0"], "questions must be an int >= 1"),
        (["clevr-qa:many"], "number of questions"),
        ([{"name": "clevr-qa", "n": 3}], "unknown field"),
        ([{"questions": 3}], "has no name"),
        (["clevr-qa", "clevr-qa:5"], "more than once"),
        ([3], "neither a name"),
        ("", None),
    ]:
        if message is None:
            assert parse_suites(bad) == []
            continue
        with pytest.raises(ValueError, match=f"eval.suites: .*{message}"):
            parse_suites(bad)
