"""``vzero fit`` and ``vzero validate``: a LightningCLI over :class:`VisionZeroModule` and the rollout data module.

Every key of a YAML config is a parameter of a class signature; help text comes from the docstrings. Besides
``model``, ``data`` and ``trainer`` the config has:

- ``stage``: the :class:`~vzero.rl.stage.StageConfig` of the :class:`~vzero.callbacks.IterativeSPO` callback (always
  present: it owns the stage);
- ``eval``: the :class:`~vzero.callbacks.WinRateEvaluation` callback;
- ``checkpoint``: the ``ModelCheckpoint`` (adapter weights, optimizer, scheduler, callback and data state); each run
  writes into its own folder ``<checkpoint.dirpath>/<run name>-<run id>``;
- ``transcripts``: the :class:`~vzero.callbacks.TrainingTranscripts` callback (off unless ``every_n_steps`` is set);
- ``experiment``, ``run_name`` and ``tracking_uri``: where the run lands in MLflow.

Keys renamed since (``phases``, ``model.model``, the flat decoding keys) still work and say what to write instead
(:mod:`vzero.cli.renamed`).

MLflow is the default logger: a local store under ``./mlruns`` (SQLite, with artifacts beside it), or any tracking
server given by ``tracking_uri``. A run is tagged with its mode, domain, model, vzero version and git commit; its params
are the settings a researcher sets (every vzero key, and the trainer and checkpoint keys that differ from Lightning's
defaults), its artifacts the resolved config and the game transcripts.

One run, one record: ``--ckpt_path`` (a file, the folder of a sharded checkpoint, or ``last`` for the newest
``last.ckpt`` of the experiment, or of ``run_name`` when set) continues the checkpoint's MLflow run, writes into its
checkpoint folder, and keeps its learning-rate schedule. A sharded checkpoint (FSDP2) carries its run record in its
``meta.pt``, read and verified before anything starts as a file's is.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import yaml
from jsonargparse import lazy_instance, set_parsing_settings
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

from vzero import __version__
from vzero.callbacks import GameProgressBar, IterativeSPO, TrainingTranscripts, WinRateEvaluation
from vzero.checkpoint import CheckpointError, VerifiedCheckpointIO
from vzero.cli.renamed import add_renamed, flatten, fold_renamed
from vzero.cli.runs import check_schedule, read_record, resolve_checkpoint, run_folder
from vzero.module import VisionZeroModule
from vzero.rl.stage import StageConfig
from vzero.rollout import GameRolloutDataModule

log = logging.getLogger(__name__)

MLRUNS = Path("mlruns")


def local_store(root: Path = MLRUNS) -> tuple[str, str]:
    """The local MLflow store: ``root/mlflow.db`` for runs and metrics, ``root/artifacts`` for files."""
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


def mlflow_logger(
    experiment: str,
    run_name: str,
    tags: dict[str, str],
    tracking_uri: str | None = None,
    run_id: str | None = None,
    root: Path = MLRUNS,
) -> MLFlowLogger:
    """A logger on ``tracking_uri`` (the local store when None); with ``run_id``, one that continues that run."""
    artifact_location = None
    if tracking_uri is None:
        tracking_uri, artifact_location = local_store(root)
    return MLFlowLogger(
        experiment_name=experiment,
        run_name=run_name,
        tracking_uri=tracking_uri,
        artifact_location=artifact_location,
        tags=tags,
        run_id=run_id,
    )


_LIGHTNING_GROUPS = ("trainer.", "checkpoint.")
_NOT_SETTINGS = {"config", "ckpt_path", "weights_only", "print_config"}


def run_params(config: dict, defaults: dict) -> dict[str, str]:
    """The params a run logs: every vzero setting, and the Lightning ones (``trainer.*``, ``checkpoint.*``) that differ
    from their defaults, each value written as YAML writes it (``null``, ``true``, ``[240, 160]``), never as a Python
    repr."""
    flat, base = flatten(config), flatten(defaults)
    out = {}
    for key, value in flat.items():
        if key in _NOT_SETTINGS or (key.startswith(_LIGHTNING_GROUPS) and base.get(key, object()) == value):
            continue
        out[key] = _plain(value)
    return out


def _plain(value: object) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except TypeError:
        return str(value)


def run_tags(base: dict[str, str], config_files: list[str]) -> dict[str, str]:
    """``base`` plus the vzero version, the git commit of vzero's source when it is a checkout, and the config files."""
    tags = {**base, "vzero.version": __version__}
    commit = git_commit()
    if commit:
        tags["vzero.commit"] = commit
    if config_files:
        tags["config"] = ", ".join(config_files)
    return tags


def git_commit() -> str | None:
    """The commit of the checkout vzero runs from (with ``-dirty`` when it has changes), or None."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head or None


class LogConfigToMLflow(SaveConfigCallback):
    """Logs the run's settings as params (see :func:`run_params`) and the resolved YAML as an artifact, once per run:
    a resumed run keeps the params it started with."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        for logger in trainer.loggers:
            if not isinstance(logger, MLFlowLogger):
                continue
            if logger.experiment.get_run(logger.run_id).data.params:
                continue  # a resumed run: its params were logged when it started
            defaults = self.parser.get_defaults().as_dict()
            logger.log_hyperparams(run_params(self.config.clone().as_dict(), defaults))
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "config.yaml"
                path.write_text(self.parser.dump(self.config, skip_none=False))
                logger.experiment.log_artifact(logger.run_id, str(path))


class VZeroCLI(LightningCLI):
    """The training command line."""

    def __init__(self, args=None, run: bool = True) -> None:
        self.resumed: tuple[Path, dict] | None = None
        """The checkpoint a fit resumes from, and its record (see :meth:`VisionZeroModule.record`)."""
        super().__init__(
            VisionZeroModule,
            GameRolloutDataModule,
            save_config_callback=LogConfigToMLflow,
            save_config_kwargs={"save_to_log_dir": False, "overwrite": True},
            trainer_defaults={
                "log_every_n_steps": 1,
                "num_sanity_val_steps": 0,
                "plugins": lazy_instance(VerifiedCheckpointIO),  # atomic writes, verified loads
            },
            parser_kwargs={
                "description": "vzero: train a VLM by self-play on 'Who is the Spy?'",
                "allow_abbrev": False,  # `--trainer.max_step 5` is an error, not max_steps
            },
            auto_configure_optimizers=False,  # the optimizer is model.optimizer, the schedule model.schedule
            args=args,
            run=run,
        )

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """vzero's groups first, Lightning's trainer last, so ``--help`` opens with the settings that matter."""
        parser.add_lightning_class_args(self._model_class, "model", subclass_mode=self.subclass_mode_model)
        parser.add_lightning_class_args(self._datamodule_class, "data", subclass_mode=self.subclass_mode_data)
        parser.add_class_arguments(StageConfig, "stage", help="The stage switch of Iterative-SPO.")
        parser.add_lightning_class_args(WinRateEvaluation, "eval")
        parser.add_lightning_class_args(TrainingTranscripts, "transcripts")
        parser.add_argument("--experiment", default="vzero", help="MLflow experiment name.")
        parser.add_argument("--run_name", default=None, help="MLflow run name (default: mode and time).")
        parser.add_argument(
            "--tracking_uri", default=None, help="MLflow tracking URI, e.g. http://host:5000 (default: ./mlruns)."
        )
        add_renamed(parser)
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.dirpath": "checkpoints/vzero",
                "checkpoint.save_last": True,
                "checkpoint.every_n_train_steps": 10,
                "checkpoint.save_top_k": 0,
            }
        )
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({"trainer." + k: v for k, v in self.trainer_defaults.items() if k != "callbacks"})

    def instantiate_classes(self) -> None:
        """A setting out of range is a one-line error naming the key, not a traceback."""
        try:
            super().instantiate_classes()
        except ValueError as error:
            print(f"vzero {self.subcommand}: error: {error}", file=sys.stderr)
            sys.exit(2)

    def _instantiate_trainer(self, config: dict, callbacks: list):
        callbacks = [*callbacks, IterativeSPO(self._get(self.config_init, "stage"))]
        if config.get("enable_progress_bar") is not False:  # off e.g. on a cluster, where logs are files
            callbacks = [*callbacks, GameProgressBar()]
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        run_name = cfg.run_name or f"{cfg.model.mode}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_id = None
        if config.get("logger") in (None, True):
            tags = {
                "mode": cfg.model.mode,
                "domain": _domain(self.datamodule),
                "model": cfg.model.vlm.name_or_path if cfg.model.vlm else "tiny",
                "command": self.subcommand,
            }
            files = [str(f) for f in cfg.get("config") or []]
            resumed_run = self.resumed[1].get("mlflow_run_id") if self.resumed else None
            logger = mlflow_logger(cfg.experiment, run_name, run_tags(tags, files), cfg.tracking_uri, resumed_run)
            config["logger"] = logger
            run_id = logger.run_id
            if resumed_run:
                log.info("continuing MLflow run %s", run_id)
        for callback in callbacks:
            if isinstance(callback, ModelCheckpoint) and self.subcommand == "fit":
                folder = (
                    self.resumed[0].parent if self.resumed else run_folder(cfg.checkpoint.dirpath, run_name, run_id)
                )
                callback.dirpath = str(folder.resolve())
                log.info("checkpoints: %s", folder)
        return super()._instantiate_trainer(config, callbacks)

    def before_fit(self) -> None:
        self._check_evaluation("fit")

    def before_validate(self) -> None:
        self._check_evaluation("validate")

    def _check_evaluation(self, stage: str) -> None:
        """An evaluation that cannot draw its pairs is a one-line error naming ``eval.pairs`` before anything loads
        (the callback's ``setup`` checks the same for runs built in Python)."""
        for callback in self.trainer.callbacks:
            if isinstance(callback, WinRateEvaluation) and callback.evaluates(stage):
                try:
                    callback.evaluation_source(self.datamodule.pairs)
                except ValueError as error:
                    print(f"vzero {stage}: error: {error}", file=sys.stderr)
                    sys.exit(2)

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        fold_renamed(cfg)
        if self.subcommand == "fit" and cfg.get("ckpt_path"):
            path = resolve_checkpoint(cfg.ckpt_path, cfg.checkpoint.dirpath, cfg.run_name)
            cfg.ckpt_path = str(path)
            try:
                self.resumed = (path, read_record(path))
            except CheckpointError as error:
                raise SystemExit(f"vzero fit: error: ckpt_path: {error}") from None
            check_schedule(self.resumed[1], cfg)
            log.info("resuming from %s", path)


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes, not the stream it was when the handler was made."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _) -> None:
        pass


def _log_to_console() -> None:
    """Stage switches, win rates and the tiny model's one-time build are worth seeing as they happen."""
    logger = logging.getLogger("vzero")
    if not logger.handlers:
        handler = _Stderr()
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
    # `vzero play` hands LightningCLI the options it does not read itself, while sys.argv holds the whole command;
    r"LightningCLI's args parameter is intended",
    # deprecations inside Lightning and peft, not in anything vzero calls:
    r".*isinstance\(treespec, LeafSpec\)",
    r".*`is_gradient_checkpointing` is deprecated",
)
_QUIET_LOGGERS = (
    "bitsandbytes.backends.cpu.ops",  # a missing optional kernel for 4-bit on CPU, a path vzero does not take
    "mlflow.store.db.utils",  # "Creating initial MLflow database tables..."
)


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def check_config_files(args: list[str]) -> None:
    """A YAML file that does not parse is an error naming the file (jsonargparse would name ``<unicode string>``)."""
    for i, arg in enumerate(args):
        path = args[i + 1] if arg == "--config" and i + 1 < len(args) else arg.partition("=")[2]
        if not (arg == "--config" or arg.startswith("--config=")) or not path:
            continue
        try:
            yaml.safe_load(Path(path).read_text())
        except OSError as error:
            raise SystemExit(f"vzero: error: --config {path}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise SystemExit(f"vzero: error: {path} is not valid YAML: {error}") from None


def quiet() -> None:
    """Silence what vzero does on purpose or never uses; keep vzero's own progress lines."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _log_to_console()
    for message in _EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoTips())
    set_parsing_settings(docstring_parse_attribute_docstrings=True)  # dataclass fields' docstrings in --help


def main(args: list[str]) -> None:
    quiet()
    check_config_files(args)
    # From the shell, LightningCLI reads sys.argv itself (its multi-process launchers re-run that command line);
    # from Python, the arguments come in ``args``.
    VZeroCLI(args=None if args == sys.argv[1:] else args)
