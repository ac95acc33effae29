"""``VisionZeroModule``: one Iterative-SPO update per training step, with manual optimisation.

A step pulls a freshly played batch, keeps the active stage's samples (clue samples in the CLUE stage, votes in the
DECISION stage), scores their stored tokens under the reference policy (adapter off), then runs ``ppo_epochs`` passes
of PPO-clip + τ·k3 over micro-batches with gradient accumulation, clipping and one optimizer step per pass. Which
stages train is decided by the :class:`~vzero.callbacks.IterativeSPO` callback, which owns the stage and hands the
step's stages in through :attr:`trained_stages` before each step; the module returns the step's vote counts for the
callback's rule. A non-finite update is skipped (:class:`~vzero.rl.guard.NonFiniteGuard`), and checkpoints hold the
trainable weights only (:mod:`vzero.checkpoint`).

Departure from the reference release: it re-tokenises decoded text and never trains the EOS token; here the sampled
ids, EOS included, are scored. With ``ppo_epochs=1`` the sampling policy's log-probs equal the current ones exactly, so
the old-policy pass is skipped and the ratio is 1.

Precision: under ``trainer.precision`` ``bf16-true`` (``16-true``: fp16 alike) Lightning converts the whole module
to bf16 at setup. LoRA adapters are exempt (:meth:`VisionZeroModule._apply`): they stay fp32, so AdamW's weights and
moments are fp32 while the frozen base is bf16, and checkpoints hold fp32 adapters. A full fine-tune
(``model.vlm.lora: null``) is converted whole: weights, gradients and AdamW's moments are bf16, with no fp32 master
copy; its frozen reference copy, not a submodule, keeps ``model.vlm.dtype``.
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
from vzero.checkpoint import check_finite, check_trainable, rng_state, set_rng_state, trainable_state
from vzero.game import Stage
from vzero.model import DecodingConfig, LoraConfig, ModelConfig, Policy, load_vlm, reference_copy
from vzero.model.inputs import ModelInputs
from vzero.model.load import keep_adapter_dtype
from vzero.model.shard import shard_model
from vzero.rl.guard import NonFiniteGuard
from vzero.rl.loss import LossConfig, batch_counts, normalizer, policy_loss
from vzero.rl.schedule import WarmupCosine, check_resumed_span, schedule_span
from vzero.rl.stage import MODES, Mode, check_mode
from vzero.rollout.batch import TrainBatch
from vzero.rollout.metrics import ROLLOUT_KEYS, rollout_metrics, vote_counts
from vzero.tiny import resolve

log = logging.getLogger(__name__)


class VisionZeroModule(L.LightningModule):
    """Trains a VLM by self-play on "Who is the Spy?".

    Args:
        vlm: which vision-language model to load, and how (LoRA, quantisation, dtype, ...).
        loss: PPO-clip, KL, aggregation, micro-batching and clipping settings.
        mode: ``iterative`` (the paper: the stage callback alternates), ``clue`` (pure self-play: only clue samples
            train), ``decision`` (pure RLVR: only votes train) or ``both`` (every sample, every step).
        optimizer: the optimizer over the trainable parameters.
        schedule: learning-rate schedule over ``trainer.max_steps`` optimizer steps; None keeps the rate constant.
        decoding: how rollouts decode (the decoder, its compilation, prompt reuse, the batch bound).
    """

    def __init__(
        self,
        vlm: ModelConfig = ModelConfig(),
        loss: LossConfig = LossConfig(),
        mode: Mode = "iterative",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        schedule: WarmupCosine | None = lazy_instance(WarmupCosine),
        decoding: DecodingConfig = DecodingConfig(),
    ) -> None:
        super().__init__()
        # Plain dicts as well, as a checkpoint's hyper_parameters hold them (load_from_checkpoint, LightningCLI).
        self.vlm_config = ModelConfig.from_dict(vlm) if isinstance(vlm, dict) else vlm or ModelConfig()
        self.loss_config = LossConfig(**loss) if isinstance(loss, dict) else loss or LossConfig()
        self.mode = check_mode(mode)
        self.optimizer_factory = optimizer
        self.schedule = schedule
        self.decoding = DecodingConfig(**decoding) if isinstance(decoding, dict) else decoding or DecodingConfig()
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold trainable weights only (see on_save_checkpoint)
        self.trained_stages: frozenset[Stage] | None = None
        """The stages whose samples carry gradient in the coming step, handed in before each step by the IterativeSPO
        callback, which owns the stage (:func:`vzero.rl.stage.trained_stages` says what each mode trains)."""
        self.net: torch.nn.Module | None = None
        self.policy: Policy | None = None
        self.rollout_stats = MetricCollection({k.replace("/", "__"): MeanMetric() for k in ROLLOUT_KEYS})
        self.guard = NonFiniteGuard(self.loss_config.max_nonfinite_steps)
        """Skips updates whose loss or gradient norm is not finite, and counts them (checkpointed)."""
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
        # A decoder the precision cannot run is refused before the model loads.
        decoding = self.decoding.under(self.trainer.precision) if self._trainer is not None else self.decoding
        self.net, processor = load_vlm(self.vlm_config, name_or_path=resolve(self.vlm_config.name_or_path))
        reference = None if self.vlm_config.lora is not None else reference_copy(self.net)
        sharded = self._trainer is not None and isinstance(self.trainer.strategy, ModelParallelStrategy)
        if sharded:
            if self.decoding.compile:
                raise ValueError(
                    "model.decoding.compile cannot run under FSDP: its weights are gathered inside each step"
                )
            shard_model(self.net, self.device_mesh["data_parallel"])
        distributed = self._trainer is not None and self.trainer.world_size > 1
        # The policy is a plain attribute, not a submodule: the reference copy must stay out of state_dict.
        self.__dict__["policy"] = Policy(
            self.net,
            processor,
            reference_copy=reference,
            decoding=decoding,
            synced_gpus=distributed,  # ranks whose sequences end early keep stepping, so collectives line up
            cache_vision=not sharded,  # sharded weights are only gathered inside forward and generate
        )

    def _apply(self, fn, recurse=True):
        # Every .to / .half / ... reaches the parameters through here, Lightning's conversion of the whole module at
        # setup (bf16-true) included: LoRA adapters keep their dtype, fp32. A full fine-tune is converted whole.
        if self.vlm_config.lora is not None and self.net is not None:
            fn = keep_adapter_dtype(fn, self.net)
        return super()._apply(fn, recurse)

    def on_fit_start(self) -> None:
        self._place_reference()
        decoder = self.policy.decoder + (", compiled" if self.decoding.compile else "")
        rank_zero_info(f"vzero: rollouts decode with {decoder} (model.decoding.decoder={self.decoding.decoder})")
        if isinstance(self.logger, MLFlowLogger):
            self.logger.experiment.set_tag(self.logger.run_id, "vzero.decoder", self.policy.decoder)

    def on_validation_start(self) -> None:
        self._place_reference()

    def _place_reference(self) -> None:
        if self.policy.reference_copy is not None:  # not a submodule, so Lightning does not move it
            self.policy.reference_copy.to(self.device)

    def configure_optimizers(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters: set model.vlm.lora or train the full model")
        optimizer = self.optimizer_factory(params)
        if self.schedule is None:
            return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)}
        total = schedule_span(self.schedule, self.trainer.max_steps)  # first: builds a lazily built schedule
        return {"optimizer": optimizer, "lr_scheduler": self.schedule.build(optimizer, total)}

    # ---- training --------------------------------------------------------------------------------------------------

    def training_step(self, dataloader_iter: Iterator) -> dict:
        batch: TrainBatch = next(dataloader_iter)[0]
        stages = self.trained_stages
        if stages is None:
            raise RuntimeError("no stages to train were handed in: train with the IterativeSPO callback")
        train = batch.of_stages(stages)
        start = time.perf_counter()
        micro = self._micro_batches(train)
        ref_logps = self._score(micro, reference=True)
        old_logps = self._score(micro, reference=False) if self.loss_config.ppo_epochs > 1 else None
        ref_seconds = time.perf_counter() - start
        start = time.perf_counter()
        update = self._update(train, micro, ref_logps, old_logps) if len(train) else {}
        update_seconds = time.perf_counter() - start

        votes = vote_counts(batch.rollout.transcripts)
        rollout = self._rollout_means(batch, votes)
        logged = {
            **rollout,
            **update,
            **batch.baselines,
            **{f"stage/{s}": float(s in stages) for s in Stage},
            "train/samples": float(len(train)),
            "timing_s/rollout": batch.rollout.seconds,
            "timing_s/ref": ref_seconds,
            "timing_s/update": update_seconds,
        }
        self.log_dict({k: v for k, v in logged.items() if k != "decision/acc"}, on_step=True, batch_size=len(batch))
        self.log("decision/acc", logged["decision/acc"], on_step=True, prog_bar=True, batch_size=len(batch))
        # Raw counts of this rank: the stage callback sums them over ranks, so every rank switches on the same step.
        # The batch itself goes to callbacks that read the games (transcripts).
        return {**{k: float(votes[k]) for k in ("votes", "correct", "na")}, "batch": batch}

    def _rollout_means(self, batch: TrainBatch, votes: dict[str, int]) -> dict[str, float]:
        """Weighted means of the rollout statistics, reduced over ranks by torchmetrics."""
        out = {}
        for name, (value, weight) in rollout_metrics(batch, votes).items():
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
            inputs = self.policy.inputs.pack(
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
        scaler = getattr(getattr(self.trainer, "precision_plugin", None), "scaler", None)  # 16-mixed's GradScaler
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
            grads = [p.grad for p in trainable if p.grad is not None]
            # Under a gradient scaler the gradients are the scaled loss's, and the scaler unscales them inside
            # opt.step() (Lightning's plugin calls its unscale_, which may run once per step). So they are unscaled
            # here for the norm, the guard and the clipping, then scaled back: the scale is a power of two, so both
            # are exact, and the scaler's own unscale_ gives the clipped unscaled gradients.
            scale = scaler.get_scale() if scaler is not None and scaler.is_enabled() else None
            if scale is not None:
                torch._foreach_div_(grads, scale)
            grad_norm = torch.nn.utils.get_total_norm(grads)
            norm_value = _full(grad_norm)  # [] the global norm, before clipping
            overflow = scale is not None and not torch.isfinite(norm_value) and not _all_finite(grads)
            epochs = f" (PPO epoch {epoch + 1} of {cfg.ppo_epochs})" if cfg.ppo_epochs > 1 else ""
            where = f"step {self.trainer.global_step}{epochs}"
            reduce, announce = self.trainer.strategy.reduce, self.trainer.is_global_zero
            if self.guard.skip(loss_sum, norm_value, where, reduce, announce, scale if overflow else None):
                opt.zero_grad(set_to_none=True)  # and no scheduler step: the rate follows the steps taken
                continue
            # The two halves of clip_grad_norm_, with the finiteness check between. An overflow goes to the scaler
            # as it is, and the scaler drops its step.
            if cfg.max_grad_norm > 0 and not overflow:
                torch.nn.utils.clip_grads_with_norm_(trainable, cfg.max_grad_norm, grad_norm)
            if scale is not None:
                torch._foreach_mul_(grads, scale)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
        return {
            **totals,
            "grad_norm": float(norm_value),  # the last pass's
            "lr": sched.get_last_lr()[0],
            "train/skipped_nonfinite": float(self.guard.skipped),
            **({"train/scaler_overflows": float(self.guard.overflows)} if scaler is not None else {}),
        }

    def validation_step(self, batch, batch_idx) -> None:
        """Nothing: evaluation is the WinRateEvaluation callback's, at the end of the validation epoch."""

    # ---- checkpoints -----------------------------------------------------------------------------------------------

    def hyperparameters(self) -> dict:
        """The constructor's arguments in plain types (what a checkpoint's ``hyper_parameters`` hold): the model
        settings with the base model as the user named it (``tiny``, a hub id, a folder; never a cache folder), the
        loss, the mode and the decoding settings. ``vzero export`` rebuilds the trained model from them alone (older
        checkpoints' names are read by :func:`vzero.cli.renamed.upgrade_settings`)."""
        return {
            "vlm": asdict(self.vlm_config),
            "loss": asdict(self.loss_config),
            "mode": self.mode,
            "decoding": asdict(self.decoding),
        }

    def record(self) -> dict:
        """What a checkpoint says about its run (its ``vzero`` entry): vzero's version, the learning-rate schedule's
        span, and the MLflow run it logs to, which a resumed run keeps."""
        attached = self._trainer is not None
        return {
            "version": __version__,
            "schedule_steps": schedule_span(self.schedule, self.trainer.max_steps) if attached else None,
            "mlflow_run_id": getattr(self.logger, "run_id", None) if attached else None,
        }

    def state_dict(self, *args, **kwargs) -> dict:
        """The trainable weights only (the adapter, or every weight of a full fine-tune): what every checkpoint holds,
        a file or a sharded folder. A sharded save and load ask the module for its state dict, so a resume from a
        sharded checkpoint reads back those weights alone; the frozen base is loaded again from its name."""
        state = super().state_dict(*args, **kwargs)
        return state if self.net is None else trainable_state(self.net, state)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["hyper_parameters"] = self.hyperparameters()
        checkpoint["vzero"] = self.record()
        step = self.trainer.global_step if self._trainer is not None else None
        check_finite(
            checkpoint["state_dict"], f"refusing to write a checkpoint at step {step}", self.device, self._reduce
        )
        # The random state: dropout draws from it, so a resumed run restores it before its first step.
        checkpoint["VisionZeroModule"] = {**self.guard.state_dict(), "rng": rng_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.schedule is not None and self._trainer is not None and self.trainer.state.fn == "fit":
            explicit = self.schedule.steps if self.schedule.fixed() else None
            saved = (checkpoint.get("vzero") or {}).get("schedule_steps")
            check_resumed_span(saved, explicit, self.trainer.max_steps)
        # A sharded checkpoint's weights are read by the strategy, into the model, before this hook: what it passes
        # here is the rest (the folder's meta.pt), and the weights are checked where they now are.
        weights = checkpoint["state_dict"] if "state_dict" in checkpoint else self.state_dict()
        check_trainable(self.net, weights)
        step = checkpoint.get("global_step")
        check_finite(weights, f"refusing to load the checkpoint of step {step}", self.device, self._reduce)
        state = checkpoint.get("VisionZeroModule", {})  # absent from checkpoints of older versions
        self.guard.load_state_dict(state)
        self._resume_rng = state.get("rng")

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # The random state is restored here rather than on load: between loading and the first step Lightning draws
        # from the global generator (the data loader's base seed), which the uninterrupted run drew long before.
        if self._resume_rng is not None:
            set_rng_state(self._resume_rng)
            self._resume_rng = None

    @property
    def _reduce(self):
        """Sums a tensor over ranks (None without a trainer: one process)."""
        return self.trainer.strategy.reduce if self._trainer is not None else None


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether no element of ``tensors`` is NaN or infinite (what a gradient scaler checks before it steps)."""
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _full(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's whole value (FSDP2's gradient norm: a collective, so every rank calls it); any other tensor as is."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


__all__ = ["LoraConfig", "MODES", "VisionZeroModule"]
