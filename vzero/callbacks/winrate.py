"""``WinRateEvaluation``: the trained policy against the frozen reference (paper Fig. 6).

Each evaluation plays ``games`` games on fixed pairs with fixed seats and sampling seeds, so curves compare across
steps and runs: every pair is played twice, once with the trained policy as the civilians (and the observer, if any)
against the reference as the spy, and once with the roles swapped. The reference players generate with the adapter
off, the trained ones with it on. Because both halves replay the same games, a policy evaluated against itself scores
exactly ``win_rate_civilian + win_rate_spy = 1`` and ``win_rate = 0.5``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import lightning as L
import torch

from vzero.data.pairs import PairSource
from vzero.game import Stage, Transcript
from vzero.model.sampling import Sampling
from vzero.rollout.engine import RolloutEngine
from vzero.rollout.metrics import vote_counts

log = logging.getLogger(__name__)

COUNT_KEYS = (
    "games_civ",
    "wins_civ",
    "games_spy",
    "wins_spy",
    "votes",
    "correct",
    "na",
    "clue_n",
    "clue_len",
    "dec_n",
    "dec_len",
)


def win_counts(as_civilians: Sequence[Transcript], as_spy: Sequence[Transcript]) -> dict[str, float]:
    """Sums over games where the trained side played the civilians, and where it played the spy."""
    c = dict.fromkeys(COUNT_KEYS, 0.0)
    c["games_civ"], c["wins_civ"] = len(as_civilians), sum(t.civilians_win for t in as_civilians)
    c["games_spy"], c["wins_spy"] = len(as_spy), sum(not t.civilians_win for t in as_spy)
    votes = vote_counts(as_civilians)  # the trained side casts these votes
    c.update({k: float(votes[k]) for k in ("votes", "correct", "na")})
    for t in [*as_civilians, *as_spy]:
        for s in getattr(t, "samples", []):
            if not s.reference:
                key = "clue" if s.turn.stage == Stage.CLUE else "dec"
                c[f"{key}_n"] += 1
                c[f"{key}_len"] += len(s.completion_ids)
    return c


def win_rates(c: dict[str, float]) -> dict[str, float]:
    """The logged metrics, from (possibly rank-summed) counts."""

    def div(a: float, b: float) -> float:
        return a / b if b else 0.0

    return {
        "eval/win_rate": div(c["wins_civ"] + c["wins_spy"], c["games_civ"] + c["games_spy"]),
        "eval/win_rate_civilian": div(c["wins_civ"], c["games_civ"]),
        "eval/win_rate_spy": div(c["wins_spy"], c["games_spy"]),
        "eval/decision_acc": div(c["correct"], c["votes"]),
        "eval/na_rate": div(c["na"], c["votes"]),
        "eval/len_clue": div(c["clue_len"], c["clue_n"]),
        "eval/len_decision": div(c["dec_len"], c["dec_n"]),
    }


class WinRateEvaluation(L.Callback):
    """Plays the trained policy against the frozen reference every ``every_n_steps`` steps, at the end of training,
    and on ``vzero validate``.

    Args:
        games: games per evaluation (half with the trained policy as civilians, half as the spy); even.
        every_n_steps: steps between evaluations during training; 0 evaluates only at the end.
        pairs: the evaluation pairs; None takes fixed pairs of the training source.
        seed: seats the spies and seeds the sampling, identically at every evaluation.
        sampling: sampling settings; None uses the data module's.
        at_end: also evaluate when training ends.
    """

    def __init__(
        self,
        games: int = 100,
        every_n_steps: int = 50,
        pairs: PairSource | None = None,
        seed: int = 2509,
        sampling: Sampling | None = None,
        at_end: bool = True,
    ) -> None:
        if games < 2 or games % 2:
            raise ValueError(f"eval.games must be an even number >= 2, got {games}")
        if every_n_steps < 0:
            raise ValueError(f"eval.every_n_steps must be >= 0, got {every_n_steps}")
        self.games, self.every_n_steps, self.pairs, self.seed = games, every_n_steps, pairs, seed
        self.sampling, self.at_end = sampling, at_end
        self.evaluations = 0
        self.last: dict[str, float] = {}
        self.last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0 and trainer.global_step:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.at_end and self.last_step != trainer.global_step:
            self.evaluate(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "validate":
            self.evaluate(trainer, pl_module)

    def _pairs(self, datamodule) -> list:
        source = self.pairs if self.pairs is not None else datamodule.pairs
        n = self.games // 2
        if len(source) < n:
            raise ValueError(f"eval.games={self.games} needs {n} pairs, but the evaluation source has {len(source)}")
        stride = len(source) // n  # spread over the source, the same pairs every time
        return [source[i * stride] for i in range(n)]

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        datamodule = trainer.datamodule
        config, sampling = datamodule.game, self.sampling or datamodule.sampling
        pairs = self._pairs(datamodule)
        mine = [i for i in range(len(pairs)) if i % trainer.world_size == trainer.global_rank]
        mine_pairs, seeds = [pairs[i] for i in mine], [self.seed + i for i in mine]
        engine = RolloutEngine(pl_module.policy)
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        halves = []
        for reference in (lambda t: t.role == "spy", lambda t: t.role != "spy"):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed + trainer.global_rank)  # both halves sample with the same stream
                halves.append(engine.play(mine_pairs, config, sampling, seeds=seeds, reference=reference))
        counts = win_counts(*halves)
        summed = trainer.strategy.reduce(
            torch.tensor([counts[k] for k in COUNT_KEYS], dtype=torch.float64, device=pl_module.device), reduce_op="sum"
        )
        metrics = win_rates(dict(zip(COUNT_KEYS, summed.tolist())))
        self.evaluations += 1
        self.last, self.last_step = metrics, trainer.global_step
        # Published for other callbacks (the stage's plateau trigger, the progress bar): the results and their step.
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        trainer.callback_metrics["eval/step"] = torch.tensor(float(trainer.global_step))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        log.info(
            "win rate vs reference at step %d: %s",
            trainer.global_step,
            {k.removeprefix("eval/"): round(v, 3) for k, v in metrics.items()},
        )
        return metrics

    def state_dict(self) -> dict:
        return {"evaluations": self.evaluations, "last": dict(self.last), "last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.evaluations, self.last, self.last_step = state["evaluations"], dict(state["last"]), state["last_step"]
