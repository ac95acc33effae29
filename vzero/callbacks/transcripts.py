"""Game transcripts as run artifacts: the pages and JSONL files of :mod:`vzero.rollout.transcripts`, logged to MLflow.

Evaluations log theirs through :class:`~vzero.callbacks.WinRateEvaluation` (``eval.transcripts``); training steps
through :class:`TrainingTranscripts`, off by default. Each lands in the run's artifacts under ``transcripts/<name>/``
(``eval-step000200``, ``train-step000050``); with a logger other than MLflow, under
``<trainer.default_root_dir>/transcripts/<name>/``; with no logger (``trainer.logger: false``), nowhere.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger

from vzero.data.pairs.base import ImagePair
from vzero.rollout.engine import RolloutTranscript
from vzero.rollout.transcripts import write_transcripts

log = logging.getLogger(__name__)


def log_transcripts(
    trainer: L.Trainer,
    name: str,
    pairs: Sequence[ImagePair],
    transcripts: Sequence[RolloutTranscript],
    title: str,
    advantages: Sequence[Sequence[float]] | None = None,
) -> str:
    """Write the games' page and JSONL (rank 0 only) and log them under ``transcripts/<name>``; returns where
    (empty when nothing was written: another rank, no games, or a trainer without loggers)."""
    if not transcripts:
        return ""
    return log_folder(trainer, name, lambda folder: write_transcripts(folder, pairs, transcripts, title, advantages))


def log_folder(trainer: L.Trainer, name: str, write: Callable[[str | Path], object]) -> str:
    """Let ``write`` fill a folder (rank 0 only) and log it under ``transcripts/<name>``: to MLflow's artifacts, or
    under ``<trainer.default_root_dir>/transcripts/`` with another logger; returns where (empty when not written)."""
    if trainer.global_rank != 0 or not trainer.loggers:
        return ""
    mlflow = [lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)]
    if not mlflow:
        folder = Path(trainer.default_root_dir) / "transcripts" / name
        write(folder)
        return str(folder)
    with tempfile.TemporaryDirectory() as tmp:
        write(tmp)
        for logger in mlflow:
            logger.experiment.log_artifacts(logger.run_id, tmp, artifact_path=f"transcripts/{name}")
    return f"transcripts/{name}"


class TrainingTranscripts(L.Callback):
    """Logs the games of every ``every_n_steps``-th training step: pictures, clues, votes, rewards and advantages.

    Args:
        every_n_steps: steps between logged batches; 0 (the default) logs none.
        games: games logged from each such step (the first ones played on rank 0).
    """

    def __init__(self, every_n_steps: int = 0, games: int = 4) -> None:
        if every_n_steps < 0:
            raise ValueError(f"transcripts.every_n_steps must be >= 0, got {every_n_steps}")
        if games < 1:
            raise ValueError(f"transcripts.games must be >= 1, got {games}")
        self.every_n_steps, self.games = every_n_steps, games

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self.every_n_steps or step % self.every_n_steps or not isinstance(outputs, dict):
            return
        played = outputs.get("batch")
        if played is None:
            return
        n = min(self.games, len(played.rollout.transcripts))
        log_transcripts(
            trainer,
            f"train-step{step:06d}",
            played.rollout.pairs[:n],
            played.rollout.transcripts[:n],
            f"training step {step}: the policy against itself",
            played.game_advantages()[:n],
        )
