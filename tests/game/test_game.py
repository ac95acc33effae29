import subprocess
import sys
from types import SimpleNamespace

import pytest

from vzero.game import (
    Game,
    GameConfig,
    OraclePlayer,
    RandomPlayer,
    clue_rewards,
    decision_rewards,
    last_clues,
    play_game,
    play_games,
    tally,
)


def scripted_votes(votes_by_player):
    """A responder that gives a fixed clue and, in the decision stage, votes as told per player."""

    def respond(turns):
        return ["\\boxed{a clue}" if t.stage == "clue" else f"\\boxed{{{votes_by_player[t.player]}}}" for t in turns]

    return respond


def test_game_module_does_not_import_torch_or_lightning():
    code = "import sys, vzero.game; bad = {'torch', 'lightning'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_roles_are_drawn_from_the_seed():
    spies = [Game(GameConfig(), seed=s).spy for s in range(200)]
    assert spies == [Game(GameConfig(), seed=s).spy for s in range(200)]
    assert set(spies) == set(range(5))


def test_speaking_order_is_one_to_n_each_round():
    game = Game(GameConfig(n_civilians=3, clue_rounds=3), seed=0)
    order = []
    while game.pending()[0].stage == "clue":
        (t,) = game.pending()
        order.append((t.round, t.player))
        game.submit(["\\boxed{x}"])
    assert order == [(r, p) for r in range(3) for p in range(4)]


def test_last_clues_hold_each_speakers_latest_clue_as_the_game_goes():
    game = Game(GameConfig(n_civilians=2, clue_rounds=2), seed=0)
    seen = []
    while game.pending()[0].stage == "clue":
        (t,) = game.pending()
        seen.append(last_clues(game.clues))
        game.submit([f"\\boxed{{r{t.round} p{t.player}}}" if t.player != 1 else "no box"])
    assert seen[0] == {} and seen[2] == {0: "r0 p0", 1: None}
    assert last_clues(game.clues) == {0: "r1 p0", 1: None, 2: "r1 p2"}


def test_views_give_each_player_its_own_picture():
    game = Game(GameConfig(), seed=3)
    assert game.views == ["modified" if p == game.spy else "original" for p in range(5)]
    play_games([game], RandomPlayer(0))
    t = game.transcript()
    for turn in t.turns:
        expected = "original" if turn.stage == "decision" else t.views[turn.player]
        assert turn.view == expected


def test_transcript_scores_with_the_game_engine_functions():
    cfg = GameConfig(n_civilians=4)
    game = Game(cfg, seed=11)
    spy = game.spy
    civ = [p for p in range(5) if p != spy]
    votes = {p: spy + 1 for p in civ}
    votes[civ[0]] = "N/A"
    votes[civ[1]] = civ[2] + 1
    play_games([game], scripted_votes(votes))
    t = game.transcript()
    expected_votes = [spy if v == spy + 1 else "n/a" if v == "N/A" else v - 1 for v in (votes[p] for p in civ)]
    assert t.votes == expected_votes
    assert t.tally == tally(expected_votes, 5)
    assert t.clue_rewards == clue_rewards(t.tally, spy, 0.1, 0.1)
    assert t.decision_rewards == decision_rewards(expected_votes, spy)
    assert t.winner == "civilians" and t.civilians_win
    assert len(t.outputs) == len(t.turns) == 2 * 5 + 4


def test_winner_needs_strictly_the_most_votes():
    game = Game(GameConfig(n_civilians=2, clue_rounds=1), seed=0)
    spy = game.spy
    a, b = [p for p in range(3) if p != spy]
    play_games([game], scripted_votes({a: spy + 1, b: a + 1}))  # one vote each for the spy and civilian a: a tie
    assert game.transcript().winner == "spy"


def test_nobody_voting_is_a_spy_win():
    game = Game(GameConfig(), seed=0)
    play_games([game], lambda turns: ["\\boxed{clue}" if t.stage == "clue" else "\\boxed{N/A}" for t in turns])
    t = game.transcript()
    assert t.tally == [0] * 5 and t.winner == "spy"
    assert t.decision_rewards == [-0.5] * 4


def test_g_votes_per_voter_scale_clue_rewards_per_round():
    cfg = GameConfig(n_civilians=2, clue_rounds=1, voting="observer", votes_per_voter=4)
    game = Game(cfg, seed=0)
    outputs = iter(["\\boxed{c}"] * 3 + [f"\\boxed{{{game.spy + 1}}}"] * 3 + ["\\boxed{N/A}"])
    play_games([game], lambda turns: [next(outputs) for _ in turns])
    t = game.transcript()
    assert t.tally[t.spy] == 3 and len(t.votes) == 4
    assert t.clue_rewards == pytest.approx(clue_rewards([c / 4 for c in t.tally], t.spy))


def test_gibberish_never_crashes_and_is_counted_invalid():
    respond = RandomPlayer(seed=0, gibberish=1.0)
    for seed in range(20):
        t = play_game(SimpleNamespace(domain="real", meta={}, modified=None), respond, GameConfig(), seed=seed)
        assert all(c is None for r in t.clues for c in r)
        assert t.votes == ["invalid"] * 4
        assert t.decision_rewards == [-1.0] * 4


def test_batched_play_equals_one_game_at_a_time():
    pair = SimpleNamespace(domain="clevr", meta={}, modified=True)
    cfg = GameConfig(n_civilians=3)
    one = [play_game(pair, RandomPlayer(seed=s), cfg, seed=s) for s in range(6)]
    # A responder that keys its randomness by game, so batching cannot change what each game hears.
    players = {s: RandomPlayer(seed=s) for s in range(6)}
    games = [Game(cfg, "clevr", seed=s, index=s) for s in range(6)]
    play_games(games, lambda turns: [players[t.game].answer(t) for t in turns])
    for a, g in zip(one, games):
        b = g.transcript()
        assert (a.outputs, a.votes, a.tally, a.clue_rewards) == (b.outputs, b.votes, b.tally, b.clue_rewards)


def test_pending_turns_line_up_across_a_batch():
    games = [Game(GameConfig(), seed=s, index=s) for s in range(8)]
    calls = []

    def respond(turns):
        calls.append({(t.stage, t.round, t.player) for t in turns if t.stage == "clue"})
        return RandomPlayer(0)(turns)

    play_games(games, respond)
    assert len(calls) == 2 * 5 + 1  # one call per (round, speaker), then one for all votes
    assert all(len(c) == 1 for c in calls[:-1])


def test_submit_checks_the_number_of_outputs():
    game = Game(GameConfig(), seed=0)
    with pytest.raises(ValueError, match="expected 1 outputs"):
        game.submit(["a", "b"])
    with pytest.raises(RuntimeError, match="not over"):
        game.transcript()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_civilians", 1),
        ("n_civilians", True),
        ("clue_rounds", 0),
        ("votes_per_voter", 0),
        ("spy_view", "hidden"),
        ("voting", "everyone"),
        ("decision_reward", "shaped"),
        ("beta", -0.1),
        ("lam", float("nan")),
        ("alpha", 1.0),
        ("n_civilians", "4"),
    ],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"GameConfig\.{field} "):
        GameConfig(**{field: value})


def test_oracle_civilians_beat_a_random_spy_on_clevr_pairs():
    from vzero.data.pairs import ClevrPairs

    pairs = ClevrPairs(n=200, seed=0, size=(96, 64))
    oracle, spy = OraclePlayer(), RandomPlayer(seed=0)

    def respond(turns):
        return [spy.answer(t) if t.role == "spy" else oracle.answer(t) for t in turns]

    games = [Game(GameConfig(), p.domain, seed=i, meta=p.meta, index=i) for i, p in enumerate(pairs)]
    play_games(games, respond)
    wins = sum(g.transcript().civilians_win for g in games)
    assert wins >= 180, f"oracle civilians won only {wins} of 200 games"


def test_oracle_on_chart_pairs_catches_the_spy_at_least_sometimes():
    from vzero.data.pairs import ChartPairs

    pairs = ChartPairs(n=20, seed=0, size=(160, 120))
    games = [Game(GameConfig(), p.domain, seed=i, meta=p.meta, index=i) for i, p in enumerate(pairs)]
    play_games(games, OraclePlayer())
    # A truthful spy only gives itself away when it names a swapped value, so this is far from always.
    wins = sum(g.transcript().civilians_win for g in games)
    assert 0 < wins < 20
