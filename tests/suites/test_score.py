"""Reading and comparing answers: the box, normalisation, numbers, CLEVR attributes and choices."""

import pytest

from vzero.suites.question import Question
from vzero.suites.score import attributes, canonical, normalize, number, score


def _q(answer, match="text", tolerance=0.0, choices=None):
    return Question((), "", answer, "k", choices, match, tolerance)


def _box(body):
    return f"Let me think. \\boxed{{{body}}}"


@pytest.mark.parametrize(
    "response",
    ["no box at all: yes", "\\boxed{yes", "\\boxed{}", "\\boxed{  }", "\\boxed{yes} then \\boxed{no", None, 42],
)
def test_a_response_without_a_usable_box_is_unparsed_and_wrong(response):
    assert score(response, _q("yes")) == (False, False)


def test_the_last_box_is_the_answer():
    assert score("\\boxed{no} ... on reflection \\boxed{yes}", _q("yes")) == (True, True)
    assert score("\\boxed{yes} ... on reflection \\boxed{no}", _q("yes")) == (False, True)


@pytest.mark.parametrize(
    "body, answer",
    [
        ("Yes", "yes"),
        (" YES. ", "yes"),
        ("True", "yes"),
        ("false", "no"),
        ("\\text{No}", "no"),
        ("\\textbf{\\text{no}}", "no"),
        ("'Lamps'", "Lamps"),
        ("the  North", "North"),
        ("2019", "2019"),
        ("2019.0", "2019"),
    ],
)
def test_text_answers_compare_after_normalisation(body, answer):
    assert score(_box(body), _q(answer)) == (True, True)


@pytest.mark.parametrize("body, answer", [("yes", "no"), ("North East", "North"), ("Lamp", "Lamps"), ("y", "yes")])
def test_different_text_answers_stay_different(body, answer):
    assert score(_box(body), _q(answer)) == (False, True)


@pytest.mark.parametrize("body", ["3", "three", "Three.", "3.0", "3 objects", "\\text{3}", "+3"])
def test_a_count_in_digits_or_words(body):
    assert score(_box(body), _q("3", "number")) == (True, True)


@pytest.mark.parametrize("body", ["4", "about 3", "3 or 4", "3-4", "three or four", "", "x"])
def test_a_count_that_is_wrong_or_not_one_number(body):
    correct, _ = score(_box(body), _q("3", "number"))
    assert not correct


def test_numbers_within_the_tolerance_only():
    q = _q("412", "number", tolerance=20.6)  # ChartQA's 5%
    for body in ["412", "430", "391.4", "$412", "412 k$", "412.0"]:
        assert score(_box(body), q)[0], body
    for body in ["433", "391", "4120", "41.2"]:
        assert not score(_box(body), q)[0], body
    assert score(_box("1,200"), _q("1200", "number"))[0]
    assert score(_box("23\\%"), _q("23", "number", 1.15))[0]
    assert score(_box("23%"), _q("23", "number", 1.15))[0]
    assert number("1,2") is None and number("twenty") == 20 and number("-2.5") == -2.5


@pytest.mark.parametrize(
    "body",
    ["gray", "Grey", "grey.", "It is gray", "the gray one", "large gray", "\\text{gray}"],
)
def test_a_color_query_with_the_renderer_s_synonyms(body):
    assert score(_box(body), _q("gray", "attributes")) == (True, True)


@pytest.mark.parametrize("body", ["red", "gray or red", "gray red", "grayish", "gray, I think", ""])
def test_a_color_query_wrong_or_hedged(body):
    assert not score(_box(body), _q("gray", "attributes"))[0]


def test_object_descriptions_need_every_attribute_the_reference_names():
    which = _q("large red metal cube", "attributes")
    for body in [
        "large red metal cube",
        "A big red shiny block",
        "the large, red, metallic cube",
        "red large cube metal",
    ]:
        assert score(_box(body), which)[0], body
    for body in [
        "red metal cube",
        "large red rubber cube",
        "large red metal sphere",
        "large red metal cube and sphere",
    ]:
        assert not score(_box(body), which)[0], body
    became = _q("blue sphere", "attributes")
    assert score(_box("blue ball"), became)[0] and score(_box("a small blue metal sphere"), became)[0]
    assert not score(_box("blue"), became)[0] and not score(_box("sphere"), became)[0]
    assert attributes("tiny matte balls") == {"size": "small", "material": "rubber", "shape": "sphere"}
    assert attributes("red or blue") is None and attributes("red blue") is None and attributes("2 red cubes") is None


def test_a_choice_answers_by_its_text_or_its_letter():
    q = _q("dog", choices=("cat", "dog", "bird"))
    for body in ["dog", "B", "b", "(B)", "B.", "B. dog", "B) dog", "Dog."]:
        assert score(_box(body), q)[0], body
    for body in ["A", "C", "B. cat", "D", "cat"]:
        assert not score(_box(body), q)[0], body


def test_normalize_and_canonical():
    assert normalize("  The  Answer: \\text{Seven}. ") == "answer: seven"
    assert normalize("Seven.") == "7"
    assert canonical("3") == canonical("three") == canonical("3.00")
    assert canonical("Q3") != canonical("3")
