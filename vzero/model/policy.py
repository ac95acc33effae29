"""A thin wrapper around any HF image-text-to-text model: batched generation and log-probs on exact token ids.

Token-in/token-out: prompts are tokenised once (:class:`~vzero.model.inputs.InputBuilder`, the policy's ``inputs``),
generation returns the new token ids (the EOS included), and training scores those same ids. Text is decoded only to
parse and to log.

Every row is played by one side (:data:`~vzero.model.inputs.Side`): the trained weights, or the reference's (the
adapter off, or a frozen copy for a full fine-tune). One batch may mix both: peft runs each row with its own adapter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch

from vzero.model.decode import DECODERS, Decoded, Decoder, GenerateDecoder, VzeroDecoder, choose_decoder
from vzero.model.inputs import Completion, InputBuilder, ModelInputs, Picture, Side, TokenIds
from vzero.model.prefix import Prefix, PrefixStore
from vzero.model.sampling import SamplingConfig
from vzero.model.step import DecodeStep, has_sliding_layers


@dataclass(frozen=True)
class DecodingConfig:
    """How rollouts decode."""

    decoder: Decoder = "auto"
    """``vzero``: vzero's own loop (prefill once, a static KV cache, sampling on the device; the same tokens as HF
    ``generate``; in lock-step across ranks); ``generate``: HF ``generate``, with the model's own ``generation_config``
    (repetition penalty, n-gram bans, warpers, ...) neutralised so that it samples what is scored
    (:mod:`vzero.model.decode`); ``auto``: ``vzero`` where the model states its own positions (Qwen-VL and InternVL
    do), else ``generate``. The choice is logged (MLflow tag ``vzero.decoder``)."""
    compile: bool = False
    """Capture vzero's decode step with ``torch.compile`` as one graph, replayed as a CUDA graph on a GPU (one launch
    per step); compiling takes a while on the first rollouts, so it pays on long runs of large models. Not under FSDP,
    which gathers the weights inside each step."""
    reuse_prompts_gb: float = 4.0
    """Within a rollout, keep up to this many GB of prompt keys and values, so that a prompt repeating an earlier
    turn's start (the picture, the rules, the clues so far) computes only the rest (:mod:`vzero.model.prefix`); 0 turns
    it off. Needs vzero's decoder; off for models with sliding-window layers, and across ranks unless pictures'
    features are cached."""
    max_batch_size: int = 64
    """The most sequences per decoding pass: generation is chunked to bound memory."""

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ValueError(f"model.decoding.decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}")
        if not self.reuse_prompts_gb >= 0:
            raise ValueError(f"model.decoding.reuse_prompts_gb must be >= 0, got {self.reuse_prompts_gb}")
        if self.max_batch_size < 1:
            raise ValueError(f"model.decoding.max_batch_size must be >= 1, got {self.max_batch_size}")

    def under(self, precision: str) -> DecodingConfig:
        """These settings for a run at Lightning's ``precision``. Under autocast (``bf16-mixed``, ``16-mixed``) a
        layer's keys come out in fp32 (rotated by fp32 position tables) and its values in half precision, which one
        static cache cannot hold, so ``auto`` decodes with ``generate`` there and an explicit ``vzero`` is refused."""
        if not str(precision).endswith("-mixed") or self.decoder == "generate":
            return self
        if self.decoder == "vzero":
            raise ValueError(
                f"model.decoding.decoder='vzero' cannot run under trainer.precision={precision}: autocast makes a "
                "layer's keys fp32 and its values half precision, which vzero's static cache cannot hold. Use "
                "trainer.precision bf16-true (the recipes' choice) or 32-true, or model.decoding.decoder generate"
            )
        return replace(self, decoder="generate")


class _Row(NamedTuple):
    prompt: list[int]
    picture: Picture
    key: int
    side: Side


class Policy:
    """Batched ``generate`` and ``logprobs`` for a model and its processor, on either side.

    Args:
        model: an HF image-text-to-text model, optionally wrapped by peft.
        processor: its processor.
        reference_copy: a frozen copy for full fine-tunes; None means the reference is ``model`` with its adapter
            disabled.
        decoding: the decoder, its compilation, prompt reuse and the batch bound.
        synced_gpus: keep generation steps in lock-step across ranks (needed under FSDP).
        cache_vision: reuse each picture's vision-tower output across passes (see :class:`InputBuilder`).
    """

    def __init__(
        self,
        model,
        processor,
        reference_copy=None,
        decoding: DecodingConfig = DecodingConfig(),
        synced_gpus: bool = False,
        cache_vision: bool = True,
    ) -> None:
        self.model, self.processor, self.reference_copy = model, processor, reference_copy
        self.synced = synced_gpus
        self.decoding = decoding
        self.ids = TokenIds.of(processor, model)
        self.inputs = InputBuilder(model, processor, self.ids.pad, cache_vision)
        self.decoder = choose_decoder(decoding.decoder, model)
        """The decoder in use, ``vzero`` or ``generate``."""
        if decoding.compile and self.decoder != "vzero":
            raise ValueError(
                f"model.decoding.compile needs vzero's decoder, but this model decodes with {self.decoder}"
            )
        if self.decoder == "vzero":
            self.decode = VzeroDecoder(self.ids, DecodeStep(compile=decoding.compile), synced_gpus)
        else:
            self.decode = GenerateDecoder(self.ids, synced_gpus)
        # Off for a sliding window, whose cache is not laid out by absolute column, and for sharded weights that
        # encode pictures in each prefill: a rank whose rows all reused their pictures would skip the vision tower's
        # weight gathers that another rank runs.
        reusable = self.decoder == "vzero" and not has_sliding_layers(model)
        reusable = reusable and (self.inputs.cache_vision or not synced_gpus)
        self.prefixes = PrefixStore(int(decoding.reuse_prompts_gb * 1e9) if reusable else 0)
        self._on_reference = False

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @contextlib.contextmanager
    def reference(self) -> Iterator[Policy]:
        """Within this block, every call runs the reference policy (the adapter off, or the frozen copy)."""
        if self._on_reference:
            yield self
            return
        self._on_reference = True
        try:
            if self.reference_copy is not None:
                yield self
            elif hasattr(self.model, "disable_adapter"):
                with self.model.disable_adapter():
                    yield self
            else:
                raise RuntimeError("this policy has no adapter to disable and no frozen reference copy")
        finally:
            self._on_reference = False

    @contextlib.contextmanager
    def rollout(self) -> Iterator[Policy]:
        """Within this block (one rollout: the weights must not change inside it), prompts' keys and values are kept
        and a later prompt that repeats an earlier one's start reuses them (see ``decoding.reuse_prompts_gb``)."""
        with self.prefixes.session():
            yield self

    @contextlib.contextmanager
    def frozen(self) -> Iterator[Policy]:
        """Within this block the model runs in eval mode (no dropout), as evaluation and peft's mixed-adapter batches
        need (a mixed batch enters it by itself); each module's own mode is restored afterwards."""
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            yield self
        finally:
            for module, training in modes:
                module.training = training

    @property
    def _net(self):
        return self.reference_copy if self._on_reference and self.reference_copy is not None else self.model

    # ---- generation -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[list[int]],
        pictures: Sequence[Picture],
        sampling: SamplingConfig,
        keys: Sequence[int] | None = None,
        sides: Sequence[Side] | None = None,
    ) -> list[Completion]:
        """Sample one completion per prompt, in chunks of ``decoding.max_batch_size`` rows of like prompt length.
        Returns them in the order of ``prompts``.

        Args:
            keys: one sampling key per row (:mod:`vzero.model.sampling`): a row's completion depends on its prompt,
                picture and key only. None draws keys from torch's global generator.
            sides: per row, who plays it: the ``trained`` weights or the ``reference``'s, in the same batch (peft's
                mixed-adapter batches; a frozen copy gets its own call). None leaves every row to the current policy
                (see :meth:`reference`).
        """
        if keys is None:
            keys = (
                torch.randint(-(2**63), 2**63 - 1, (len(prompts),)).tolist()
                if sampling.temperature
                else [0] * len(prompts)
            )
        if sides is None:
            sides = ["reference" if self._on_reference else "trained"] * len(prompts)
        # Chunks of prompts of like length waste less on padding; keyed rows do not care which chunk they are in.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[Completion | None] = [None] * len(prompts)
        for lo in range(0, len(order), self.decoding.max_batch_size):
            rows = order[lo : lo + self.decoding.max_batch_size]
            chunk = [_Row(prompts[i], pictures[i], keys[i], sides[i]) for i in rows]
            for i, completion in zip(rows, self._generate_chunk(chunk, sampling)):
                out[i] = completion
        return out  # type: ignore[return-value]

    def _generate_chunk(self, rows: list[_Row], sampling: SamplingConfig) -> list[Completion]:
        """One decoding pass over ``rows``: packed once, looked up in the prompt store once, and their prompt states
        kept once."""
        sides = self._sides_anywhere({row.side for row in rows}) if self.reference_copy is not None else set()
        if len(sides) > 1:
            # Two models cannot share a batch: each side gets its own pass. Keyed sampling makes each row's draw
            # independent of the split. Every rank runs the passes of the sides any rank has (a rank without rows of
            # a side runs a stand-in row and drops it): sharded weights are gathered inside each forward, so every
            # rank must make the same calls of the same model.
            out: list[Completion | None] = [None] * len(rows)
            for side in ("trained", "reference"):
                idx = [i for i, row in enumerate(rows) if row.side == side]
                part = [rows[i] for i in idx] or [rows[0]._replace(side=side)]
                for i, completion in zip(idx, self._one_pass(part, sampling)):
                    out[i] = completion
            return out  # type: ignore[return-value]
        return self._one_pass(rows, sampling)

    def _sides_anywhere(self, mine: set[Side]) -> set[Side]:
        """The sides that rows of this chunk have on this rank or, under ``synced_gpus``, on any rank."""
        if not (self.synced and torch.distributed.is_available() and torch.distributed.is_initialized()):
            return mine
        flags = torch.tensor([float(s in mine) for s in ("trained", "reference")], device=self.device)  # [2]
        torch.distributed.all_reduce(flags)
        return {s for s, f in zip(("trained", "reference"), flags.tolist()) if f}

    def _one_pass(self, rows: list[_Row], sampling: SamplingConfig) -> list[Completion]:
        prompts, pictures, keys, sides = (list(column) for column in zip(*rows))
        inputs = self.inputs.pack(prompts, pictures).to(self.device)
        key_tensor = torch.tensor(keys, dtype=torch.long, device=self.device) if sampling.temperature else None
        prefix = self._stored_prefix(prompts, pictures, sides)
        decoded = self._decode_batch(inputs, sampling, key_tensor, sides, prefix)
        if decoded.prompt_states is not None:
            self.prefixes.keep(prompts, pictures, sides, decoded.prompt_states)
        reused = prefix.lengths if prefix is not None else [0] * len(rows)
        return [self._completion(row, n, sampling) for row, n in zip(decoded.tokens.tolist(), reused)]

    def _completion(self, new: list[int], reused: int, sampling: SamplingConfig) -> Completion:
        """A row's new tokens up to and including its EOS (after it: padding), or all of them, cut off."""
        end = next((j for j, t in enumerate(new) if t in self.ids.eos), None)
        if end is None:
            return Completion(new[: sampling.max_new_tokens], True, reused)
        return Completion(new[: end + 1], False, reused)

    def _stored_prefix(self, prompts, pictures, sides: list[Side]) -> Prefix | None:
        """What this batch can take from the prompt store (None when reuse does not apply to it)."""
        if not self.prefixes.active:
            return None
        marks = set(self.ids.suppress)
        ends = [max((j + 1 for j, t in enumerate(ids) if t in marks), default=0) for ids in prompts]
        return self.prefixes.find(prompts, pictures, sides, ends)

    def _decode_batch(
        self, inputs: ModelInputs, sampling: SamplingConfig, keys, sides: list[Side], prefix: Prefix | None
    ) -> Decoded:
        """One decoding pass over the batch; mixed rows run with peft's per-row adapter names (``__base__`` = off)."""
        if self._on_reference and "trained" in sides:
            raise ValueError("rows for the trained policy were asked for inside policy.reference()")
        if "reference" not in sides:
            return self.decode(self._net, inputs, sampling, keys, prefix=prefix)
        if "trained" not in sides:
            with self.reference():
                return self.decode(self._net, inputs, sampling, keys, prefix=prefix)
        active = self.model.active_adapter
        with self.frozen():  # peft refuses per-row adapters in training mode
            names = ["__base__" if side == "reference" else active for side in sides]
            return self.decode(self.model, inputs, sampling, keys, names, prefix)

    # ---- scoring --------------------------------------------------------------------------------------------------

    def logprobs(self, inputs: ModelInputs, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Log-probs of each row's completion tokens under the current (or reference) policy: ``[B, C]``, right-aligned
        like ``inputs.completion_mask`` (0 where the mask is 0). Gradients flow unless called under ``no_grad``.

        They are the log-probs of the distribution the tokens were sampled from: the logits divided by the sampling
        ``temperature`` (a number, or one per row), with the ids generation suppresses removed, as TRL and verl score.
        Top-p is not applied: a nucleus is a property of one sampling step, and the ratio of two policies' full
        distributions is what PPO's importance weight and the KL estimate need (with ``top_p`` 1, the default,
        scoring and sampling agree exactly).
        """
        inputs = inputs.to(self.device)
        c = inputs.completion_mask.shape[1]
        out = self._net(**inputs.model_kwargs(), logits_to_keep=c + 1, use_cache=False)
        logits = out.logits[:, :-1].float()  # [B, C, V]: position t predicts token t + 1
        t = torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device)
        logits.div_(t.view(-1, 1, 1) if t.ndim else t)  # in place: one [B, C, V] tensor throughout
        if self.ids.suppress:
            logits[..., self.ids.suppress] = float("-inf")  # never sampled, so never in the sampling distribution
        targets = inputs.input_ids[:, -c:]  # [B, C]
        # log softmax at the targets only: no second [B, C, V] tensor, which matters at a real vocabulary's size
        logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # [B, C]
        return logp * inputs.completion_mask
