import math

import pytest

from vzero.rl.advantages import RoleBaselines, batch_scale, group_normalize


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


def test_fold_gives_every_player_its_role_advantage():
    # 4 players, spy 2: rewards sum to 0. alpha 0.9 from 0: b_s = 0.1 * -0.3 = -0.03, b_c = 0.1 * mean(0.1) = 0.01
    b = RoleBaselines(alpha=0.9)
    got = b.fold([0.1, 0.05, -0.3, 0.15], spy=2)
    assert got == pytest.approx([0.09, 0.04, -0.27, 0.14])
    assert (b.spy, b.civilian) == pytest.approx((-0.03, 0.01))


def test_group_std_names_the_spread_of_eq5():
    from vzero.rl.advantages import group_normalize

    rewards = [1.0, -1.0, -1.0, -0.5]  # one game's 4 votes
    mean = sum(rewards) / 4
    centred = [r - mean for r in rewards]
    population = (sum(c * c for c in centred) / 4) ** 0.5
    sample = (sum(c * c for c in centred) / 3) ** 0.5
    assert group_normalize(rewards) == pytest.approx([c / population for c in centred], abs=1e-5)
    assert group_normalize(rewards, "sample") == pytest.approx([c / sample for c in centred], abs=1e-5)
    ratio = [s / p for s, p in zip(group_normalize(rewards, "sample"), group_normalize(rewards))]
    assert ratio == pytest.approx([(3 / 4) ** 0.5] * 4)  # 13% smaller in groups of 4
    assert group_normalize(rewards, "none") == pytest.approx(centred)
    for std in ("population", "sample", "none"):
        assert group_normalize([0.5], std) == [0.0] and group_normalize([-1.0, -1.0], std) == [0.0, 0.0]


def test_group_std_is_validated_naming_the_key():
    from vzero.rl.loss import LossConfig

    with pytest.raises(ValueError, match="loss.group_std"):
        LossConfig(group_std="stdev")


def test_batch_scale_gives_unit_spread_without_centring():
    values = [0.3, -0.1, 0.05, -0.2]
    got = batch_scale(values, eps=0.0)
    mean = sum(values) / 4
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    assert got == pytest.approx([v / spread for v in values])  # divided, not centred: RAE's baselines stay
    assert math.sqrt(sum((g - sum(got) / 4) ** 2 for g in got) / 4) == pytest.approx(1.0)
    assert batch_scale([0.2, 0.2]) == [0.2, 0.2] and batch_scale([0.7]) == [0.7] and batch_scale([]) == []
