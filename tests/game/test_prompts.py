import pytest

from vzero.game import Game, GameConfig
from vzero.game.prompts import NO_CLUE, SPY_INSTRUCTIONS


def text_of(turn) -> str:
    (message,) = turn.messages
    assert message["role"] == "user"
    image, text = message["content"]
    assert image == {"type": "image"}
    return text["text"]


def play_clues(game: Game, outputs) -> None:
    for out in outputs:
        game.submit([out])


@pytest.mark.parametrize("domain", ["clevr", "chart", "real"])
def test_spy_gets_its_domain_instruction_and_civilians_none(domain):
    game = Game(GameConfig(), domain=domain, seed=1)
    seen = {}
    while not game.done and game.pending()[0].stage == "clue":
        (turn,) = game.pending()
        seen[turn.player] = text_of(turn)
        game.submit([f"thinking about {turn.player} \\boxed{{clue {turn.player}}}"])
    for player, text in seen.items():
        has_instruction = any(instr in text for instr in SPY_INSTRUCTIONS.values())
        if player == game.spy:
            assert SPY_INSTRUCTIONS[domain] in text and "you are the spy" in text
        else:
            assert not has_instruction and "you are a civilian" in text
        assert f"You are Player {player + 1}," in text


def test_blank_spy_gets_the_blank_instruction():
    for cfg, has_modified in [(GameConfig(spy_view="blank"), True), (GameConfig(), False)]:
        game = Game(cfg, domain="clevr", seed=2, has_modified=has_modified)
        assert game.views[game.spy] == "blank"
        while game.pending()[0].player != game.spy:
            game.submit(["\\boxed{x}"])
        assert SPY_INSTRUCTIONS["blank"] in text_of(game.pending()[0])


def test_no_player_sees_another_players_reasoning():
    game = Game(GameConfig(n_civilians=3, clue_rounds=2), seed=5)
    while not game.done:
        turns = game.pending()
        for t in turns:
            text = text_of(t)
            for other in range(game.config.n_players):
                assert f"SECRET-{other}" not in text
        game.submit([f"SECRET-{t.player} my private reasoning \\boxed{{public clue of {t.player + 1}}}" for t in turns])


def test_clue_prompts_show_the_public_clues_so_far_in_order():
    game = Game(GameConfig(n_civilians=2, clue_rounds=2), seed=0)
    game.submit(["\\boxed{A}"])
    game.submit(["no box at all"])
    text = text_of(game.pending()[0])
    assert "Round 1:\nPlayer 1: A\nPlayer 2: " + NO_CLUE in text
    assert "This is round 1." in text
    game.submit(["\\boxed{C}"])
    text = text_of(game.pending()[0])
    assert "Round 1:\nPlayer 1: A\nPlayer 2: " + NO_CLUE + "\nPlayer 3: C" in text and "This is round 2." in text


def test_first_speaker_is_told_nobody_spoke_yet():
    assert "No clues yet" in text_of(Game(GameConfig(), seed=0).pending()[0])


def test_decision_prompt_lists_every_clue_round_by_round():
    cfg = GameConfig(n_civilians=3, clue_rounds=2)
    game = Game(cfg, seed=4)
    for r in range(2):
        for p in range(4):
            game.submit([f"\\boxed{{clue r{r + 1} p{p + 1}}}"])
    votes = game.pending()
    assert len(votes) == 3 and all(t.stage == "decision" for t in votes)
    assert game.spy not in [t.player for t in votes]
    for t in votes:
        text = text_of(t)
        lines = [[f"Player {p + 1}: clue r{r + 1} p{p + 1}" for p in range(4)] for r in range(2)]
        expected = "\n".join(f"Round {r + 1}:\n" + "\n".join(lines[r]) for r in range(2))
        assert expected in text
        assert "\\boxed{N/A}" in text and f"You are Player {t.player + 1}" in text


def test_observer_votes_g_times_with_the_original_picture():
    cfg = GameConfig(voting="observer", votes_per_voter=8, n_civilians=3, clue_rounds=1)
    game = Game(cfg, seed=0)
    for _ in range(4):
        game.submit(["\\boxed{c}"])
    votes = game.pending()
    assert len(votes) == 8 == cfg.votes_per_game
    assert {(t.role, t.view, t.player) for t in votes} == {("observer", "original", -1)}
    assert [t.sample for t in votes] == list(range(8))
    assert "You are the observer" in text_of(votes[0])
