import lightning as L
import pytest
import torch

from vzero.callbacks import IterativeSPO
from vzero.data.datamodule import GameRolloutDataModule
from vzero.data.pairs import ClevrPairs
from vzero.model import ModelConfig
from vzero.model.sampling import Sampling, SamplingConfig
from vzero.module import VisionZeroModule
from vzero.rl.phases import CLUE, DECISION

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


def test_stage_weights_follow_the_mode():
    stage = torch.tensor([CLUE, DECISION, CLUE])
    module = VisionZeroModule(mode="iterative")
    module.stage = CLUE
    assert module.stage_weights(stage).tolist() == [1.0, 0.0, 1.0]
    module.stage = DECISION
    assert module.stage_weights(stage).tolist() == [0.0, 1.0, 0.0]
    assert VisionZeroModule(mode="decision").stage_weights(stage).tolist() == [0.0, 1.0, 0.0]
    assert VisionZeroModule(mode="clue").stage_weights(stage).tolist() == [1.0, 0.0, 1.0]
    assert VisionZeroModule(mode="both").stage_weights(stage).tolist() == [1.0, 1.0, 1.0]


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="model.mode"):
        VisionZeroModule(mode="alternate")
