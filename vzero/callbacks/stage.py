"""``IterativeSPO``: the callback that owns the stage of Iterative-SPO.

It is the one owner of the stage. Before each step it hands the module the stages that step trains
(``VisionZeroModule.trained_stages``: the stage under ``iterative``, the mode's own otherwise; :mod:`vzero.rl.stage`
decides); after each step it sums the step's vote counts (the module's step output) over all ranks, updates the EMAs
and, in ``iterative`` mode, switches stage by the paper's rule, so every rank switches on the same step. It
checkpoints all of it: stage, EMAs, dwell count, plateau memory and the switches so far.
"""

from __future__ import annotations

import logging

import lightning as L
import torch

from vzero.rl.stage import Plateau, StageConfig, StageState, step, trained_stages

log = logging.getLogger(__name__)


class IterativeSPO(L.Callback):
    """Switches between the CLUE and DECISION stages when progress stalls (defaults are the paper's).

    Args:
        config: the switch rule, its start, and the optional patience and plateau triggers.

    In the pure modes (``model.mode`` ``clue`` or ``decision``) and in ``both`` it never switches, but still tracks and
    logs the EMAs, for comparison.
    """

    def __init__(self, config: StageConfig | None = None) -> None:
        self.config = config or StageConfig()
        self.state = StageState(stage=self.config.start)
        self.plateau = Plateau(self.config.monitor_mode, self.config.min_delta, self.config.monitor_patience)
        self.plateau_pending = False
        self.switches: list[dict] = []
        self._seen_eval_step: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        pl_module.trained_stages = trained_stages(pl_module.mode, self.state.stage)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        counts = torch.tensor([outputs["votes"], outputs["correct"], outputs["na"]], dtype=torch.float64)
        votes, correct, na = trainer.strategy.reduce(counts.to(pl_module.device), reduce_op="sum").tolist()
        acc, na_rate = (correct / votes, na / votes) if votes else (0.0, 0.0)
        self.plateau_pending |= self._plateau_check(trainer)
        before = self.state.stage
        reason = step(self.state, acc, na_rate, self.config, pl_module.mode, plateau=self.plateau_pending)
        if reason is not None:
            event = {"step": trainer.global_step, "from": str(before), "to": str(self.state.stage)}
            self.switches.append({**event, "reason": reason})
            log.info("Iterative-SPO: %s -> %s at step %d (%s)", event["from"], event["to"], event["step"], reason)
            self.plateau_pending = False
            self.plateau.reset()
        pl_module.log_dict(
            {
                "stage/acc_ema": self.state.acc_ema,
                "stage/na_ema": self.state.na_ema,
                "stage/dwell": float(self.state.dwell),
                "stage/switches": float(len(self.switches)),
            },
            on_step=True,
            batch_size=1,
        )

    def _plateau_check(self, trainer) -> bool:
        """Feed ``monitor`` to the plateau memory: once per evaluation for ``eval/*`` metrics (the evaluation
        publishes ``eval/step`` with its results), else once per step."""
        monitor = self.config.monitor
        value = trainer.callback_metrics.get(monitor) if monitor else None
        if value is None:
            return False
        if monitor.startswith("eval/"):
            evaluated_at = trainer.callback_metrics.get("eval/step")
            evaluated_at = None if evaluated_at is None else float(evaluated_at)
            if evaluated_at == self._seen_eval_step:
                return False
            self._seen_eval_step = evaluated_at
        return self.plateau.update(float(value))

    def state_dict(self) -> dict:
        return {
            "stage": self.state.state_dict(),
            "plateau": self.plateau.state_dict(),
            "plateau_pending": self.plateau_pending,
            "seen_eval_step": self._seen_eval_step,
            "switches": list(self.switches),
        }

    def load_state_dict(self, state: dict) -> None:
        self.state = StageState(**state["stage"])
        self.plateau = Plateau(**state["plateau"])
        self.plateau_pending = bool(state["plateau_pending"])
        self._seen_eval_step = state["seen_eval_step"]
        self.switches = list(state["switches"])
