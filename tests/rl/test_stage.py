import pytest

from vzero.game import Stage
from vzero.rl.stage import Plateau, StageConfig, StageState, check_mode, step, trained_stages

CLUE, DECISION = Stage.CLUE, Stage.DECISION


def run(seq, config, start=DECISION, plateau_at=()):
    """Feed (acc, na) pairs; return the 1-based steps after which the stage switched, and the final state."""
    state = StageState(stage=start)
    switches = []
    for i, (acc, na) in enumerate(seq, start=1):
        if step(state, acc, na, config, plateau=i in plateau_at):
            switches.append(i)
    return switches, state


def steps_until(threshold, rho=0.95):
    """Steps of a constant 1.0 signal before an EMA from 0 reaches ``threshold``: 1 - rho**n >= threshold."""
    n, ema = 0, 0.0
    while ema < threshold:
        ema = rho * ema + (1 - rho)
        n += 1
    return n


CASES = [
    # name, start, sequence of (acc, na), config, expected switch steps
    (
        "perfect voters: DECISION -> CLUE once acc_ema reaches 0.9",
        DECISION,
        [(1.0, 0.0)] * 60,
        StageConfig(),
        [steps_until(0.9)],
    ),
    ("never switches on chance-level voting", DECISION, [(0.2, 0.1)] * 100, StageConfig(), []),
    ("N/A above 0.1 blocks the switch to CLUE", DECISION, [(1.0, 0.2)] * 100, StageConfig(), []),
    ("CLUE -> DECISION waits for K_min", CLUE, [(0.0, 0.0)] * 8, StageConfig(), [5]),
    ("CLUE -> DECISION on N/A alone", CLUE, [(1.0, 1.0)] * 30, StageConfig(k_min=1, err_high=1.0), [steps_until(0.5)]),
    ("K_min 10 delays it", CLUE, [(0.0, 0.0)] * 12, StageConfig(k_min=10), [10]),
    (
        "patience forces a switch, again and again",
        DECISION,
        [(0.2, 0.0)] * 30,
        StageConfig(patience=7),
        [7, 12, 19, 24],
    ),
    # after step 45 acc_ema = 0.9006; with acc = 0 it falls to 0.6 in 8 steps (0.9006 * 0.95**8 = 0.5964)
    ("both directions: up, then down", DECISION, [(1.0, 0.0)] * 45 + [(0.0, 0.0)] * 60, StageConfig(), [45, 53]),
]


@pytest.mark.parametrize(("name", "start", "seq", "config", "expected"), CASES, ids=[c[0] for c in CASES])
def test_switch_table(name, start, seq, config, expected):
    assert run(seq, config, start)[0] == expected


def test_paper_rule_cannot_fire_before_about_45_steps():
    assert steps_until(0.9) == 45


def test_plateau_trigger_respects_k_min():
    seq = [(0.2, 0.0)] * 10
    assert run(seq, StageConfig(), plateau_at={3})[0] == []  # dwell 3 < K_min: dropped by the pure rule
    # switched to CLUE at 5; chance-level voting then sends it back as soon as K_min allows
    assert run(seq, StageConfig(), plateau_at={5})[0] == [5, 10]


def test_plateau_memory_like_early_stopping():
    p = Plateau(mode="max", min_delta=0.05, patience=2)
    assert [p.update(v) for v in [0.5, 0.6, 0.62, 0.64, 0.7, 0.7, 0.71]] == [
        False,
        False,
        False,
        True,
        False,
        False,
        True,
    ]
    q = Plateau(mode="min", min_delta=0.0, patience=1)
    assert [q.update(v) for v in [1.0, 0.5, 0.5]] == [False, False, True]


def test_state_round_trip():
    state = StageState()
    for _ in range(7):
        step(state, 0.8, 0.05, StageConfig())
    again = StageState(**state.state_dict())
    assert again == state
    assert step(again, 0.8, 0.05, StageConfig()) == step(state, 0.8, 0.05, StageConfig()) and again == state


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("acc_high", 1.5),
        ("na_low", -0.1),
        ("rho", 2.0),
        ("k_min", -1),
        ("patience", 3),
        ("start", "both"),
        ("monitor_patience", 0),
        ("min_delta", -1.0),
    ],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"stage.{field}"):
        StageConfig(**{field: value})


def test_state_reads_its_checkpointed_form_and_the_old_stage_codes():
    state = StageState(stage=Stage.CLUE, acc_ema=0.3, dwell=2)
    assert state.state_dict()["stage"] == "clue"
    assert StageState(**state.state_dict()) == state
    assert StageState(stage=1).stage is CLUE and StageState(stage=0).stage is DECISION


def test_trained_stages_follow_the_mode():
    assert trained_stages("iterative", CLUE) == {CLUE} and trained_stages("iterative", DECISION) == {DECISION}
    assert trained_stages("clue", DECISION) == {CLUE}
    assert trained_stages("decision", CLUE) == {DECISION}
    assert trained_stages("both", CLUE) == {CLUE, DECISION}
    with pytest.raises(ValueError, match="model.mode"):
        check_mode("alternate")


def test_only_the_iterative_mode_switches_stage():
    for mode in ("clue", "decision", "both"):
        state = StageState()
        assert all(step(state, 1.0, 0.0, StageConfig(patience=5), mode) is None for _ in range(20))
        assert state.stage is DECISION and state.dwell == 20 and state.acc_ema > 0.6  # tracked, never switched
    state = StageState()
    assert any(step(state, 1.0, 0.0, StageConfig(patience=5)) for _ in range(5))  # iterative: patience switches
