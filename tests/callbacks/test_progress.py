import torch

from vzero.callbacks.progress import game_items


def test_bar_names_the_stage_and_shows_the_last_win_rate():
    metrics = {
        "stage/clue": torch.tensor(1.0),
        "stage/decision": torch.tensor(0.0),
        "eval/win_rate": torch.tensor(0.456),
    }
    items = game_items({"decision/acc": 0.25, "v_num": 3}, metrics)
    assert items == {"stage": "clue", "decision/acc": 0.25, "win": "0.46"}
    assert game_items({}, {"stage/clue": 0.0, "stage/decision": 1.0}) == {"stage": "decision"}
    assert game_items({}, {"stage/clue": 1.0, "stage/decision": 1.0}) == {"stage": "both"}
    assert game_items({"decision/acc": 0.5}, {}) == {"decision/acc": 0.5}  # before the first step
