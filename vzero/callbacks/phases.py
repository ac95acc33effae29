"""``IterativeSPO``: the callback that owns the stage of Iterative-SPO and the role baselines of RAE.

Before each step it tells the module which stage is active; after each step it sums the step's vote counts over all
ranks, updates the EMAs and switches stage by the paper's rule (:mod:`vzero.rl.phases`), so every rank switches on the
same step. It also owns the :class:`~vzero.game.RoleBaselines` that the data module folds games into, averages them
over ranks after each step, and checkpoints all of it: stage, EMAs, dwell count, baselines and plateau memory.
"""

from __future__ import annotations

import logging
from typing import Literal

import lightning as L
import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveInt

from vzero.game import RoleBaselines
from vzero.rl.phases import CLUE, DECISION, STAGE_NAMES, PhaseConfig, PhaseState, Plateau, step, track

log = logging.getLogger(__name__)


class IterativeSPO(L.Callback):
    """Switches between the CLUE and DECISION stages when progress stalls (defaults are the paper's).

    Args:
        start: the first stage (the paper starts in ``decision``).
        rho: EMA decay of the decision accuracy and N/A rate.
        acc_high: τacc↑, the accuracy above which (with few N/A) the DECISION stage hands over to CLUE.
        err_high: τerr↑, the error above which the CLUE stage hands back to DECISION.
        na_high: τna↑, the N/A rate above which the CLUE stage hands back to DECISION.
        na_low: τna↓, the N/A rate that DECISION -> CLUE must stay under.
        k_min: the fewest steps spent in a stage before any switch.
        patience: P, force a switch after this many steps in one stage; 0 turns it off.
        monitor: a logged metric (e.g. ``eval/win_rate`` or ``decision/acc``) whose plateau also switches stage;
            None turns the plateau trigger off.
        monitor_mode: ``max`` if larger is better, else ``min``.
        min_delta: the least change that counts as an improvement of ``monitor``.
        monitor_patience: checks of ``monitor`` without improvement before switching.

    The role baselines take their EMA decay from the data module's ``game.alpha``.
    """

    def __init__(
        self,
        start: Literal["decision", "clue"] = "decision",
        rho: ClosedUnitInterval = 0.95,
        acc_high: ClosedUnitInterval = 0.9,
        err_high: ClosedUnitInterval = 0.4,
        na_high: ClosedUnitInterval = 0.5,
        na_low: ClosedUnitInterval = 0.1,
        k_min: NonNegativeInt = 5,
        patience: NonNegativeInt = 0,
        monitor: str | None = None,
        monitor_mode: Literal["max", "min"] = "max",
        min_delta: NonNegativeFloat = 0.0,
        monitor_patience: PositiveInt = 3,
    ) -> None:
        if start not in ("decision", "clue"):
            raise ValueError(f"phases.start must be 'decision' or 'clue', got {start!r}")
        if monitor_patience < 1:
            raise ValueError(f"phases.monitor_patience must be >= 1, got {monitor_patience}")
        self.config = PhaseConfig(rho, acc_high, err_high, na_high, na_low, k_min, patience)
        self.state = PhaseState(stage=CLUE if start == "clue" else DECISION)
        self.monitor = monitor
        self.plateau = Plateau(monitor_mode, min_delta, monitor_patience)
        self.plateau_pending = False
        self.baselines = RoleBaselines()
        self.switches: list[dict] = []
        self._seen_evaluations = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "baselines"):
            # One object: the data module folds games into it, this callback syncs and checkpoints it.
            self.baselines = RoleBaselines(datamodule.game.alpha)
            datamodule.baselines = self.baselines

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        pl_module.stage = self.state.stage

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        counts = torch.tensor([outputs["votes"], outputs["correct"], outputs["na"]], dtype=torch.float64)
        votes, correct, na = trainer.strategy.reduce(counts.to(pl_module.device), reduce_op="sum").tolist()
        acc, na_rate = (correct / votes, na / votes) if votes else (0.0, 0.0)
        self._sync_baselines(trainer, pl_module)
        self.plateau_pending |= self._plateau_check(trainer)
        before = self.state.stage
        reason = None
        if getattr(pl_module, "mode", "iterative") == "iterative":
            reason = step(self.state, acc, na_rate, self.config, plateau=self.plateau_pending)
        else:  # pure modes keep their stage; the EMAs are still tracked and logged, for comparison
            track(self.state, acc, na_rate, self.config.rho)
        if reason is not None:
            event = {"step": trainer.global_step, "from": STAGE_NAMES[before], "to": STAGE_NAMES[self.state.stage]}
            self.switches.append({**event, "reason": reason})
            log.info("Iterative-SPO: %s -> %s at step %d (%s)", event["from"], event["to"], event["step"], reason)
            self.plateau_pending = False
            self.plateau.reset()
        pl_module.log_dict(
            {
                "phases/acc_ema": self.state.acc_ema,
                "phases/na_ema": self.state.na_ema,
                "phases/dwell": float(self.state.dwell),
                "phases/switches": float(len(self.switches)),
                "rae/b_spy": self.baselines.spy,
                "rae/b_civ": self.baselines.civilian,
            },
            on_step=True,
            batch_size=1,
        )

    def _sync_baselines(self, trainer, pl_module) -> None:
        if trainer.world_size > 1:
            values = torch.tensor([self.baselines.spy, self.baselines.civilian], dtype=torch.float64)
            spy, civ = trainer.strategy.reduce(values.to(pl_module.device), reduce_op="mean").tolist()
            self.baselines.spy, self.baselines.civilian = spy, civ

    def _plateau_check(self, trainer) -> bool:
        """Feed ``monitor`` to the plateau memory: once per evaluation for ``eval/*`` metrics, else once per step."""
        if self.monitor is None:
            return False
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return False
        if self.monitor.startswith("eval/"):
            from vzero.callbacks.winrate import WinRateEvaluation

            evals = sum(c.evaluations for c in trainer.callbacks if isinstance(c, WinRateEvaluation))
            if evals == self._seen_evaluations:
                return False
            self._seen_evaluations = evals
        return self.plateau.update(float(value))

    def state_dict(self) -> dict:
        return {
            "phase": self.state.state_dict(),
            "baselines": self.baselines.state_dict(),
            "plateau": self.plateau.state_dict(),
            "plateau_pending": self.plateau_pending,
            "seen_evaluations": self._seen_evaluations,
            "switches": list(self.switches),
        }

    def load_state_dict(self, state: dict) -> None:
        self.state = PhaseState(**state["phase"])
        self.baselines.load_state_dict(state["baselines"])
        self.plateau = Plateau(**state["plateau"])
        self.plateau_pending = bool(state["plateau_pending"])
        self._seen_evaluations = int(state.get("seen_evaluations", 0))
        self.switches = list(state["switches"])
