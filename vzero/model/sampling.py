"""How one stage samples text, and the sampler that makes a row's draw depend on its own key alone.

vzero samples by the Gumbel-max trick: at each step a row takes the argmax of its tempered, top-p-truncated log-probs
plus Gumbel noise, which is exactly a draw from that distribution. The noise is not taken from a random stream but
computed from ``(row key, step, token)`` by a counter-based hash, so a row's completion is a function of its prompt,
its picture and its key alone: the same whatever else shares its batch, however the batch is chunked, on any rank.
The engine keys each turn by ``(seed, game, stage, round, player, sample)``, which is what lets an evaluation replay
the very same games with the two policies' roles swapped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from vzero.game import Stage

# HF generate's settings that change which tokens come out, at their no-op values (per transformers 5.25's
# GenerationConfig and GenerationMixin._get_logits_processor). None: unset, or HF's default where it has one.
NEUTRAL_GENERATION: dict[str, object] = {
    # the search: greedy over one sequence per row, without assistants or drafts
    "do_sample": False,
    "num_beams": 1,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "length_penalty": 1.0,
    "early_stopping": False,
    "low_memory": None,
    "penalty_alpha": None,
    "constraints": None,
    "force_words_ids": None,
    "dola_layers": None,
    "prompt_lookup_num_tokens": None,
    "assistant_early_exit": None,
    "use_mtp": None,
    "speculation_type": None,
    "assistant_ensemble_weight": None,  # lossy speculative decoding
    "token_healing": False,  # rewrites the prompt's tail
    "num_return_sequences": 1,
    # logits processors, which act in any search
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "sequence_bias": None,
    "min_length": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "exponential_decay_length_penalty": None,
    "begin_suppress_tokens": None,
    "guidance_scale": None,
    "remove_invalid_values": False,
    "renormalize_logits": False,
    "watermarking_config": None,
    # warpers, which act only when sampling: vzero's temperature and top_p act through KeyedSampler
    "temperature": None,
    "top_k": None,
    "top_p": None,
    "min_p": None,
    "top_h": None,
    "typical_p": None,
    "epsilon_cutoff": None,
    "eta_cutoff": None,
    # stops other than EOS and the budget
    "max_length": None,
    "max_time": None,
    "stop_strings": None,
    "is_assistant": False,
    # what generate returns: the ids alone
    "return_dict_in_generate": False,
    "output_scores": False,
    "output_logits": False,
    "output_attentions": False,
    "output_hidden_states": False,
}
VZERO_GENERATION = ("max_new_tokens", "min_new_tokens", "eos_token_id", "pad_token_id", "suppress_tokens")
"""HF generate's settings that vzero's own decoder applies too: the budget, EOS held back, stops, suppressed ids."""
KEPT_GENERATION = (
    *("bos_token_id", "decoder_start_token_id", "use_cache", "cache_implementation", "cache_config", "max_cache_len"),
    *("prefill_chunk_size", "compile_config", "disable_compile", "continuous_batching_config", "transformers_version"),
    # lossless speculative decoding's tuning: speculation is off
    *("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold"),
    *("assistant_lookbehind", "target_lookbehind", "max_matching_ngram_size"),
)
"""HF generate's settings left as the model has them: how it runs, not which tokens it picks."""


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings of one stage. Generation always stops at the model's EOS."""

    temperature: float = 1.0
    """0 means greedy decoding. Training scores the sampled tokens at this temperature too."""
    top_p: float = 1.0
    """Nucleus sampling mass, in (0, 1]."""
    max_new_tokens: int = 256
    """A completion cut off here is kept and flagged as truncated, never dropped."""
    min_new_tokens: int = 0
    """Suppress EOS before this many tokens; benchmarks set it to ``max_new_tokens`` to fix every length."""

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"SamplingConfig.temperature must be >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p!r}")
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            raise ValueError(f"SamplingConfig.max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"SamplingConfig.min_new_tokens must be in [0, max_new_tokens], got {self.min_new_tokens}")

    @property
    def scoring_temperature(self) -> float:
        """The temperature at which the sampled tokens' log-probs are taken: the sampling one (1 for greedy)."""
        return self.temperature or 1.0

    def generate_kwargs(self) -> dict:
        """HF ``generate`` arguments: every setting of :data:`NEUTRAL_GENERATION` at its no-op value (always greedy
        search: :class:`KeyedSampler` adds the noise that samples), and the budget."""
        return {**NEUTRAL_GENERATION, "max_new_tokens": self.max_new_tokens, "min_new_tokens": self.min_new_tokens}


@dataclass(frozen=True)
class SamplingByStage:
    """The sampling settings of each stage: one :class:`SamplingConfig` for the clue turns, one for the votes."""

    clue: SamplingConfig = SamplingConfig(max_new_tokens=256)
    decision: SamplingConfig = SamplingConfig(max_new_tokens=256)

    def for_stage(self, stage: Stage) -> SamplingConfig:
        return self.clue if Stage(stage) is Stage.CLUE else self.decision


def row_key(*parts: int | str) -> int:
    """A signed 64-bit key from a tuple of ints and strings, the same on every run and machine."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def tempered_log_probs(logits: torch.Tensor, temperature: float | torch.Tensor, top_p: float = 1.0) -> torch.Tensor:
    """Log-probs of ``softmax(logits / T)``, restricted to the top-p nucleus (-inf outside it) and renormalised.

    The nucleus is the smallest set of most likely tokens whose mass reaches ``top_p`` (at least one token).

    Args:
        logits: [B, V] (-inf where a token is masked); temperature: a number or [B, 1].
    """
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)  # [B, V]
    if top_p >= 1.0:
        return logp
    sorted_logp, order = logp.sort(dim=-1, descending=True)  # [B, V]
    mass_before = sorted_logp.exp().cumsum(-1) - sorted_logp.exp()  # [B, V]
    drop = torch.zeros_like(logp, dtype=torch.bool).scatter(-1, order, mass_before >= top_p)  # [B, V]
    return torch.log_softmax(logp.masked_fill(drop, float("-inf")), dim=-1)  # [B, V]


def _signed(value: int) -> int:
    """An unsigned 64-bit constant as the signed int64 torch stores (same bits)."""
    return value - (1 << 64) if value >= 1 << 63 else value


_STEP = _signed(0x9E3779B97F4A7C15)  # odd multipliers that spread steps and tokens over all 64 bits
_TOKEN = _signed(0xD1B54A32D192ED03)
_M1, _M2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shift(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch's ``>>`` keeps the sign)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser: a bijection on 64-bit integers whose outputs pass as independent (wrapping products)."""
    x = (x ^ _shift(x, 30)) * _M1
    x = (x ^ _shift(x, 27)) * _M2
    return x ^ _shift(x, 31)


def keyed_uniform(keys: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """Uniform numbers in (0, 1), one per (row, token) of one decoding step, from the rows' keys alone.

    Args:
        keys: [B] int64. Returns [B, V] float64.
    """
    base = _mix(keys + _signed((step * _STEP) % (1 << 64)))  # [B]
    x = _mix(base[:, None] + torch.arange(vocab, device=keys.device) * _TOKEN)  # [B, V]
    return (_shift(x, 11).double() + 0.5) / float(1 << 53)  # [B, V]: the top 53 bits


class KeyedSampler(LogitsProcessor):
    """A logits processor that turns HF's greedy search into sampling from the tempered top-p distribution.

    It returns ``log p_T(token) + Gumbel(row key, step, token)``, whose argmax is a draw from ``p_T`` (the Gumbel-max
    trick). Tokens masked before it (suppressed ids, EOS before ``min_new_tokens``) stay at -inf.

    Args:
        keys: [B] int64, one per row of the batch.
    """

    def __init__(self, keys: torch.Tensor, temperature: float, top_p: float = 1.0) -> None:
        if temperature <= 0:
            raise ValueError("KeyedSampler needs a temperature > 0; greedy decoding needs no sampler")
        self.keys, self.temperature, self.top_p = keys, temperature, top_p
        self._start: int | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self._start is None:
            self._start = input_ids.shape[1]
        step = input_ids.shape[1] - self._start
        logp = tempered_log_probs(scores, self.temperature, self.top_p)  # [B, V]
        gumbel = -torch.log(-torch.log(keyed_uniform(self.keys.to(scores.device), step, scores.shape[-1])))  # [B, V]
        return logp + gumbel.to(logp.dtype)  # [B, V]; -inf stays -inf
