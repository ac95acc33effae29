from vzero.callbacks.progress import game_items


def test_bar_names_the_stage_and_shows_the_last_win_rate():
    items = game_items({"stage": 1.0, "decision/acc": 0.25, "v_num": 3}, {"eval/win_rate": 0.456})
    assert items == {"stage": "clue", "decision/acc": 0.25, "win": "0.46"}
    assert game_items({"stage": "0.000"}, None) == {"stage": "decision"}  # Lightning may hand it over formatted
    assert game_items({"stage": 0.5}, {}) == {"stage": "both"}
