"""A thin wrapper around any HF image-text-to-text model: batched generation and log-probs on exact token ids.

Token-in/token-out: prompts are tokenised once, generation returns the new token ids (the EOS included), and training
scores those same ids. Text is decoded only to parse and to log.

Pictures are preprocessed once with the processor's own image processor and settings (its defaults included, such as
InternVL's tiling) and reused by every turn that shows them; a batch's pixel values are the concatenation of its
pictures' patches, split per picture by the processor's image grid (``image_grid_thw``, or ``num_patches`` for tiling
processors such as InternVL's).

While the vision tower is frozen (the default: LoRA on the language model only), a picture's vision-encoder output is
computed once and handed to the model as ``mm_encoder_outputs`` by every turn and every scoring pass that shows it, so
a game's two pictures go through the vision tower once per rollout instead of once per turn. Each picture keeps its
own features, in the form its model returns them: one tensor per picture (Qwen-VL), or its tiles' rows of one tensor
(InternVL), which a batch joins again in its pictures' order.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

import torch
from PIL import Image
from transformers import LogitsProcessorList

from vzero.model.decode import Decoder, DecodeStep, choose_decoder, decode, has_sliding_layers
from vzero.model.inputs import Completion, ModelInputs, Picture, picture_token_ids
from vzero.model.load import is_vision
from vzero.model.prefix import Prefix, PrefixStore
from vzero.model.sampling import KeyedSampler, SamplingConfig


class Policy:
    """Batched ``generate`` and ``logprobs`` for a model and its processor, with the adapter on or off.

    Args:
        model: an HF image-text-to-text model, optionally wrapped by peft.
        processor: its processor.
        reference: a frozen copy for full fine-tunes; None means the reference is ``model`` with its adapter disabled.
        max_batch_size: generation is chunked to at most this many sequences per call, to bound memory.
        synced_gpus: keep generation steps in lock-step across ranks (needed under FSDP).
        cache_vision: reuse each picture's vision-tower output across passes; only takes effect while the vision tower
            is frozen and un-adapted, and the model accepts ``mm_encoder_outputs``.
        decoder: ``vzero`` decodes with :func:`vzero.model.decode.decode` (the same tokens as ``generate``, without
            its per-step overhead; in lock-step across ranks with ``synced_gpus``), ``generate`` with HF ``generate``;
            ``auto`` takes ``vzero`` where it applies (a model that states its own positions) and ``generate``
            elsewhere. The choice is :attr:`decoder`.
        compile_decode: capture the ``vzero`` decoder's step with ``torch.compile`` (a CUDA graph on a GPU; see
            :class:`~vzero.model.decode.DecodeStep`). Not for sharded weights, which FSDP gathers inside each step.
        reuse_prompts_gb: within :meth:`rollout`, keep up to this many GB of prompt keys and values, so that a later
            prompt repeating an earlier one's start (its picture, the rules, the clues so far) computes only the rest
            (:mod:`vzero.model.prefix`); 0 turns it off. Needs ``vzero``'s decoder; off for models with sliding
            window layers, and across ranks (``synced_gpus``) unless pictures' features are cached.
    """

    def __init__(
        self,
        model,
        processor,
        reference=None,
        max_batch_size: int = 64,
        synced_gpus: bool = False,
        cache_vision: bool = True,
        decoder: Decoder = "auto",
        compile_decode: bool = False,
        reuse_prompts_gb: float = 4.0,
    ) -> None:
        self.model, self.processor, self.reference_model = model, processor, reference
        self.max_batch_size = max_batch_size
        self.synced_gpus = synced_gpus
        tok = processor.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        eos = model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [tok.eos_token_id])
        self._uses_mm_types = "mm_token_type_ids" in getattr(processor, "model_input_names", [])
        # A sampled image or video placeholder would make the rescored sequence claim a picture it does not have.
        self.suppress_ids = picture_token_ids(processor, model.config)
        self.cache_vision = cache_vision and _vision_frozen(model) and _accepts_encoder_outputs(model)
        self.decoder = choose_decoder(decoder, model)
        if compile_decode and self.decoder != "vzero":
            raise ValueError(f"model.compile_decode needs vzero's decoder, but this model decodes with {self.decoder}")
        self.step = DecodeStep(compile=compile_decode)
        if reuse_prompts_gb < 0:
            raise ValueError(f"model.reuse_prompts_gb must be >= 0, got {reuse_prompts_gb}")
        # Off for a sliding window, whose cache is not laid out by absolute column, and for sharded weights that
        # encode pictures in each prefill: a rank whose rows all reused their pictures would skip the vision tower's
        # weight gathers that another rank runs.
        reusable = not has_sliding_layers(model) and (self.cache_vision or not synced_gpus)
        self.prefixes = PrefixStore(int(reuse_prompts_gb * 1e9) if reusable else 0)
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
            if self.reference_model is not None:
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
        and a later prompt that repeats an earlier one's start reuses them (see ``reuse_prompts_gb``)."""
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
        return self.reference_model if self._on_reference and self.reference_model is not None else self.model

    # ---- encoding -------------------------------------------------------------------------------------------------

    def pictures(self, images: Sequence[Image.Image]) -> list[Picture]:
        """Preprocess pictures once, in one batched call of the processor's image processor."""
        if not images:
            return []
        feats = self.processor.image_processor(images=list(images), **self._image_kwargs())
        grids = feats.get("image_grid_thw")
        counts = grids.prod(-1).tolist() if grids is not None else list(feats["num_patches"])
        chunks = feats["pixel_values"].split([int(c) for c in counts])
        return [
            Picture(chunks[i], None if grids is None else grids[i], self.processor.replace_image_token(feats, i))
            for i in range(len(images))
        ]

    def _image_kwargs(self) -> dict:
        """The image processor's arguments as the processor's own call would pass them (InternVL's processor turns
        tiling on there, for one), so a picture here is exactly the picture ``processor(text, images)`` makes."""
        merge = getattr(self.processor, "_merge_kwargs", None)
        kwargs = {}
        if merge is not None:
            kwargs = dict(merge(tokenizer_init_kwargs=self.processor.tokenizer.init_kwargs).get("images_kwargs", {}))
        return {**kwargs, "return_tensors": "pt"}

    def prompt_ids(self, messages: list[dict], picture: Picture) -> list[int]:
        """Token ids of a chat prompt with one picture, ending with the assistant's turn header."""
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        (text,), _ = self.processor.get_text_with_replacements([text], images_replacements=[picture.placeholder])
        return self.processor.tokenizer(text).input_ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.processor.tokenizer.decode(list(ids), skip_special_tokens=True)

    def pack(
        self, prompts: Sequence[list[int]], pictures: Sequence[Picture], completions: Sequence[list[int]] | None = None
    ) -> ModelInputs:
        """Left-pad ``prompt + completion`` rows into one batch (completions end every row, right-aligned)."""
        completions = completions or [[] for _ in prompts]
        rows = [p + c for p, c in zip(prompts, completions)]
        width = max(len(r) for r in rows)
        c_width = max(len(c) for c in completions)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)  # [B, T]
        mask = torch.zeros((len(rows), width), dtype=torch.long)  # [B, T]
        c_mask = torch.zeros((len(rows), c_width), dtype=torch.float32)  # [B, C]
        for i, (row, comp) in enumerate(zip(rows, completions)):
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
            if comp:
                c_mask[i, c_width - len(comp) :] = 1
        mm = None
        if self._uses_mm_types:
            mm = torch.tensor(self.processor.create_mm_token_type_ids(ids.tolist()), dtype=torch.long)  # [B, T]
        grids = [p.grid for p in pictures]
        embeds = self._embeds(pictures) if self.cache_vision else None
        return ModelInputs(
            input_ids=ids,
            attention_mask=mask,
            mm_token_type_ids=mm,
            pixel_values=None if embeds else torch.cat([p.pixel_values for p in pictures]),
            image_grid_thw=None if grids[0] is None else torch.stack(grids),
            completion_mask=c_mask,
            image_embeds=embeds,
            join_embeds=bool(embeds) and pictures[0].joined,
        )

    @torch.no_grad()
    def _embeds(self, pictures: Sequence[Picture]) -> tuple[torch.Tensor, ...]:
        """Each picture's vision-tower output, computing the missing ones in one batched call."""
        missing = list({id(p): p for p in pictures if p.embeds is None}.values())
        if missing:
            kwargs = {"pixel_values": torch.cat([p.pixel_values for p in missing]).to(self.device)}
            if missing[0].grid is not None:
                kwargs["image_grid_thw"] = torch.stack([p.grid for p in missing]).to(self.device)
            feats = self.model.get_image_features(**kwargs, return_dict=True).pooler_output
            joined = isinstance(feats, torch.Tensor)
            if joined:  # one tensor with a row per tile (InternVL): each picture's rows are its own tiles
                rows = [p.pixel_values.shape[0] for p in missing]
                if feats.shape[0] != sum(rows):
                    raise RuntimeError(
                        f"{type(self.model).__name__}.get_image_features returned {feats.shape[0]} rows for "
                        f"{sum(rows)} tiles, so they cannot be split per picture; construct the Policy with "
                        "cache_vision=False for this model"
                    )
                feats = feats.split(rows)
            for p, e in zip(missing, feats, strict=True):
                p.embeds, p.joined = e.detach(), joined
        return tuple(p.embeds for p in pictures)

    # ---- generation and scoring -----------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[list[int]],
        pictures: Sequence[Picture],
        sampling: SamplingConfig,
        keys: Sequence[int] | None = None,
        reference: Sequence[bool] | None = None,
    ) -> tuple[list[Completion], float]:
        """Sample one completion per prompt, in chunks of ``max_batch_size`` rows of like prompt length. Returns them
        (in the order of ``prompts``) and the seconds spent.

        Args:
            keys: one sampling key per row (:mod:`vzero.model.sampling`): a row's completion depends on its prompt,
                picture and key only. None draws keys from torch's global generator.
            reference: per row, True to generate it with the reference policy (the adapter off) and False with the
                trained one, in the same batch (peft's mixed-adapter batches; a frozen copy gets its own call). None
                leaves every row to the current policy (see :meth:`reference`).
        """
        start = time.perf_counter()
        if keys is None:
            keys = (
                torch.randint(-(2**63), 2**63 - 1, (len(prompts),)).tolist()
                if sampling.temperature
                else [0] * len(prompts)
            )
        flags = [self._on_reference] * len(prompts) if reference is None else [bool(r) for r in reference]
        # Chunks of prompts of like length waste less on padding; keyed rows do not care which chunk they are in.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[Completion | None] = [None] * len(prompts)
        for lo in range(0, len(order), self.max_batch_size):
            rows = order[lo : lo + self.max_batch_size]
            chunk = self._generate_chunk(
                [prompts[i] for i in rows],
                [pictures[i] for i in rows],
                sampling,
                [keys[i] for i in rows],
                [flags[i] for i in rows],
            )
            for i, completion in zip(rows, chunk):
                out[i] = completion
        return out, time.perf_counter() - start  # type: ignore[return-value]

    def _generate_chunk(self, prompts, pictures, sampling: SamplingConfig, keys, flags) -> list[Completion]:
        if self.reference_model is not None and len(set(flags)) > 1:
            # Two models cannot share a batch: each side gets its own call. Keyed sampling makes each row's draw
            # independent of the split.
            out: list[Completion | None] = [None] * len(prompts)
            for side in (False, True):
                idx = [i for i, f in enumerate(flags) if f == side]
                chunk = self._generate_chunk(
                    [prompts[i] for i in idx],
                    [pictures[i] for i in idx],
                    sampling,
                    [keys[i] for i in idx],
                    [side] * len(idx),
                )
                for i, c in zip(idx, chunk):
                    out[i] = c
            return out  # type: ignore[return-value]
        inputs = self.pack(prompts, pictures).to(self.device)
        key_tensor = torch.tensor(list(keys), dtype=torch.long, device=self.device) if sampling.temperature else None
        prefix = self._stored_prefix(prompts, pictures, flags)
        new = self._generate_call(inputs, sampling, key_tensor, flags, prefix).tolist()  # [B, N]
        if prefix is not None and prefix.kept is not None:
            self.prefixes.keep(prompts, pictures, flags, prefix.kept)
        completions = []
        for row in new:
            end = next((j for j, t in enumerate(row) if t in self.eos_ids), None)
            if end is None:
                completions.append(Completion(row[: sampling.max_new_tokens], True))
            else:
                completions.append(Completion(row[: end + 1], False))
        return completions

    def _stored_prefix(self, prompts, pictures, flags: list[bool]) -> Prefix | None:
        """What this batch can take from the prompt store (None when reuse does not apply to it)."""
        if not (self.prefixes.active and self.decoder == "vzero"):
            return None
        marks = set(self.suppress_ids)
        ends = [max((j + 1 for j, t in enumerate(ids) if t in marks), default=0) for ids in prompts]
        prefix = self.prefixes.find(prompts, pictures, flags, ends)
        if 0 < len(prefix.picture_rows) < len(prompts):  # the rows that compute their pictures need the features
            rows = prefix.picture_rows
            sub = self.pack([prompts[i] for i in rows], [pictures[i] for i in rows]).to(self.device).model_kwargs()
            # Their pictures only (features, or pixels to encode): the chunk brings its own ids, mask and positions.
            text = ("input_ids", "attention_mask", "mm_token_type_ids")
            prefix.picture_kwargs = {k: v for k, v in sub.items() if k not in text}
        return prefix

    def _generate_call(
        self, inputs: ModelInputs, sampling: SamplingConfig, keys, flags: list[bool], prefix: Prefix | None = None
    ) -> torch.Tensor:
        """The new tokens ``[B, N]`` of one decoding pass over the batch (after a row's EOS: padding); mixed rows
        run with peft's per-row adapter names (``__base__`` = off)."""
        if self._on_reference and not all(flags):
            raise ValueError("rows for the trained policy were asked for inside policy.reference()")
        if not any(flags):
            return self._decode(self._net, inputs, sampling, keys, prefix=prefix)
        if all(flags):
            with self.reference():
                return self._decode(self._net, inputs, sampling, keys, prefix=prefix)
        active = self.model.active_adapter
        with self.frozen():  # peft refuses per-row adapters in training mode
            names = ["__base__" if f else active for f in flags]
            return self._decode(self.model, inputs, sampling, keys, names, prefix)

    def _decode(
        self, net, inputs: ModelInputs, sampling: SamplingConfig, keys, adapter_names=None, prefix=None
    ) -> torch.Tensor:
        if self.decoder == "vzero":
            return decode(
                net,
                inputs.model_kwargs(),
                sampling,
                sorted(self.eos_ids),
                self.pad_id,
                keys=keys,
                suppress_ids=self.suppress_ids,
                adapter_names=adapter_names,
                synced=self.synced_gpus,
                step=self.step,
                prefix=prefix,
            )
        processors = [] if keys is None else [KeyedSampler(keys, sampling.temperature, sampling.top_p)]
        extra = {} if adapter_names is None else {"adapter_names": adapter_names}
        seqs = net.generate(
            **inputs.model_kwargs(),
            **sampling.generate_kwargs(),
            logits_processor=LogitsProcessorList(processors),
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.pad_id,
            suppress_tokens=self.suppress_ids or None,
            synced_gpus=self.synced_gpus,
            **extra,
        )
        return seqs[:, inputs.input_ids.shape[1] :]

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
        if self.suppress_ids:
            logits[..., self.suppress_ids] = float("-inf")  # never sampled, so never in the sampling distribution
        targets = inputs.input_ids[:, -c:]  # [B, C]
        # log softmax at the targets only: no second [B, C, V] tensor, which matters at a real vocabulary's size
        logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # [B, C]
        return logp * inputs.completion_mask


def _vision_frozen(model) -> bool:
    return not any(p.requires_grad for n, p in model.named_parameters() if is_vision(n))


def _accepts_encoder_outputs(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return callable(getattr(base, "_supports_mm_encoder_outputs", None)) and base._supports_mm_encoder_outputs()
