from types import SimpleNamespace

import pytest

from vzero.data.pairs import ClevrPairs
from vzero.model.sampling import SamplingByStage, SamplingConfig
from vzero.rollout import GameRolloutDataModule

FAST = SamplingByStage(SamplingConfig(max_new_tokens=4), SamplingConfig(max_new_tokens=4))


def datamodule(policy, rank=0, world=1, seed=0):
    dm = GameRolloutDataModule(ClevrPairs(n=40, seed=1, size=(96, 64)), sampling=FAST, games_per_step=3, seed=seed)
    mean_over_ranks = SimpleNamespace(reduce=lambda t, reduce_op: t)  # every rank holds the same values here
    dm.trainer = SimpleNamespace(
        global_rank=rank,
        world_size=world,
        strategy=mean_over_ranks,
        lightning_module=SimpleNamespace(policy=policy, device=policy.device),
    )
    dm.setup("fit")
    return dm


def games(batch):
    return [(t.turns[0].meta["index"], t.spy) for t in batch.rollout.transcripts]


def test_ranks_play_different_pairs_reproducibly(random_policy):
    a0, a1 = datamodule(random_policy, 0, 2), datamodule(random_policy, 1, 2)
    first0, first1 = games(a0.next_batch(random_policy)), games(a1.next_batch(random_policy))
    assert {i % 2 for i, _ in first0} == {0} and {i % 2 for i, _ in first1} == {1}
    assert games(datamodule(random_policy, 0, 2).next_batch(random_policy)) == first0


def test_state_dict_resumes_with_new_games(random_policy):
    dm = datamodule(random_policy)
    played = [games(dm.next_batch(random_policy)) for _ in range(3)]
    resumed = datamodule(random_policy)
    resumed.load_state_dict(dm.state_dict())
    assert resumed.position == 3
    nxt = games(resumed.next_batch(random_policy))
    assert nxt == games(dm.next_batch(random_policy))  # the same as an uninterrupted run ...
    assert nxt not in played  # ... and not a replay of the first steps


def test_same_seed_same_tokens(random_policy):
    a, b = datamodule(random_policy).next_batch(random_policy), datamodule(random_policy).next_batch(random_policy)
    assert [s.completion_ids for s in a.samples] == [s.completion_ids for s in b.samples]
    c = datamodule(random_policy, seed=5).next_batch(random_policy)
    assert games(c) != games(a)


def test_owns_and_checkpoints_the_role_baselines(random_policy):
    dm = datamodule(random_policy)
    batch = dm.next_batch(random_policy)
    assert batch.baselines == {"rae/b_spy": dm.baselines.spy, "rae/b_civ": dm.baselines.civilian}
    resumed = datamodule(random_policy)
    resumed.load_state_dict(dm.state_dict())
    assert resumed.baselines.state_dict() == dm.baselines.state_dict()
    assert games(resumed.next_batch(random_policy)) == games(dm.next_batch(random_policy))
    assert resumed.baselines.state_dict() == dm.baselines.state_dict()


def test_games_per_step_must_be_positive():
    with pytest.raises(ValueError, match="games_per_step"):
        GameRolloutDataModule(games_per_step=0)
