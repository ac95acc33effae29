import torch

from vzero.tiny.pretrain import _spread


def test_spread_copies_each_cell_over_its_block_and_earlier_cells_claim_first():
    index = _spread(4, 5, cells=[6, 8], radius=1).view(4, 5)
    assert index[0, 0] == 6 and index[2, 2] == 6  # cell 6 is (1, 1); it claims (1..2, 0..2) first
    assert index[0, 3] == 8 and index[2, 4] == 8  # cell 8 is (1, 3); it keeps what 6 did not take
    assert index[3, 0] == 15  # out of reach: the token itself
    assert torch.equal(_spread(4, 5, [6, 8], radius=0), torch.arange(20))


def _teacher_votes(tiny_random, prior: float) -> list[tuple[list[str], int, int]]:
    """(players the notes mark different, the vote, players in the game) of the teacher's vote samples in 4-player
    games; every vote names one of the other players the notes list, never the voter."""
    import random
    import re

    from vzero.data.pairs import ClevrPairs
    from vzero.game import GameConfig
    from vzero.model import Policy
    from vzero.tiny.pretrain import IMAGE_SIZE, PretrainConfig, _chunk, _games

    policy = Policy(*tiny_random)
    games = _games(policy, ClevrPairs(n=16, seed=5, size=IMAGE_SIZE), 0, 16)
    cfg = PretrainConfig(prior=prior, abstain=0.0, votes_per_game=3)
    rules = (GameConfig(n_civilians=3, clue_rounds=1, spy_view="blank"),)
    samples = _chunk(policy, games, 0, random.Random(0), cfg, votes_only=True, rules=rules)
    out = []
    for s in samples:
        text = policy.processor.tokenizer.decode(s.target)
        odd = re.findall(r"Player (\d): [a-z ]+, different\.", text)
        vote = re.search(r"\\boxed\{(\d)\}", text).group(1)
        assert vote in re.findall(r"Player (\d): ", text)  # the notes list the others, not the voter
        out.append((odd, int(vote), 4))
    return out


def test_the_teachers_votes_follow_the_notes_only_as_often_as_the_prior_says(tiny_random):
    # prior 1: whenever the notes single out some players (not all), the vote names one of them ...
    followed = _teacher_votes(tiny_random, 1.0)
    singled = [(odd, vote) for odd, vote, n in followed if 0 < len(odd) < n - 1]
    assert len(singled) >= 8 and all(str(vote) in odd for odd, vote in singled)
    # ... and with a prior of 0 the vote ignores them: a random other player (it never sees the spy).
    blind = _teacher_votes(tiny_random, 0.0)
    singled = [(odd, vote) for odd, vote, n in blind if 0 < len(odd) < n - 1]
    assert len(singled) >= 8 and any(str(vote) not in odd for odd, vote in singled)
