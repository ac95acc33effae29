import time

import pytest

from vzero.game import parse_clue, parse_vote

# (model output, expected clue, expected vote with 4 players)
CASES = [
    # plain answers
    (r"\boxed{3}", "3", 2),
    (r"\boxed{1}", "1", 0),
    (r"\boxed{4}", "4", 3),
    (r"I think \boxed{Player 3}.", "Player 3", 2),
    (r"\boxed{PLAYER_3}", "PLAYER_3", 2),
    (r"\boxed{player3}", "player3", 2),
    (r"\boxed{ player   2 }", "player   2", 1),
    (r"\boxed{Player #2}", "Player #2", 1),
    (r"\boxed{pLaYeR 1}", "pLaYeR 1", 0),
    (r"\boxed {2}", "2", 1),
    (r"\boxed{\text{Player 2}}", r"\text{Player 2}", 1),
    (r"\boxed{**2**}", "**2**", 1),
    # N/A spellings
    (r"\boxed{N/A}", "N/A", "n/a"),
    (r"\boxed{NA}", "NA", "n/a"),
    (r"\boxed{n/a}", "n/a", "n/a"),
    (r"\boxed{ N / A }", "N / A", "n/a"),
    (r"\boxed{na}", "na", "n/a"),
    # several boxes: the last one is the answer, even when the reasoning quotes the prompt's examples
    (r"Format is \boxed{N/A} or \boxed{2}. My answer: \boxed{4}", "4", 3),
    (r"\boxed{1} \boxed{N/A}", "N/A", "n/a"),
    (r"\boxed{2}\boxed{3}", "3", 2),
    # nested braces
    (r"\boxed{a {nested} clue}", "a {nested} clue", "invalid"),
    (r"\boxed{{3}}", "{3}", "invalid"),
    (r"\boxed{x \boxed{2}} then \boxed{1}", "1", 0),
    (r"\boxed{outer \boxed{inner}}", r"outer \boxed{inner}", "invalid"),
    # cut off or malformed boxes
    (r"\boxed{2", None, "invalid"),
    (r"\boxed{1} and then \boxed{2", None, "invalid"),
    (r"\boxed{}", None, "invalid"),
    (r"\boxed{   }", None, "invalid"),
    (r"boxed{2}", None, "invalid"),
    (r"\boxed2", None, "invalid"),
    (r"\boxed{2}}", "2", 1),
    # out of range and not-a-player
    (r"\boxed{Player 0}", "Player 0", "invalid"),
    (r"\boxed{0}", "0", "invalid"),
    (r"\boxed{5}", "5", "invalid"),
    (r"\boxed{player 9 of 4}", "player 9 of 4", "invalid"),
    (r"\boxed{-3}", "-3", "invalid"),
    (r"\boxed{2.5}", "2.5", "invalid"),
    (r"\boxed{99999999999999999999999999}", "99999999999999999999999999", "invalid"),
    (r"\boxed{Players 2 and 3}", "Players 2 and 3", "invalid"),
    (r"\boxed{the spy}", "the spy", "invalid"),
    # the <answer> fallback
    ("<answer>2</answer>", "2", 1),
    ("<answer> There is a red cube. </answer>", "There is a red cube.", "invalid"),
    ("<answer>1</answer> then <ANSWER>3</Answer>", "3", 2),
    ("<answer>3", None, "invalid"),
    (r"<answer>1</answer> \boxed{2}", "2", 1),
    # markdown, unicode and empty strings
    ("**Answer:** $\\boxed{2}$", "2", 1),
    ("```\n\\boxed{Player 1}\n```", "Player 1", 0),
    ("\\boxed{\uff13}", "\uff13", "invalid"),  # full-width 3 is not an ASCII digit
    ("\\boxed{Un cube rouge \u00e0 gauche \U0001f7e5}", "Un cube rouge \u00e0 gauche \U0001f7e5", "invalid"),
    ("\\boxed{\u0130stanbul}", "\u0130stanbul", "invalid"),
    ("", None, "invalid"),
    ("   ", None, "invalid"),
    ("The spy is player 3.", None, "invalid"),
    ("\x00\x01\\boxed{\x002}", "\x002", "invalid"),
    ("\\boxed{2}\n\nExplanation: player 2 said something odd.", "2", 1),
]


@pytest.mark.parametrize(("text", "clue", "vote"), CASES)
def test_parse_table(text, clue, vote):
    assert parse_clue(text) == clue
    assert parse_vote(text, 4) == vote


def test_table_is_large_enough():
    assert len(CASES) >= 40


def test_vote_range_follows_player_count():
    assert parse_vote(r"\boxed{5}", 5) == 4
    assert parse_vote(r"\boxed{6}", 5) == "invalid"
    assert parse_vote(r"\boxed{1}", 1) == 0


@pytest.mark.parametrize("junk", [None, 3, b"\\boxed{1}", ["\\boxed{1}"]])
def test_non_strings_never_raise(junk):
    assert parse_clue(junk) is None
    assert parse_vote(junk, 4) == "invalid"


@pytest.mark.parametrize(
    "text",
    [
        "x" * 2_000_000 + r"\boxed{2}",
        r"\boxed{" * 200_000,
        "<answer>" * 200_000 + "</answer>",
        "{" * 500_000 + r"\boxed{1}" + "}" * 500_000,
        r"\boxed{1}" * 100_000,
    ],
)
def test_huge_strings_are_linear(text):
    start = time.perf_counter()
    parse_vote(text, 4)
    parse_clue(text)
    # A guard against quadratic scans (those would take hours here), not a speed target: linear takes ~0.05 s.
    assert time.perf_counter() - start < 10.0


def test_huge_strings_still_parse():
    assert parse_vote("x" * 2_000_000 + r"\boxed{2}", 4) == 1
    assert parse_vote(r"\boxed{1}" * 100_000 + r"\boxed{3}", 4) == 2
