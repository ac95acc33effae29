import torch

from vzero.tiny.pretrain import _spread


def test_spread_copies_each_cell_over_its_block_and_earlier_cells_claim_first():
    index = _spread(4, 5, cells=[6, 8], radius=1).view(4, 5)
    assert index[0, 0] == 6 and index[2, 2] == 6  # cell 6 is (1, 1); it claims (1..2, 0..2) first
    assert index[0, 3] == 8 and index[2, 4] == 8  # cell 8 is (1, 3); it keeps what 6 did not take
    assert index[3, 0] == 15  # out of reach: the token itself
    assert torch.equal(_spread(4, 5, [6, 8], radius=0), torch.arange(20))


def test_the_teachers_votes_never_name_the_voter_and_do_not_follow_the_notes(tiny_random):
    """The base must never see who the spy is: its vote targets are another player at random, whatever the notes
    before them say, so RL alone links the two."""
    import random
    import re

    from vzero.data.pairs import ClevrPairs
    from vzero.game import GameConfig
    from vzero.model import Policy
    from vzero.tiny.pretrain import IMAGE_SIZE, PretrainConfig, _chunk, _games

    policy = Policy(*tiny_random)
    games = _games(policy, ClevrPairs(n=16, seed=5, size=IMAGE_SIZE), 0, 16)
    rules = (GameConfig(n_civilians=3, spy_view="blank"),)
    cfg = PretrainConfig(abstain=0.0, votes_per_game=3)
    samples = _chunk(policy, games, 0, random.Random(0), cfg, votes_only=True, rules=rules)
    singled = []  # (players the notes mark different, the vote) where the notes mark some but not all
    for sample in samples:
        text = policy.processor.tokenizer.decode(sample.target)
        marked = re.findall(r"Player (\d): [a-z ]+, different\.", text)
        listed = re.findall(r"Player (\d): ", text)
        vote = re.search(r"\\boxed\{(\d)\}", text).group(1)
        assert vote in listed  # another player: the notes list the others, never the voter
        if 0 < len(marked) < len(listed):
            singled.append((marked, vote))
    assert len(singled) >= 8 and any(vote not in marked for marked, vote in singled)
