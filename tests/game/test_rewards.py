import random

import pytest

from vzero.game import RoleBaselines, clue_rewards, decision_reward, decision_rewards, group_normalize, tally


def test_clue_rewards_by_hand():
    # 5 players, spy = 2. Votes received [1, 0, 3, 0, 0]: v_s = 3, civilians [1, 0, 0, 0] so v̄_c = 0.25, margin 2.75.
    # spy: -0.1 * 2.75 = -0.275
    # civilian 0: 0.1/4 * 2.75 - 0.1 * (1 - 0.25) = 0.06875 - 0.075 = -0.00625
    # civilians 1, 3, 4: 0.06875 - 0.1 * (0 - 0.25) = 0.06875 + 0.025 = 0.09375
    r = clue_rewards([1, 0, 3, 0, 0], spy=2)
    assert r == pytest.approx([-0.00625, 0.09375, -0.275, 0.09375, 0.09375])
    assert sum(r) == pytest.approx(0.0)


def test_clue_rewards_coefficients():
    # β = 0.2, λ = 0.5, 3 players, spy = 0, votes [0, 2, 0]: v_s = 0, v̄_c = 1, margin -1.
    # spy: -0.2 * -1 = 0.2; civilian 1: 0.2/2 * -1 - 0.5 * (2 - 1) = -0.6; civilian 2: -0.1 - 0.5 * (0 - 1) = 0.4
    assert clue_rewards([0, 2, 0], spy=0, beta=0.2, lam=0.5) == pytest.approx([0.2, -0.6, 0.4])


def test_clue_rewards_zero_sum_on_random_votes():
    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(3, 9)
        votes = [rng.randint(0, 8) * rng.random() for _ in range(n)]
        r = clue_rewards(votes, spy=rng.randrange(n), beta=rng.random(), lam=rng.random())
        assert sum(r) == pytest.approx(0.0, abs=1e-9)


def test_clue_rewards_more_votes_lower_reward():
    r = clue_rewards([0, 1, 2, 0, 0], spy=4)
    assert r[2] < r[1] < r[0]


def test_clue_rewards_rejects_bad_spy():
    with pytest.raises(ValueError, match="spy"):
        clue_rewards([0, 0, 0], spy=3)


def test_decision_rewards_paper():
    assert decision_rewards([2, "n/a", 0, "invalid"], spy=2) == [1.0, -0.5, -1.0, -1.0]


def test_decision_rewards_official():
    got = decision_rewards([2, "n/a", 0, "invalid"], spy=2, scheme="official")
    assert got == pytest.approx([2.49, -0.3, -0.9, -1.5])


def test_decision_reward_rejects_unknown_scheme():
    with pytest.raises(ValueError, match="scheme"):
        decision_reward(0, 0, scheme="shaped")  # type: ignore[arg-type]


def test_group_normalize():
    # mean 0, population std sqrt(2/3) for [1, -1, 0]
    got = group_normalize([1.0, -1.0, 0.0], eps=0.0)
    s = (2 / 3) ** 0.5
    assert got == pytest.approx([1 / s, -1 / s, 0.0])
    assert group_normalize([0.5, 0.5, 0.5]) == [0.0, 0.0, 0.0]
    assert group_normalize([-1.0]) == [0.0]
    assert group_normalize([]) == []


def test_role_baselines_three_games():
    b = RoleBaselines(alpha=0.9)
    # game 1: r_s = -0.2, civilians [0.1, 0.1]: b_s = 0.1 * -0.2 = -0.02, b_c = 0.1 * 0.1 = 0.01
    spy_adv, civ_adv = b.update(-0.2, [0.1, 0.1])
    assert spy_adv == pytest.approx(-0.18) and civ_adv == pytest.approx([0.09, 0.09])
    # game 2: r_s = 0.4, civilians [-0.3, -0.1] (mean -0.2):
    # b_s = 0.9 * -0.02 + 0.04 = 0.022, b_c = 0.009 - 0.02 = -0.011
    spy_adv, civ_adv = b.update(0.4, [-0.3, -0.1])
    assert (b.spy, b.civilian) == pytest.approx((0.022, -0.011))
    assert spy_adv == pytest.approx(0.378) and civ_adv == pytest.approx([-0.289, -0.089])
    # game 3: r_s = 0, civilians [0, 0]: b_s = 0.0198, b_c = -0.0099
    spy_adv, civ_adv = b.update(0.0, [0.0, 0.0])
    assert spy_adv == pytest.approx(-0.0198) and civ_adv == pytest.approx([0.0099, 0.0099])


def test_role_baselines_state_round_trip():
    a = RoleBaselines()
    a.update(0.3, [-0.1, -0.2])
    b = RoleBaselines(alpha=0.5)
    b.load_state_dict(a.state_dict())
    assert b.update(0.1, [0.0]) == a.update(0.1, [0.0])


@pytest.mark.parametrize("alpha", [-0.1, 1.0, 2])
def test_role_baselines_validate_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        RoleBaselines(alpha)


def test_tally_ignores_na_invalid_and_out_of_range():
    assert tally([0, 2, 2, "n/a", "invalid", 7, -1, True], 4) == [1, 0, 2, 0]
