from vzero.data.pairs import ClevrPairs
from vzero.game import parse_clue, parse_vote
from vzero.tiny.targets import (
    NONE,
    biggest_first,
    clue_target,
    colour,
    described,
    notes,
    score_notes,
    verdicts,
)

CLUES = {0: "There is a large red metal cube.", 1: "a red cylinder", 2: "There is a large blue metal cube.", 3: None}


def test_caption_names_the_biggest_looking_object_and_parses_as_a_clue():
    scene = ClevrPairs(n=1, seed=3, size=(240, 160))[0].meta["scene"]
    order = biggest_first(scene)
    assert {id(o) for o in order} == {id(o) for o in scene["objects"]}
    target = clue_target(scene)
    assert target.startswith(f"I see {len(scene['objects'])} objects.")
    clue = parse_clue(target)
    assert clue is not None and order[0]["color"] in clue and order[0]["shape"] in clue


def test_descriptions_are_read_from_any_text():
    assert described("There is an orange rubber sphere.") == "orange rubber sphere"
    assert described("There is a large RED metal cube.") == "large red metal cube"
    assert described("<|image_pad|> There is a red cube") == "image pad there is a red"  # letters only, 6 words
    assert described(None) == described("!!!") == NONE


def test_notes_copy_each_other_clue_whole_judge_its_colour_and_never_name_the_spy():
    text = notes(0, CLUES)
    assert text == (
        "Mine: large red metal cube. Player 2: red cylinder, same. Player 3: large blue metal cube, different. "
        "Player 4: none, different."
    )
    assert verdicts(0, CLUES) == {1: "same", 2: "different", 3: "different"}
    assert parse_vote(text, 4) == "invalid"  # the notes hold no vote of their own
    assert colour("large blue metal cube") == "blue" and colour("big cube") is None
    # A voter whose own clue names no colour matches nobody, not even another clue without one.
    assert "same" not in notes(3, {**CLUES, 2: None})
    assert verdicts(0, {0: "a big cube", 1: "a big cube"}) == {1: "different"}


def test_notes_are_scored_entry_by_entry_and_malformed_text_scores_zero():
    right = notes(0, CLUES) + " \\boxed{3}"
    assert score_notes(right, 0, CLUES) == {"mine": 1, "copy": 3, "judge": 3, "copy_n": 3, "judge_n": 3}
    wrong = right.replace("Player 2: red cylinder, same", "Player 2: blue cylinder, different")
    assert score_notes(wrong, 0, CLUES) == {"mine": 1, "copy": 2, "judge": 2, "copy_n": 3, "judge_n": 3}
    for junk in ("", "\\boxed{2}", "Player 2: Player 2: ,,, same." * 50):
        assert score_notes(junk, 0, CLUES)["copy"] == 0
