"""How one stage samples text."""

from __future__ import annotations

from dataclasses import dataclass

from vzero.game import Stage


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings of one stage. Generation always stops at the model's EOS."""

    temperature: float = 1.0
    """0 means greedy decoding."""
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

    def generate_kwargs(self) -> dict:
        lengths = {"max_new_tokens": self.max_new_tokens, "min_new_tokens": self.min_new_tokens}
        if self.temperature == 0:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None, **lengths}
        # top_k=0 turns off HF's default top-50 filter: RL must sample from the policy it scores.
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0, **lengths}


@dataclass(frozen=True)
class Sampling:
    """Sampling settings per stage."""

    clue: SamplingConfig = SamplingConfig(max_new_tokens=256)
    decision: SamplingConfig = SamplingConfig(max_new_tokens=256)

    def for_stage(self, stage: Stage) -> SamplingConfig:
        return self.clue if Stage(stage) is Stage.CLUE else self.decision
