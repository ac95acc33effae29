import torch

from vzero.tiny.pretrain import _spread


def test_spread_copies_each_cell_over_its_block_and_earlier_cells_claim_first():
    index = _spread(4, 5, cells=[6, 8], radius=1).view(4, 5)
    assert index[0, 0] == 6 and index[2, 2] == 6  # cell 6 is (1, 1); it claims (1..2, 0..2) first
    assert index[0, 3] == 8 and index[2, 4] == 8  # cell 8 is (1, 3); it keeps what 6 did not take
    assert index[3, 0] == 15  # out of reach: the token itself
    assert torch.equal(_spread(4, 5, [6, 8], radius=0), torch.arange(20))


def _singled_out_votes(tiny_random, prior: float) -> list[tuple[list[str], str]]:
    """(players the notes mark different, the vote) of the teacher's vote samples in 4-player games whose notes mark
    some of the other three but not all; every vote names one of the other players the notes list, never the voter."""
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
    singled = []
    for sample in _chunk(policy, games, 0, random.Random(0), cfg, votes_only=True, rules=rules):
        text = policy.processor.tokenizer.decode(sample.target)
        listed = re.findall(r"Player (\d): ", text)
        marked = re.findall(r"Player (\d): [a-z ]+, different\.", text)
        vote = re.search(r"\\boxed\{(\d)\}", text).group(1)
        assert vote in listed  # the notes list the others, not the voter
        if 0 < len(marked) < len(listed):
            singled.append((marked, vote))
    return singled


def test_the_teachers_votes_follow_the_notes_only_as_often_as_the_prior_says(tiny_random):
    # prior 1: whenever the notes single out some players (not all), the vote names one of them ...
    followed = _singled_out_votes(tiny_random, 1.0)
    assert len(followed) >= 8 and all(vote in marked for marked, vote in followed)
    # ... and with a prior of 0 the vote ignores them: a random other player (it never sees the spy).
    blind = _singled_out_votes(tiny_random, 0.0)
    assert len(blind) >= 8 and any(vote not in marked for marked, vote in blind)
