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

import lightning as L
import torch
from jsonargparse import lazy_instance
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.strategies import ModelParallelStrategy
from torchmetrics import MeanMetric, MetricCollection

from vzero.game import Stage
from vzero.model import LoraSettings, ModelConfig, Policy, load_vlm, reference_copy
from vzero.model.policy import ModelInputs
from vzero.model.shard import shard_model
from vzero.rl.loss import LossConfig, normalizer, policy_loss
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
    """

    def __init__(
        self,
        model: ModelConfig | None = None,
        loss: LossConfig | None = None,
        mode: Mode = "iterative",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        schedule: WarmupCosine | None = lazy_instance(WarmupCosine),
        max_batch_size: int = 64,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"model.mode must be one of {MODES}, got {mode!r}")
        self.model_config = model or ModelConfig()
        self.loss_config = loss or LossConfig()
        self.mode = mode
        self.optimizer_factory = optimizer
        self.schedule = schedule
        self.max_batch_size = max_batch_size
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold trainable weights only (see on_save_checkpoint)
        self.stage = Stage.DECISION
        """The stage of the switch rule, written by the IterativeSPO callback before each step (its one channel in;
        the callback owns and checkpoints it). Only ``iterative`` mode reads it."""
        self.net: torch.nn.Module | None = None
        self.policy: Policy | None = None
        self.rollout_stats = MetricCollection({k.replace("/", "__"): MeanMetric() for k in ROLLOUT_KEYS})

    # ---- model -----------------------------------------------------------------------------------------------------

    def configure_model(self) -> None:
        if self.net is not None:
            return
        self.net, processor = load_vlm(self.model_config, name_or_path=resolve(self.model_config.name_or_path))
        reference = None if self.model_config.lora is not None else reference_copy(self.net)
        sharded = self._trainer is not None and isinstance(self.trainer.strategy, ModelParallelStrategy)
        if sharded:
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
        )

    def on_fit_start(self) -> None:
        self._place_reference()

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
        if not self.trainer.max_steps or self.trainer.max_steps < 0:
            raise ValueError("model.schedule needs trainer.max_steps (the number of optimizer steps) to be set")
        return {"optimizer": optimizer, "lr_scheduler": self.schedule.build(optimizer, self.trainer.max_steps)}

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
        return {k: float(votes[k]) for k in ("votes", "correct", "na")}

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
        # One denominator for the whole batch, so the accumulated micro-batch losses equal the full-batch loss.
        lengths = torch.tensor([len(s.completion_ids) for s in batch.samples])  # [N]
        norm = normalizer(lengths, cfg.aggregation).to(self.device)
        totals = {"loss/pg": 0.0, "loss/kl": 0.0, "loss/clip_frac": 0.0}
        grad_norm = torch.tensor(0.0)
        trainable = [p for p in self.net.parameters() if p.requires_grad]
        for _ in range(cfg.ppo_epochs):
            for k, (rows, inputs, temps) in enumerate(micro):
                logp = self.policy.logprobs(inputs, temps)  # [b, C]
                mask = inputs.completion_mask.to(logp.device)  # [b, C]
                old = logp.detach() if old_logps is None else old_logps[k]  # [b, C]
                adv = batch.advantage[rows].to(logp.device)  # [b]
                loss, parts = policy_loss(logp, old, ref_logps[k], adv, mask, norm, cfg)
                self.manual_backward(loss)
                for name in ("pg", "kl", "clip_frac"):
                    totals[f"loss/{name}"] += parts[name].item() / cfg.ppo_epochs
            if cfg.max_grad_norm > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
        return {**totals, "grad_norm": float(grad_norm), "lr": sched.get_last_lr()[0]}

    def validation_step(self, batch, batch_idx) -> None:
        """Nothing: evaluation is the WinRateEvaluation callback's, at the end of the validation epoch."""

    # ---- checkpoints -----------------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Only what training changes: the adapter (or every weight in a full fine-tune), never the frozen base.
        trainable = {f"net.{n}" for n, p in self.net.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        trainable = {f"net.{n}" for n, p in self.net.named_parameters() if p.requires_grad}
        missing = trainable - set(checkpoint["state_dict"])
        if missing:
            raise KeyError(
                f"the checkpoint lacks {len(missing)} trainable weights (e.g. {sorted(missing)[0]}): "
                "was it written with a different model.lora setting?"
            )


__all__ = ["LoraSettings", "MODES", "VisionZeroModule"]
