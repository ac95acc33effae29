"""``VisionZeroModule``: one Iterative-SPO update per training step, with manual optimisation.

A step pulls a freshly played batch, keeps the active stage's samples (clue samples in the CLUE stage, votes in the
DECISION stage), scores their stored tokens under the reference policy (adapter off), then runs ``ppo_epochs`` passes
of PPO-clip + τ·k3 over micro-batches with gradient accumulation, clipping and one optimizer step per pass. The stage is
decided by the :class:`~vzero.callbacks.IterativeSPO` callback, which hands it in through :attr:`stage` before each
step; the module only reads it, and returns the step's vote counts for the callback's rule.

Departure from the reference release: it re-tokenises decoded text and never trains the EOS token; here the sampled
ids, EOS included, are scored. With ``ppo_epochs=1`` the sampling policy's log-probs equal the current ones exactly, so
the old-policy pass is skipped and the ratio is 1.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict

import lightning as L
import torch
from jsonargparse import lazy_instance
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.strategies import ModelParallelStrategy, SingleDeviceStrategy
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MeanMetric, MetricCollection

from vzero import __version__
from vzero.checkpoint import rng_state, set_rng_state
from vzero.game import Stage
from vzero.model import LoraSettings, ModelConfig, Policy, load_vlm, reference_copy
from vzero.model.decode import DECODERS, Decoder
from vzero.model.inputs import ModelInputs
from vzero.model.shard import shard_model
from vzero.rl.loss import LossConfig, batch_counts, normalizer, policy_loss
from vzero.rl.schedule import WarmupCosine
from vzero.rl.stage import MODES, Mode, trained_stages
from vzero.rollout.batch import TrainBatch
from vzero.rollout.metrics import ROLLOUT_KEYS, rollout_metrics, vote_counts
from vzero.tiny import resolve

log = logging.getLogger(__name__)


class VisionZeroModule(L.LightningModule):
    """Trains a VLM by self-play on "Who is the Spy?".

    Args:
        model: which model to load, and how (LoRA, quantisation, dtype, ...).
        loss: PPO-clip, KL, aggregation, micro-batching and clipping settings.
        mode: ``iterative`` (the paper: the stage callback alternates), ``clue`` (pure self-play: only clue samples
            train), ``decision`` (pure RLVR: only votes train) or ``both`` (every sample, every step).
        optimizer: the optimizer over the trainable parameters.
        schedule: learning-rate schedule over ``trainer.max_steps`` optimizer steps; None keeps the rate constant.
        max_batch_size: the most sequences per ``generate`` call.
        decoder: how rollouts decode: ``vzero`` (vzero's own loop: prefill once, a static KV cache, sampling on the
            device; the same tokens as HF ``generate``; in lock-step across ranks), ``generate`` (HF ``generate``), or
            ``auto`` (``vzero`` where the model states its own positions, else ``generate``). The choice is logged
            (MLflow tag ``vzero.decoder``).
        compile_decode: capture vzero's decode step with ``torch.compile`` as one graph, replayed as a CUDA graph on
            a GPU (one launch per step); compiling takes a while on the first rollouts, so it pays on long runs of
            large models. Not under FSDP (the weights are gathered inside each step).
        reuse_prompts_gb: GB of prompt keys and values a rollout keeps, so that a prompt repeating an earlier turn's
            start (picture, rules, clues so far) computes only the rest; 0 turns it off (see ``Policy``).
    """

    def __init__(
        self,
        model: ModelConfig = ModelConfig(),
        loss: LossConfig = LossConfig(),
        mode: Mode = "iterative",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        schedule: WarmupCosine | None = lazy_instance(WarmupCosine),
        max_batch_size: int = 64,
        decoder: Decoder = "auto",
        compile_decode: bool = False,
        reuse_prompts_gb: float = 4.0,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"model.mode must be one of {MODES}, got {mode!r}")
        # Plain dicts as well, as a checkpoint's hyper_parameters hold them (load_from_checkpoint, LightningCLI).
        self.model_config = ModelConfig.from_dict(model) if isinstance(model, dict) else model or ModelConfig()
        self.loss_config = LossConfig(**loss) if isinstance(loss, dict) else loss or LossConfig()
        self.mode = mode
        self.optimizer_factory = optimizer
        self.schedule = schedule
        self.max_batch_size = max_batch_size
        if decoder not in DECODERS:
            raise ValueError(f"model.decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
        self.decoder = decoder
        self.compile_decode = compile_decode
        if reuse_prompts_gb < 0:
            raise ValueError(f"model.reuse_prompts_gb must be >= 0, got {reuse_prompts_gb}")
        self.reuse_prompts_gb = reuse_prompts_gb
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold trainable weights only (see on_save_checkpoint)
        self.stage = Stage.DECISION
        """The stage of the switch rule, written by the IterativeSPO callback before each step (its one channel in;
        the callback owns and checkpoints it). Only ``iterative`` mode reads it."""
        self.net: torch.nn.Module | None = None
        self.policy: Policy | None = None
        self.rollout_stats = MetricCollection({k.replace("/", "__"): MeanMetric() for k in ROLLOUT_KEYS})
        self.skipped_nonfinite = 0
        """Updates skipped because their loss or gradient norm was not finite, over the whole run (checkpointed)."""
        self.nonfinite_streak = 0
        """Of those, how many in a row up to now."""
        self._resume_rng: dict | None = None

    # ---- model -----------------------------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        # Refused before the model loads: the policy calls the model itself, not through a DDP (or FSDP1, DeepSpeed)
        # wrapper's forward, so such a wrapper would never synchronise gradients and the ranks would drift apart.
        strategy = self.trainer.strategy
        if not isinstance(strategy, (SingleDeviceStrategy, ModelParallelStrategy)):
            raise ValueError(
                f"trainer.strategy {type(strategy).__name__} is not supported: the policy calls the model directly, "
                "so its wrapper would never synchronise the ranks' gradients. Use one device (the default strategy, "
                "trainer.devices: 1) or, on several, trainer.strategy "
                "lightning.pytorch.strategies.ModelParallelStrategy (FSDP2; see configs/qwen2.5-vl-7b.yaml)"
            )

    def configure_model(self) -> None:
        if self.net is not None:
            return
        self.net, processor = load_vlm(self.model_config, name_or_path=resolve(self.model_config.name_or_path))
        reference = None if self.model_config.lora is not None else reference_copy(self.net)
        sharded = self._trainer is not None and isinstance(self.trainer.strategy, ModelParallelStrategy)
        if sharded:
            if self.compile_decode:
                raise ValueError(
                    "model.compile_decode cannot run under FSDP: its weights are gathered inside each step"
                )
            shard_model(self.net, self.device_mesh["data_parallel"])
        distributed = self._trainer is not None and self.trainer.world_size > 1
        # The policy is a plain attribute, not a submodule: the reference copy must stay out of state_dict.
        self.__dict__["policy"] = Policy(
            self.net,
            processor,
            reference=reference,
            max_batch_size=self.max_batch_size,
            synced_gpus=distributed,  # ranks whose sequences end early keep stepping, so collectives line up
            cache_vision=not sharded,  # sharded weights are only gathered inside forward and generate
            decoder=self.decoder,
            compile_decode=self.compile_decode,
            reuse_prompts_gb=self.reuse_prompts_gb,
        )

    def on_fit_start(self) -> None:
        self._place_reference()
        decoder = self.policy.decoder + (", compiled" if self.compile_decode else "")
        rank_zero_info(f"vzero: rollouts decode with {decoder} (model.decoder={self.decoder})")
        if isinstance(self.logger, MLFlowLogger):
            self.logger.experiment.set_tag(self.logger.run_id, "vzero.decoder", self.policy.decoder)

    def on_validation_start(self) -> None:
        self._place_reference()

    def _place_reference(self) -> None:
        if self.policy.reference_model is not None:  # not a submodule, so Lightning does not move it
            self.policy.reference_model.to(self.device)

    def configure_optimizers(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters: set model.lora or train the full model")
        optimizer = self.optimizer_factory(params)
        if self.schedule is None:
            return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)}
        total = self.schedule_steps  # first: a lazily built schedule must be built before its methods are looked up
        return {"optimizer": optimizer, "lr_scheduler": self.schedule.build(optimizer, total)}

    @property
    def schedule_steps(self) -> int | None:
        """The optimizer steps the schedule spans: ``model.schedule.steps``, else ``trainer.max_steps``."""
        if self.schedule is None:
            return None
        if self.schedule.fixed():
            return self.schedule.steps
        if not self.trainer.max_steps or self.trainer.max_steps < 0:
            raise ValueError("model.schedule needs trainer.max_steps (the number of optimizer steps) to be set")
        return self.trainer.max_steps

    # ---- training --------------------------------------------------------------------------------------------------

    @property
    def trained_stages(self) -> frozenset[Stage]:
        """The stages whose samples carry gradient in this step."""
        return trained_stages(self.mode, self.stage)

    def training_step(self, dataloader_iter: Iterator) -> dict:
        batch: TrainBatch = next(dataloader_iter)[0]
        stages = self.trained_stages
        train = batch.of_stages(stages)
        start = time.perf_counter()
        micro = self._micro_batches(train)
        ref_logps = self._score(micro, reference=True)
        old_logps = self._score(micro, reference=False) if self.loss_config.ppo_epochs > 1 else None
        ref_seconds = time.perf_counter() - start
        start = time.perf_counter()
        update = self._update(train, micro, ref_logps, old_logps) if len(train) else {}
        update_seconds = time.perf_counter() - start

        rollout = self._rollout_means(batch)
        logged = {
            **rollout,
            **update,
            **batch.baselines,
            **{f"stage/{s}": float(s in stages) for s in Stage},
            "train/samples": float(len(train)),
            "timing_s/rollout": batch.timings.get("rollout", 0.0),
            "timing_s/ref": ref_seconds,
            "timing_s/update": update_seconds,
        }
        self.log_dict({k: v for k, v in logged.items() if k != "decision/acc"}, on_step=True, batch_size=len(batch))
        self.log("decision/acc", logged["decision/acc"], on_step=True, prog_bar=True, batch_size=len(batch))
        votes = vote_counts(batch.transcripts)
        # Raw counts of this rank: the stage callback sums them over ranks, so every rank switches on the same step.
        # The batch itself goes to callbacks that read the games (transcripts).
        return {**{k: float(votes[k]) for k in ("votes", "correct", "na")}, "batch": batch}

    def _rollout_means(self, batch: TrainBatch) -> dict[str, float]:
        """Weighted means of the rollout statistics, reduced over ranks by torchmetrics."""
        out = {}
        for name, (value, weight) in rollout_metrics(batch).items():
            metric = self.rollout_stats[name.replace("/", "__")]
            metric.update(torch.tensor(value, device=self.device), torch.tensor(weight, device=self.device))
            out[name] = float(torch.nan_to_num(metric.compute()))  # NaN when no rank had any (e.g. no votes)
            metric.reset()
        return out

    def _micro_batches(self, batch: TrainBatch) -> list[tuple[slice, ModelInputs, torch.Tensor]]:
        """The batch's stored tokens, packed once per step into micro-batches that every pass reuses, each with its
        rows' sampling temperatures ([b]), at which every pass scores them."""
        size = self.loss_config.micro_batch_size
        out = []
        for lo in range(0, len(batch), size):
            samples = batch.samples[lo : lo + size]
            inputs = self.policy.pack(
                [s.prompt_ids for s in samples], [s.picture for s in samples], [s.completion_ids for s in samples]
            )
            out.append((slice(lo, lo + len(samples)), inputs, torch.tensor([s.temperature for s in samples])))
        return out

    @torch.no_grad()
    def _score(self, micro: list[tuple[slice, ModelInputs, torch.Tensor]], reference: bool) -> list[torch.Tensor]:
        """Log-probs of the stored tokens, per micro-batch: [b, C] each."""
        with self.policy.reference() if reference else contextlib.nullcontext():
            return [self.policy.logprobs(inputs, temps) for _, inputs, temps in micro]

    def _update(self, batch: TrainBatch, micro, ref_logps, old_logps) -> dict[str, float]:
        """``ppo_epochs`` optimizer steps over the batch, accumulating micro-batch gradients within each."""
        cfg = self.loss_config
        opt, sched = self.optimizers(), self.lr_schedulers()
        # One denominator for the whole batch, so the accumulated micro-batch losses equal the full-batch loss; the
        # counts are summed over ranks, whose gradients are averaged, so every rank's tokens weigh the same.
        lengths = torch.tensor([len(s.completion_ids) for s in batch.samples])  # [N]
        counts = self.trainer.strategy.reduce(batch_counts(lengths).to(self.device), reduce_op="sum")  # [2]
        norm = normalizer(lengths, cfg.aggregation, counts, self.trainer.world_size).to(self.device)
        totals = {"loss/pg": 0.0, "loss/kl": 0.0, "loss/clip_frac": 0.0}
        trainable = [p for p in self.net.parameters() if p.requires_grad]
        for epoch in range(cfg.ppo_epochs):
            loss_sum = torch.zeros((), device=self.device)
            for k, (rows, inputs, temps) in enumerate(micro):
                logp = self.policy.logprobs(inputs, temps)  # [b, C]
                mask = inputs.completion_mask.to(logp.device)  # [b, C]
                old = logp.detach() if old_logps is None else old_logps[k]  # [b, C]
                adv = batch.advantage[rows].to(logp.device)  # [b]
                loss, parts = policy_loss(logp, old, ref_logps[k], adv, mask, norm, cfg)
                self.manual_backward(loss)
                loss_sum += loss.detach()
                for name in ("pg", "kl", "clip_frac"):
                    totals[f"loss/{name}"] += parts[name].item() / cfg.ppo_epochs
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in trainable if p.grad is not None])
            norm_value = _full(grad_norm)  # [] the global norm, before clipping
            if self._skip_nonfinite(loss_sum, norm_value, epoch):
                opt.zero_grad(set_to_none=True)  # and no scheduler step: the rate follows the steps taken
                continue
            if cfg.max_grad_norm > 0:  # the two halves of clip_grad_norm_, with the finiteness check between
                torch.nn.utils.clip_grads_with_norm_(trainable, cfg.max_grad_norm, grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
        return {
            **totals,
            "grad_norm": float(norm_value),  # the last pass's
            "lr": sched.get_last_lr()[0],
            "train/skipped_nonfinite": float(self.skipped_nonfinite),
        }

    def _skip_nonfinite(self, loss: torch.Tensor, grad_norm: torch.Tensor, epoch: int) -> bool:
        """Whether this update must be skipped because its loss or its gradient norm is NaN or infinite on some rank
        (the flags are summed over ranks, so every rank decides alike). A skipped update is counted and logged with its
        cause and step; the ``loss.max_nonfinite_steps``-th in a row raises ``FloatingPointError`` naming the step.

        Args:
            loss: [] the summed loss of this pass; grad_norm: [] the global gradient norm before clipping.
        """
        flags = torch.stack([~torch.isfinite(loss), ~torch.isfinite(grad_norm.to(loss.device))]).float()  # [2]
        flags = self.trainer.strategy.reduce(flags, reduce_op="sum")  # [2]
        if not flags.any():
            self.nonfinite_streak = 0
            return False
        self.skipped_nonfinite += 1
        self.nonfinite_streak += 1
        cause = "the loss" if flags[0] else "the gradient norm"
        epochs = self.loss_config.ppo_epochs
        where = f"step {self.trainer.global_step}" + (f" (PPO epoch {epoch + 1} of {epochs})" if epochs > 1 else "")
        limit = self.loss_config.max_nonfinite_steps
        if self.nonfinite_streak >= limit:
            raise FloatingPointError(
                f"{cause} was not finite at {where}: {self.nonfinite_streak} skipped update(s) in a row reach "
                f"loss.max_nonfinite_steps={limit}, so training stops. The weights, and every checkpoint, are those "
                "from before the first skipped update"
            )
        if self.trainer.is_global_zero:
            log.warning(
                "%s was not finite at %s: update skipped (%d in a row, %d in this run; loss.max_nonfinite_steps=%d)",
                cause,
                where,
                self.nonfinite_streak,
                self.skipped_nonfinite,
                limit,
            )
        return True

    def validation_step(self, batch, batch_idx) -> None:
        """Nothing: evaluation is the WinRateEvaluation callback's, at the end of the validation epoch."""

    # ---- checkpoints -----------------------------------------------------------------------------------------------

    def hyperparameters(self) -> dict:
        """The constructor's arguments in plain types (what a checkpoint's ``hyper_parameters`` hold): the model
        settings with the base model as the user named it (``tiny``, a hub id, a folder; never a cache folder), the
        loss, the mode and the batch bound. ``vzero export`` rebuilds the trained model from them alone."""
        return {
            "model": asdict(self.model_config),
            "loss": asdict(self.loss_config),
            "mode": self.mode,
            "max_batch_size": self.max_batch_size,
            "decoder": self.decoder,
            "compile_decode": self.compile_decode,
            "reuse_prompts_gb": self.reuse_prompts_gb,
        }

    def record(self) -> dict:
        """What a checkpoint says about its run (its ``vzero`` entry): vzero's version, the learning-rate schedule's
        span, and the MLflow run it logs to, which a resumed run keeps."""
        return {
            "version": __version__,
            "schedule_steps": self.schedule_steps if self._trainer is not None else None,
            "mlflow_run_id": getattr(self.logger, "run_id", None) if self._trainer is not None else None,
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["hyper_parameters"] = self.hyperparameters()
        checkpoint["vzero"] = self.record()
        # Only what training changes: the adapter (or every weight in a full fine-tune), never the frozen base.
        trainable = {f"net.{n}" for n, p in self.net.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        step = self.trainer.global_step if self._trainer is not None else None
        self._check_finite(checkpoint["state_dict"], f"refusing to write a checkpoint at step {step}")
        checkpoint["VisionZeroModule"] = {
            "skipped_nonfinite": self.skipped_nonfinite,
            "nonfinite_streak": self.nonfinite_streak,
            "rng": rng_state(),  # dropout draws from it: a resumed run restores it before its first step
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._check_schedule((checkpoint.get("vzero") or {}).get("schedule_steps"))
        trainable = {f"net.{n}" for n, p in self.net.named_parameters() if p.requires_grad}
        missing = trainable - set(checkpoint["state_dict"])
        if missing:
            raise KeyError(
                f"the checkpoint lacks {len(missing)} trainable weights (e.g. {sorted(missing)[0]}): "
                "was it written with a different model.lora setting?"
            )
        self._check_finite(
            checkpoint["state_dict"], f"refusing to load the checkpoint of step {checkpoint.get('global_step')}"
        )
        state = checkpoint.get("VisionZeroModule", {})  # absent from checkpoints of older versions
        self.skipped_nonfinite = state.get("skipped_nonfinite", 0)
        self.nonfinite_streak = state.get("nonfinite_streak", 0)
        self._resume_rng = state.get("rng")

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # The random state is restored here rather than on load: between loading and the first step Lightning draws
        # from the global generator (the data loader's base seed), which the uninterrupted run drew long before.
        if self._resume_rng is not None:
            set_rng_state(self._resume_rng)
            self._resume_rng = None

    def _check_finite(self, state_dict: dict[str, torch.Tensor], action: str) -> None:
        """Raise ``FloatingPointError`` if any tensor of ``state_dict`` holds a NaN or an infinity on any rank."""
        bad = sorted(k for k, v in state_dict.items() if not torch.isfinite(_local(v)).all())
        count = torch.tensor(float(len(bad)), device=self.device)
        if self._trainer is not None:
            count = self.trainer.strategy.reduce(count, reduce_op="sum")  # every rank raises, or none
        if count:
            example = f" (e.g. {bad[0]})" if bad else " (on another rank)"
            raise FloatingPointError(f"{action}: {int(count)} trainable tensor(s) hold NaN or inf{example}")

    def _check_schedule(self, saved: int | None) -> None:
        """A resumed run keeps its learning-rate schedule: a different span would jump the rate mid-run."""
        if saved is None or self.schedule is None or self._trainer is None or self.trainer.state.fn != "fit":
            return
        if not self.schedule.fixed() and self.schedule_steps != saved:  # an explicit span is the user's choice
            raise ValueError(
                f"the checkpoint's learning-rate schedule spans {saved} steps, but this run's would span "
                f"{self.schedule_steps} (trainer.max_steps={self.trainer.max_steps}): resuming would jump the rate. "
                f"Set model.schedule.steps={saved} to keep the schedule (later steps stay at its final rate), or "
                f"model.schedule.steps={self.schedule_steps} to re-stretch it on purpose"
            )


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (no collective); any other tensor as is."""
    return t.to_local() if hasattr(t, "to_local") else t


def _full(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's whole value (FSDP2's gradient norm: a collective, so every rank calls it); any other tensor as is."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


__all__ = ["LoraSettings", "MODES", "VisionZeroModule"]
