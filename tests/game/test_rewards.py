import random

import pytest

from vzero.game import clue_rewards, decision_reward, decision_rewards, tally


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


def test_tally_ignores_na_invalid_and_out_of_range():
    assert tally([0, 2, 2, "n/a", "invalid", 7, -1, True], 4) == [1, 0, 2, 0]
