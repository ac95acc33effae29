from types import SimpleNamespace

import pytest
import torch

from vzero.data.pairs import ClevrPairs
from vzero.game import GameConfig, Stage, clue_rewards, decision_rewards
from vzero.model.sampling import SamplingByStage, SamplingConfig
from vzero.rl.advantages import RoleBaselines, batch_scale, group_normalize
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


def fake_game(spy: int, clue_rewards: list[float], decision_rewards: list[float], rounds: int = 2):
    """What score_samples reads of a transcript: the rewards, the spy and each sample's stage and player."""
    n = len(clue_rewards)
    clues = [SimpleNamespace(turn=SimpleNamespace(stage=Stage.CLUE, player=p)) for _ in range(rounds) for p in range(n)]
    votes = [
        SimpleNamespace(turn=SimpleNamespace(stage=Stage.DECISION, player=p)) for p in range(len(decision_rewards))
    ]
    return SimpleNamespace(
        spy=spy, clue_rewards=clue_rewards, decision_rewards=decision_rewards, samples=[*clues, *votes]
    )


def test_batch_clue_scale_rescales_the_clue_advantages_only():
    # clue_scale="batch" divides the step's per-player clue advantages by their spread; votes and baselines as before.
    games = [
        fake_game(0, [-0.2, 0.1, 0.05, 0.05], [1.0, -1.0, -0.5]),
        fake_game(2, [0.03, 0.03, -0.1, 0.04], [1.0, 1.0, -1.0]),
    ]
    paper, scaled = RoleBaselines(alpha=0.9), RoleBaselines(alpha=0.9)
    plain_reward, plain = score_samples(games, paper)
    reward, got = score_samples(games, scaled, clue_scale="batch")
    assert paper.state_dict() == scaled.state_dict() and reward == plain_reward
    kinds = [s.turn.stage for g in games for s in g.samples]
    assert [a for a, k in zip(got, kinds) if k is Stage.DECISION] == [
        a for a, k in zip(plain, kinds) if k is Stage.DECISION
    ]
    per_player = [a for g in range(2) for a in plain[g * 11 : g * 11 + 4]]  # round 0: one per player
    want = batch_scale(per_player)
    assert torch.tensor(want).std(unbiased=False).item() == pytest.approx(1, abs=1e-4)
    for g in range(2):
        for r in range(2):  # both rounds of a player share its (scaled) advantage
            assert got[g * 11 + 4 * r : g * 11 + 4 * r + 4] == pytest.approx(want[4 * g : 4 * g + 4], abs=1e-6)


def test_of_stages_keeps_the_active_stage_only(rollout):
    batch = batch_of(rollout, RoleBaselines())
    clues = batch.of_stages({Stage.CLUE})
    votes = batch.of_stages({Stage.DECISION})
    assert len(clues) == 4 * CONFIG.n_players * CONFIG.clue_rounds and len(votes) == 4 * CONFIG.n_civilians
    assert set(clues.stages) == {Stage.CLUE} and set(votes.stages) == {Stage.DECISION}
    assert clues.advantage.tolist() == [a for a, s in zip(batch.advantage.tolist(), batch.stages) if s is Stage.CLUE]
    assert len(batch.of_stages(set(Stage))) == len(batch) and len(batch.of_stages(set())) == 0
