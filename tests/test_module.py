import lightning as L
import pytest
import torch

from vzero.callbacks import IterativeSPO
from vzero.data.pairs import ClevrPairs
from vzero.game import GameConfig, Stage
from vzero.model import ModelConfig
from vzero.model.sampling import Sampling, SamplingConfig
from vzero.module import VisionZeroModule
from vzero.rollout import GameRolloutDataModule

SAMPLING = Sampling(SamplingConfig(max_new_tokens=24), SamplingConfig(max_new_tokens=16))


def fit_one_step(path, mode, **module_kwargs):
    module = VisionZeroModule(model=ModelConfig(name_or_path=path), mode=mode, **module_kwargs)
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.net.named_parameters()}
    data = GameRolloutDataModule(ClevrPairs(n=16, seed=3, size=(240, 160)), sampling=SAMPLING, games_per_step=4)
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[IterativeSPO()],
    )
    trainer.fit(module, data)
    return module, before, trainer


@pytest.mark.parametrize("mode", ["decision", "clue"])
def test_one_step_moves_the_adapter_and_nothing_else(tiny_path, mode):
    module, before, trainer = fit_one_step(tiny_path, mode, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    changed = {n for n, p in module.net.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in module.net.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    assert all("lora_" in n for n in changed)
    assert trainer.callback_metrics["train/samples"] == (16 if mode == "decision" else 40)
    assert trainer.callback_metrics["loss/kl"] == 0  # first step: the policy is still the reference
    assert trainer.callback_metrics["loss/clip_frac"] == 0  # and the ratio is exactly 1


def test_trained_stages_follow_the_mode_and_the_handed_in_stage():
    module = VisionZeroModule(mode="iterative")
    module.stage = Stage.CLUE
    assert module.trained_stages == {Stage.CLUE}
    module.stage = Stage.DECISION
    assert module.trained_stages == {Stage.DECISION}
    assert VisionZeroModule(mode="decision").trained_stages == {Stage.DECISION}
    assert VisionZeroModule(mode="clue").trained_stages == {Stage.CLUE}
    assert VisionZeroModule(mode="both").trained_stages == {Stage.CLUE, Stage.DECISION}


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="model.mode"):
        VisionZeroModule(mode="alternate")


def test_each_sample_is_scored_at_the_temperature_it_was_sampled_at(random_policy):
    from vzero.rl.advantages import RoleBaselines
    from vzero.rollout import RolloutEngine, build_batch

    sampling = Sampling(SamplingConfig(temperature=0.7, max_new_tokens=6), SamplingConfig(max_new_tokens=4))
    pairs = ClevrPairs(n=2, seed=3, size=(96, 64))
    batch = build_batch(
        RolloutEngine(random_policy).play([pairs[0], pairs[1]], GameConfig(), sampling), RoleBaselines()
    )
    module = VisionZeroModule(mode="both")
    module.__dict__["policy"] = random_policy
    micro = module._micro_batches(batch)
    temps = torch.cat([t for _, _, t in micro]).tolist()
    assert temps == pytest.approx([0.7 if s == Stage.CLUE else 1.0 for s in batch.stages])
    rows, inputs, t = micro[0]
    with torch.no_grad():
        assert torch.equal(module._score(micro[:1], reference=False)[0], random_policy.logprobs(inputs, t))
