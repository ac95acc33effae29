"""``WinRateEvaluation``: the trained policy against the frozen reference (paper Fig. 6), with 95% intervals.

Each evaluation plays ``games`` games on fixed held-out pairs with fixed seats and sampling keys, so curves compare
across steps and runs: one match (:func:`vzero.rollout.match.play_match`: every pair twice, the trained policy as the
civilians against the reference as the spy, then the roles swapped) over each rank's share of the pairs. A policy
evaluated against itself scores ``win_rate = 0.5`` exactly, with sampling on, for any number of games per rank; and
every rank makes the same ``generate`` calls (ranks with fewer games pad with uncounted ones), which FSDP's collectives
need. The counts are summed over ranks before the rates and their 95% intervals are taken.

With ``suites``, every evaluation also answers those question suites (:mod:`vzero.suites`, greedy, each rank a share;
:mod:`vzero.rollout.suites`) and logs ``eval/<suite>/accuracy`` with its interval, per question kind
``eval/<suite>/<kind>/accuracy``, and ``eval/<suite>/unparseable``, from counts summed over ranks. Generated suites
draw their pictures from the training source's held-out stream (its ``seed``), never from training pictures.
"""

from __future__ import annotations

import logging
import math

import lightning as L
import torch

from vzero.callbacks.transcripts import log_folder, log_transcripts
from vzero.data.pairs import PairSource
from vzero.model.sampling import SamplingByStage, SamplingConfig
from vzero.rollout.engine import RolloutEngine
from vzero.rollout.match import COUNT_KEYS, play_match, summary, win_counts, win_rates
from vzero.rollout.suites import (
    SuiteSpec,
    answer_suite,
    count_vector,
    from_vector,
    parse_suites,
    response_rows,
    suite_metrics,
)
from vzero.rollout.transcripts import write_suite_transcripts
from vzero.suites import SUITES, Suite, SuiteError, load_suite

log = logging.getLogger(__name__)


class WinRateEvaluation(L.Callback):
    """Plays the trained policy against the frozen reference every ``every_n_steps`` steps, at the end of training,
    and on ``vzero validate``.

    Args:
        games: games per evaluation (half with the trained policy as civilians, half as the spy); even.
        every_n_steps: steps between evaluations during training; 0 evaluates only at the end.
        pairs: the evaluation pairs; None holds out pairs of the training source's kind that training never shows
            (another seed of a procedural source; a folder source needs this set). A run that would evaluate without
            enough of them is refused before its first step.
        seed: seats the spies and keys the sampling, identically at every evaluation.
        sampling: sampling settings; None uses the data module's.
        at_end: also evaluate when training ends.
        at_start: also evaluate before the first step (a policy against itself: 0.5 exactly, and the start's votes).
        transcripts: games of each evaluation logged as a transcript (half from each side, rank 0's first games;
            see :mod:`vzero.callbacks.transcripts`); 0 logs none.
        suites: question suites answered at every evaluation, each ``name`` or ``name:questions`` or
            ``{name, questions}`` (``clevr-qa``, ``clevr-diff``, ``chart-qa`` or a ``.jsonl`` file); None answers none.
        suite_tokens: the most new tokens of a suite's answer (greedy).
    """

    def __init__(
        self,
        games: int = 100,
        every_n_steps: int = 50,
        pairs: PairSource | None = None,
        seed: int = 2509,
        sampling: SamplingByStage | None = None,
        at_end: bool = True,
        at_start: bool = False,
        transcripts: int = 8,
        suites: list[str | SuiteSpec] | None = None,
        suite_tokens: int = 128,
    ) -> None:
        if games < 2 or games % 2:
            raise ValueError(f"eval.games must be an even number >= 2, got {games}")
        if every_n_steps < 0:
            raise ValueError(f"eval.every_n_steps must be >= 0, got {every_n_steps}")
        self.games, self.every_n_steps, self.pairs, self.seed = games, every_n_steps, pairs, seed
        if transcripts < 0:
            raise ValueError(f"eval.transcripts must be >= 0, got {transcripts}")
        self.sampling, self.at_end, self.at_start, self.transcripts = sampling, at_end, at_start, transcripts
        self.suites = parse_suites(suites, "eval.suites")
        if suite_tokens < 1:
            raise ValueError(f"eval.suite_tokens must be >= 1, got {suite_tokens}")
        self.suite_tokens = suite_tokens
        try:  # a file suite is read, and every row and picture checked, now: a bad one is a one-line error
            self._files = {s.name: load_suite(s.name) for s in self.suites if s.name not in SUITES}
        except SuiteError as error:
            raise ValueError(f"eval.suites: {error}") from None
        self._built: list[Suite] | None = None
        self.evaluations = 0
        self.last: dict[str, float] = {}
        self.last_step = -1
        self.last_pairs: list = []

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Before the model loads and before any step: a run that will evaluate but cannot draw its pairs, or make
        its suites, is refused now rather than at its first evaluation."""
        if self.evaluates(stage):
            self.evaluation_source(trainer.datamodule.pairs)
            if self.suites:
                self.built_suites(trainer.datamodule.pairs)

    def evaluates(self, stage: str) -> bool:
        """Whether a ``stage`` (``fit``, ``validate``, ...) runs an evaluation: ``validate`` always does; ``fit`` when
        it evaluates every few steps, at the end or at the start."""
        if stage == "fit":
            return bool(self.every_n_steps or self.at_end or self.at_start)
        return stage == "validate"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        due = self.every_n_steps and step % self.every_n_steps == 0 and step
        if (due or self.is_final_step(trainer)) and self.last_step != step:  # a skipped update repeats its step
            self.evaluate(trainer, pl_module)

    def is_final_step(self, trainer: L.Trainer) -> bool:
        """Whether the step just taken reaches ``trainer.max_steps`` (with ``at_end``). The final evaluation runs then,
        inside the last step and before that step's checkpoint is written (Lightning runs checkpoint callbacks last):
        so a checkpoint at ``max_steps`` always holds it, and a run killed during it resumes from an earlier checkpoint
        and replays the last step, never into "max_steps reached" with the evaluation lost. Training that ends
        otherwise (no ``max_steps``, or stopped early) is evaluated in ``on_train_end``."""
        return self.at_end and 0 < trainer.max_steps <= trainer.global_step

    def on_train_start(self, trainer, pl_module) -> None:
        if self.at_start and trainer.global_step == 0:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.at_end and self.last_step != trainer.global_step:
            self.evaluate(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "validate":
            self.evaluate(trainer, pl_module)

    def evaluation_pairs(self, training: PairSource, n: int | None = None) -> list:
        """The ``n`` pairs (default ``games / 2``, those every evaluation plays), spread over ``eval.pairs`` or over
        pairs the training source holds out: the same pairs every time."""
        source, n = self.evaluation_source(training, n)
        stride = len(source) // n
        return [source[i * stride] for i in range(n)]

    def evaluation_source(self, training: PairSource, n: int | None = None) -> tuple[PairSource, int]:
        """The source :meth:`evaluation_pairs` draws ``n`` pairs from (default ``games / 2``), and ``n``, checked
        without drawing a picture.

        Raises:
            PairSourceError: the training source holds out no pairs (a folder) and ``eval.pairs`` is not set.
            ValueError: the source has fewer than ``n`` pairs (the message names ``eval.pairs`` and both counts).
        """
        asked = f"eval.games={self.games} needs" if n is None else "asked for"
        n = self.games // 2 if n is None else n
        source = self.pairs if self.pairs is not None else training.held_out(n)
        if len(source) < n:
            where = "eval.pairs" if self.pairs is not None else "the pairs the training source holds out (eval.pairs)"
            raise ValueError(f"{asked} {n} pairs, but {where} has {len(source)}")
        return source, n

    def play_halves(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[list, list]:
        """This rank's games, played once with the trained policy as the civilians and once as the spy (their pairs
        are then in :attr:`last_pairs`)."""
        datamodule = trainer.datamodule
        config, sampling = datamodule.game, self.sampling or datamodule.sampling
        pairs = self.evaluation_pairs(datamodule.pairs)
        # Every rank plays the same number of games, so that every rank makes the same generate calls.
        world, rank = trainer.world_size, trainer.global_rank
        mine = list(range(rank, len(pairs), world))
        counted = len(mine)
        mine += [mine[0] if mine else 0] * (math.ceil(len(pairs) / world) - counted)
        chosen, seeds = [pairs[i] for i in mine], [self.seed + i for i in mine]
        self.last_pairs = chosen[:counted]
        halves = play_match(RolloutEngine(pl_module.policy), chosen, config, sampling, seeds, self.seed)
        as_civilians, as_spy = (half[:counted] for half in halves)
        return as_civilians, as_spy

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        halves = self.play_halves(trainer, pl_module)
        counts = win_counts(*halves)
        summed = trainer.strategy.reduce(
            torch.tensor([counts[k] for k in COUNT_KEYS], dtype=torch.float64, device=pl_module.device), reduce_op="sum"
        )
        metrics = win_rates(dict(zip(COUNT_KEYS, summed.tolist())))
        metrics.update(self.answer_suites(trainer, pl_module))
        self.evaluations += 1
        self.last, self.last_step = metrics, trainer.global_step
        # Published for other callbacks (the stage's plateau trigger, the progress bar): the results and their step.
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        trainer.callback_metrics["eval/step"] = torch.tensor(float(trainer.global_step))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        if trainer.global_rank == 0:
            log.info(summary(trainer.global_step, metrics))
        self._log_transcripts(trainer, *halves)
        return metrics

    def built_suites(self, training: PairSource) -> list[Suite]:
        """The suites every evaluation answers, built once: generated ones on the training source's held-out
        pictures."""
        if self._built is None:
            seed = getattr(training, "seed", 0)
            seed = seed if isinstance(seed, int) and seed >= 0 else 0
            try:
                self._built = [
                    self._files.get(spec.name) or load_suite(spec.name, spec.questions, seed) for spec in self.suites
                ]
            except SuiteError as error:
                raise ValueError(f"eval.suites: {error}") from None
        return self._built

    def answer_suites(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Each suite's metrics, from counts summed over ranks (every rank answers its share in equal calls)."""
        metrics: dict[str, float] = {}
        policy = pl_module.policy
        sampling = SamplingConfig(temperature=0.0, max_new_tokens=self.suite_tokens)
        for suite in self.built_suites(trainer.datamodule.pairs):
            chunk = policy.decoding.max_batch_size
            answers: list = []
            tallies = answer_suite(policy, suite, trainer.world_size, trainer.global_rank, chunk, sampling, answers)
            counts = torch.tensor(count_vector(tallies, suite.kinds), dtype=torch.float64, device=pl_module.device)
            summed = from_vector(trainer.strategy.reduce(counts, reduce_op="sum").tolist(), suite.kinds)
            found = suite_metrics(suite.name, summed)
            metrics.update(found)
            if trainer.global_rank == 0:
                self._log_suite_transcripts(trainer, suite, answers)
                key = f"eval/{suite.name}"
                log.info(
                    f"{suite.name} at step {trainer.global_step}: accuracy {found[key + '/accuracy']:.3f} "
                    f"[{found[key + '/accuracy_lo']:.3f}, {found[key + '/accuracy_hi']:.3f}] over "
                    f"{summed['all'].total} questions; unparseable {found[key + '/unparseable']:.3f}"
                )
        return metrics

    def _log_suite_transcripts(self, trainer: L.Trainer, suite: Suite, answers: list) -> None:
        """The first ``transcripts`` questions rank 0 answered, with their pictures, under
        ``transcripts/eval-step<step>-<suite>``."""
        rows = response_rows(suite, answers[: self.transcripts])
        if rows:
            step = trainer.global_step
            title = f"{suite.name} at step {step}: the first {len(rows)} questions of rank 0, answered greedily"
            log_folder(
                trainer, f"eval-step{step:06d}-{suite.name}", lambda out: write_suite_transcripts(out, title, rows)
            )

    def _log_transcripts(self, trainer: L.Trainer, as_civilians: list, as_spy: list) -> None:
        half = (self.transcripts + 1) // 2
        n = min(half, len(self.last_pairs))
        if not n:
            return
        step = trainer.global_step
        log_transcripts(
            trainer,
            f"eval-step{step:06d}",
            [*self.last_pairs[:n], *self.last_pairs[:n]],
            [*as_civilians[:n], *as_spy[:n]],
            f"evaluation at step {step}: the trained policy against the frozen reference "
            f"(games 1-{n}: trained civilians; {n + 1}-{2 * n}: trained spy)",
        )

    def state_dict(self) -> dict:
        return {"evaluations": self.evaluations, "last": dict(self.last), "last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.evaluations, self.last, self.last_step = state["evaluations"], dict(state["last"]), state["last_step"]
