import pytest

from vzero.data.pairs import ClevrPairs
from vzero.game import GameConfig, Stage, clue_rewards, decision_rewards
from vzero.model.sampling import SamplingByStage, SamplingConfig
from vzero.rl.advantages import RoleBaselines, group_normalize
from vzero.rollout import RolloutEngine, build_batch
from vzero.rollout.batch import score_samples

GREEDY = SamplingByStage(
    SamplingConfig(temperature=0, max_new_tokens=10), SamplingConfig(temperature=0, max_new_tokens=6)
)
CONFIG = GameConfig(n_civilians=3, clue_rounds=2)


@pytest.fixture(scope="module")
def rollout(random_policy):
    source = ClevrPairs(n=4, seed=7, size=(240, 160))
    return RolloutEngine(random_policy).play([source[i] for i in range(4)], CONFIG, GREEDY)


def batch_of(rollout, baselines):
    return build_batch(rollout, score_samples(rollout.transcripts, baselines))


def test_batch_matches_the_game_engine(rollout):
    transcripts = rollout.transcripts
    baselines = RoleBaselines(alpha=0.9)
    batch = batch_of(rollout, baselines)
    ref = RoleBaselines(alpha=0.9)
    k = 0
    for g, t in enumerate(transcripts):
        rewards = clue_rewards([c / CONFIG.votes_per_voter for c in t.tally], t.spy)
        civ = [p for p in range(CONFIG.n_players) if p != t.spy]
        spy_adv, civ_adv = ref.update(rewards[t.spy], [rewards[p] for p in civ])
        adv = dict(zip(civ, civ_adv)) | {t.spy: spy_adv}
        d_rewards = decision_rewards(t.votes, t.spy)
        d_adv = group_normalize(d_rewards)
        vote = 0
        for s in t.samples:
            assert batch.game[k] == g and batch.roles[k] == s.turn.role and batch.stages[k] is s.turn.stage
            if s.turn.stage is Stage.CLUE:
                assert batch.reward[k].item() == pytest.approx(rewards[s.turn.player])
                assert batch.advantage[k].item() == pytest.approx(adv[s.turn.player])
            else:
                assert batch.reward[k].item() == pytest.approx(d_rewards[vote])
                assert batch.advantage[k].item() == pytest.approx(d_adv[vote], abs=1e-6)
                vote += 1
            k += 1
    assert k == len(batch) and baselines.state_dict() == ref.state_dict()


def test_scoring_the_same_games_twice_gives_the_same_rewards(rollout):
    # Rewards are the game's; only the explicit fold moves the baselines, so transcripts hold no training state.
    a, b = RoleBaselines(alpha=0.9), RoleBaselines(alpha=0.9)
    first, second = batch_of(rollout, a), batch_of(rollout, b)
    assert first.reward.tolist() == second.reward.tolist() and first.advantage.tolist() == second.advantage.tolist()


def test_of_stages_keeps_the_active_stage_only(rollout):
    batch = batch_of(rollout, RoleBaselines())
    clues = batch.of_stages({Stage.CLUE})
    votes = batch.of_stages({Stage.DECISION})
    assert len(clues) == 4 * CONFIG.n_players * CONFIG.clue_rounds and len(votes) == 4 * CONFIG.n_civilians
    assert set(clues.stages) == {Stage.CLUE} and set(votes.stages) == {Stage.DECISION}
    assert clues.advantage.tolist() == [a for a, s in zip(batch.advantage.tolist(), batch.stages) if s is Stage.CLUE]
    assert len(batch.of_stages(set(Stage))) == len(batch) and len(batch.of_stages(set())) == 0
