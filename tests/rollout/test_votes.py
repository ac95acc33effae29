from pathlib import Path

import pytest

from vzero.game import GameConfig
from vzero.rollout.votes import config_game

ROOT = Path(__file__).resolve().parents[2]


def test_config_game_reads_the_game_and_clue_sampling_a_fit_config_names(tmp_path):
    game, sampling = config_game(ROOT / "configs" / "tiny_learn.yaml")
    assert game == GameConfig(n_civilians=3, clue_rounds=1, spy_view="blank", votes_per_voter=1)
    assert (sampling.clue.temperature, sampling.clue.max_new_tokens) == (0.5, 32)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  game:\n    n_civilian: 3\n  sampling:\n    clue: {temperature: 1.0, max_new_tokens: 8}\n")
    with pytest.raises(TypeError, match="n_civilian"):
        config_game(bad)
