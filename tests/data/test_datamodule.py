from types import SimpleNamespace

import pytest

from vzero.data.datamodule import GameRolloutDataModule
from vzero.data.pairs import ClevrPairs
from vzero.model.sampling import Sampling, SamplingConfig

FAST = Sampling(SamplingConfig(max_new_tokens=4), SamplingConfig(max_new_tokens=4))


def datamodule(policy, rank=0, world=1, seed=0):
    dm = GameRolloutDataModule(ClevrPairs(n=40, seed=1, size=(96, 64)), sampling=FAST, games_per_step=3, seed=seed)
    dm.trainer = SimpleNamespace(global_rank=rank, world_size=world)
    dm.setup("fit")
    dm.attach(policy)
    return dm


def games(batch):
    return [(t.turns[0].meta["index"], t.spy) for t in batch.transcripts]


def test_ranks_play_different_pairs_reproducibly(random_policy):
    a0, a1 = datamodule(random_policy, 0, 2), datamodule(random_policy, 1, 2)
    first0, first1 = games(a0.next_batch()), games(a1.next_batch())
    assert {i % 2 for i, _ in first0} == {0} and {i % 2 for i, _ in first1} == {1}
    assert games(datamodule(random_policy, 0, 2).next_batch()) == first0


def test_state_dict_resumes_with_new_games(random_policy):
    dm = datamodule(random_policy)
    played = [games(dm.next_batch()) for _ in range(3)]
    resumed = datamodule(random_policy)
    resumed.load_state_dict(dm.state_dict())
    assert resumed.position == 3
    nxt = games(resumed.next_batch())
    assert nxt == games(dm.next_batch())  # the same as an uninterrupted run ...
    assert nxt not in played  # ... and not a replay of the first steps


def test_same_seed_same_tokens(random_policy):
    a, b = datamodule(random_policy).next_batch(), datamodule(random_policy).next_batch()
    assert [s.completion_ids for s in a.samples] == [s.completion_ids for s in b.samples]
    c = datamodule(random_policy, seed=5).next_batch()
    assert games(c) != games(a)


def test_needs_a_policy():
    dm = GameRolloutDataModule(ClevrPairs(n=4, size=(64, 64)))
    with pytest.raises(RuntimeError, match="no policy"):
        dm.next_batch()
    with pytest.raises(ValueError, match="games_per_step"):
        GameRolloutDataModule(games_per_step=0)
