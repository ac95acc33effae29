"""``vzero fit`` and ``vzero validate``: a LightningCLI over :class:`VisionZeroModule` and the rollout data module.

Every key of a YAML config is a parameter of a class signature; help text comes from the docstrings. Besides
``model``, ``data`` and ``trainer`` the config has:

- ``stage``: the :class:`~vzero.rl.stage.StageConfig` of the :class:`~vzero.callbacks.IterativeSPO` callback (always
  present: it owns the stage); ``phases``, its old name, still works and says so;
- ``eval``: the :class:`~vzero.callbacks.WinRateEvaluation` callback;
- ``checkpoint``: the ``ModelCheckpoint`` (adapter weights, optimizer, scheduler, callback and data state);
- ``experiment`` and ``run_name``: where the run lands in MLflow.

MLflow is the default logger: a local store under ``./mlruns`` (SQLite, with artifacts beside it), tagged with the mode,
domain and model, with the flattened config as params and the resolved config file as an artifact.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

from vzero.callbacks import GameProgressBar, IterativeSPO, WinRateEvaluation
from vzero.module import VisionZeroModule
from vzero.rl.stage import StageConfig
from vzero.rollout import GameRolloutDataModule

log = logging.getLogger(__name__)

MLRUNS = Path("mlruns")


def mlflow_logger(experiment: str, run_name: str, tags: dict[str, str], root: Path = MLRUNS) -> MLFlowLogger:
    """A logger on the local store: ``root/mlflow.db`` for runs and metrics, ``root/artifacts`` for files."""
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    return MLFlowLogger(
        experiment_name=experiment,
        run_name=run_name,
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifact_location=(root / "artifacts").as_uri(),
        tags=tags,
    )


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


class LogConfigToMLflow(SaveConfigCallback):
    """Logs the flattened config as params (long values truncated) and the resolved YAML as an artifact."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        for logger in trainer.loggers:
            if not isinstance(logger, MLFlowLogger):
                continue
            logger.log_hyperparams(flatten(self.config.clone().as_dict()))
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "config.yaml"
                path.write_text(self.parser.dump(self.config, skip_none=False))
                logger.experiment.log_artifact(logger.run_id, str(path))


class VZeroCLI(LightningCLI):
    """The training command line."""

    def __init__(self, args=None, run: bool = True) -> None:
        super().__init__(
            VisionZeroModule,
            GameRolloutDataModule,
            save_config_callback=LogConfigToMLflow,
            save_config_kwargs={"save_to_log_dir": False, "overwrite": True},
            trainer_defaults={"log_every_n_steps": 1, "num_sanity_val_steps": 0},
            parser_kwargs={"description": "vzero: train a VLM by self-play on 'Who is the Spy?'"},
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--experiment", default="vzero", help="MLflow experiment name.")
        parser.add_argument("--run_name", default=None, help="MLflow run name (default: mode and time).")
        parser.add_class_arguments(StageConfig, "stage", help="The stage switch of Iterative-SPO.")
        parser.add_argument(
            "--phases", type=StageConfig | None, default=None, help="Deprecated: the old name of ``stage``."
        )
        parser.add_lightning_class_args(WinRateEvaluation, "eval")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.dirpath": "checkpoints/vzero",
                "checkpoint.save_last": True,
                "checkpoint.every_n_train_steps": 10,
                "checkpoint.save_top_k": 0,
            }
        )

    def _instantiate_trainer(self, config: dict, callbacks: list):
        callbacks = [*callbacks, IterativeSPO(self._get(self.config_init, "stage"))]
        if config.get("enable_progress_bar") is not False:  # off e.g. on a cluster, where logs are files
            callbacks = [*callbacks, GameProgressBar()]
        if config.get("logger") in (None, True):
            cfg = self.config[self.subcommand] if self.subcommand else self.config
            mode = cfg.model.mode
            tags = {
                "mode": mode,
                "domain": _domain(self.datamodule),
                "model": cfg.model.model.name_or_path if cfg.model.model else "tiny",
                "command": self.subcommand,
            }
            run_name = cfg.run_name or f"{mode}-{time.strftime('%Y%m%d-%H%M%S')}"
            config["logger"] = mlflow_logger(cfg.experiment, run_name, tags)
        return super()._instantiate_trainer(config, callbacks)

    def before_instantiate_classes(self) -> None:
        """Fold the deprecated ``phases`` key into ``stage``: the fields it sets win."""
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.get("phases") is None:
            return
        log.warning("the config key 'phases' is deprecated: rename it to 'stage' (same fields)")
        defaults = asdict(StageConfig())
        for key, value in cfg.phases.as_dict().items():
            if value != defaults[key]:
                cfg[f"stage.{key}"] = value
        cfg.phases = None


def _log_to_console() -> None:
    """Stage switches, win rates and the tiny model's one-time build are worth seeing as they happen."""
    logger = logging.getLogger("vzero")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[vzero] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _domain(datamodule: GameRolloutDataModule) -> str:
    try:
        return datamodule.pairs[0].domain
    except Exception:  # an unreadable source fails loudly later, where its own error names the file
        return type(datamodule.pairs).__name__


# Lightning's warnings about choices vzero makes on purpose:
_EXPECTED_WARNINGS = (
    # training_step pulls its batch from the iterator, so a batch is played with the weights of its own step;
    r".*`dataloader_iter`",
    # the frozen base model stays in the eval mode from_pretrained leaves it in (it has no dropout, nor has LoRA by
    # default, so sampling and scoring compute the same function);
    r"Found \d+ module\(s\) in eval mode",
    # a checkpoint holds the state after its step's update, which is the state a resumed run continues from.
    r"Using ModelCheckpoint with manual optimization",
)


def main(args: list[str]) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _log_to_console()
    for message in _EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    # From the shell, LightningCLI reads sys.argv itself (its multi-process launchers re-run that command line);
    # from Python, the arguments come in ``args``.
    VZeroCLI(args=None if args == sys.argv[1:] else args)
