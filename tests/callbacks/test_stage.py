from types import SimpleNamespace

import torch

from vzero.callbacks import IterativeSPO
from vzero.game import Stage
from vzero.rl.stage import StageConfig

CLUE, DECISION = Stage.CLUE, Stage.DECISION


class FakeModule:
    def __init__(self, mode="iterative"):
        self.mode, self.trained_stages, self.device, self.logged = mode, None, torch.device("cpu"), {}

    def log_dict(self, values, **kwargs):
        self.logged.update(values)


def fake_trainer(metrics=None):
    strategy = SimpleNamespace(reduce=lambda t, reduce_op: t)
    return SimpleNamespace(
        strategy=strategy, world_size=1, callback_metrics=metrics if metrics is not None else {}, global_step=0
    )


def run_steps(cb, trainer, module, outcomes):
    """outcomes: (correct, na) fractions out of 10 votes per step; returns the stage each step trained."""
    stages = []
    for acc, na in outcomes:
        cb.on_train_batch_start(trainer, module, None, 0)
        (stage,) = module.trained_stages
        stages.append(stage)
        cb.on_train_batch_end(trainer, module, {"votes": 10.0, "correct": 10.0 * acc, "na": 10.0 * na}, None, 0)
        trainer.global_step += 1
    return stages


def test_callback_switches_the_module_stage_by_the_paper_rule():
    cb, module, trainer = IterativeSPO(), FakeModule(), fake_trainer()
    stages = run_steps(cb, trainer, module, [(1.0, 0.0)] * 47)
    assert stages[:45] == [DECISION] * 45 and stages[45:] == [CLUE, CLUE]
    assert cb.switches[0]["from"] == "decision" and "easy" in cb.switches[0]["reason"]
    assert module.logged["stage/switches"] == 1.0


def test_pure_modes_never_switch_but_track_the_emas():
    cb, module, trainer = IterativeSPO(StageConfig(patience=5)), FakeModule(mode="clue"), fake_trainer()
    assert run_steps(cb, trainer, module, [(1.0, 0.0)] * 30) == [CLUE] * 30
    assert cb.switches == [] and cb.state.acc_ema > 0.7
    both = FakeModule(mode="both")
    cb.on_train_batch_start(trainer, both, None, 0)
    assert both.trained_stages == {CLUE, DECISION}


def test_patience_and_start_stage():
    cb, module, trainer = (
        IterativeSPO(StageConfig(start="clue", patience=6, err_high=1.0, na_high=1.0)),
        FakeModule(),
        fake_trainer(),
    )
    stages = run_steps(cb, trainer, module, [(0.5, 0.0)] * 13)
    assert stages == [CLUE] * 6 + [DECISION] * 6 + [CLUE]


def test_plateau_of_the_win_rate_switches_once_per_evaluation():
    metrics = {}
    cb = IterativeSPO(StageConfig(monitor="eval/win_rate", monitor_patience=2, k_min=1))
    module, trainer = FakeModule(), fake_trainer(metrics)
    for value in [0.5, 0.5, 0.5]:  # a new evaluation every other step, never better than the first
        metrics["eval/win_rate"] = torch.tensor(value)
        metrics["eval/step"] = torch.tensor(float(trainer.global_step))  # as WinRateEvaluation publishes it
        run_steps(cb, trainer, module, [(0.2, 0.0)] * 2)
    # Evaluation 1 sets the best, 2 and 3 do not improve: the switch comes with the third evaluation, not before.
    assert cb.switches[0]["step"] == 4 and "plateau" in cb.switches[0]["reason"]
    # (then chance-level voting in CLUE sends it straight back, by the paper's rule)
    assert [s["step"] for s in cb.switches] == [4, 5] and "hard" in cb.switches[1]["reason"]


def test_state_round_trip_continues_identically():
    a, module, trainer = IterativeSPO(StageConfig(patience=7)), FakeModule(), fake_trainer()
    run_steps(a, trainer, module, [(0.3, 0.1)] * 9)
    b = IterativeSPO(StageConfig(patience=7))
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict()
    more = [(0.9, 0.0)] * 10
    trainer_b = fake_trainer()
    trainer_b.global_step = trainer.global_step
    assert run_steps(b, trainer_b, FakeModule(), more) == run_steps(a, trainer, FakeModule(), more)
    assert b.state_dict() == a.state_dict()
