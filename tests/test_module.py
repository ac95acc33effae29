import lightning as L
import pytest
import torch

from vzero.callbacks import IterativeSPO
from vzero.data.pairs import ClevrPairs
from vzero.game import GameConfig, Stage
from vzero.model import ModelConfig
from vzero.model.sampling import SamplingByStage, SamplingConfig
from vzero.module import VisionZeroModule
from vzero.rollout import GameRolloutDataModule

SAMPLING = SamplingByStage(SamplingConfig(max_new_tokens=24), SamplingConfig(max_new_tokens=16))


def fit_one_step(path, mode, **module_kwargs):
    module = VisionZeroModule(vlm=ModelConfig(name_or_path=path), mode=mode, **module_kwargs)
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


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="model.mode"):
        VisionZeroModule(mode="alternate")


def test_each_sample_is_scored_at_the_temperature_it_was_sampled_at(random_policy):
    from vzero.rl.advantages import RoleBaselines
    from vzero.rollout import RolloutEngine, build_batch
    from vzero.rollout.batch import score_samples

    sampling = SamplingByStage(SamplingConfig(temperature=0.7, max_new_tokens=6), SamplingConfig(max_new_tokens=4))
    pairs = ClevrPairs(n=2, seed=3, size=(96, 64))
    rollout = RolloutEngine(random_policy).play([pairs[0], pairs[1]], GameConfig(), sampling)
    batch = build_batch(rollout, score_samples(rollout.transcripts, RoleBaselines()))
    module = VisionZeroModule(mode="both")
    module.__dict__["policy"] = random_policy
    micro = module._micro_batches(batch)
    temps = torch.cat([t for _, _, t in micro]).tolist()
    assert temps == pytest.approx([0.7 if s == Stage.CLUE else 1.0 for s in batch.stages])
    rows, inputs, t = micro[0]
    with torch.no_grad():
        assert torch.equal(module._score(micro[:1], reference=False)[0], random_policy.logprobs(inputs, t))


# ---- non-finite steps and checkpoints ----------------------------------------------------------------------------

SHORT = SamplingByStage(SamplingConfig(max_new_tokens=6), SamplingConfig(max_new_tokens=4))


def fit_with_faults(path, tmp_path, monkeypatch, bad_loss=(), bad_norm=(), max_steps=3, **loss_kwargs):
    """A small fit (checkpoint every step, every one kept) whose loss is NaN in the ``bad_loss`` training steps
    (counted from 0) and whose gradient norm is inf in the ``bad_norm`` ones."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    import vzero.module
    from vzero.checkpoint import VerifiedCheckpointIO
    from vzero.rl.loss import LossConfig

    step = -1
    real_loss, real_norm, real_start = vzero.module.policy_loss, torch.nn.utils.get_total_norm, None

    def count_steps(*args):
        nonlocal step
        step += 1
        return real_start(*args)

    def loss(*args):
        out, parts = real_loss(*args)
        return (out * float("nan"), parts) if step in bad_loss else (out, parts)

    def norm(*args, **kwargs):
        return torch.tensor(float("inf")) if step in bad_norm else real_norm(*args, **kwargs)

    config = ModelConfig(name_or_path=path)
    module = VisionZeroModule(vlm=config, mode="both", loss=LossConfig(**loss_kwargs), schedule=None)
    real_start = module.on_train_batch_start
    monkeypatch.setattr(module, "on_train_batch_start", count_steps)
    monkeypatch.setattr(vzero.module, "policy_loss", loss)
    monkeypatch.setattr(torch.nn.utils, "get_total_norm", norm)
    game = GameConfig(n_civilians=2, clue_rounds=1)
    data = GameRolloutDataModule(ClevrPairs(n=8, seed=3, size=(96, 64)), game=game, sampling=SHORT, games_per_step=2)
    checkpoints = ModelCheckpoint(tmp_path, every_n_train_steps=1, save_top_k=-1, save_last=True)
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[IterativeSPO(), checkpoints],
        plugins=[VerifiedCheckpointIO()],
    )
    trainer.fit(module, data)
    return module, trainer, sorted(tmp_path.glob("*.ckpt"))


def assert_finite(files):
    assert files
    for f in files:
        state = torch.load(f, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values()), f.name


def test_a_nonfinite_loss_or_gradient_skips_the_update_and_counts_it(tiny_random_path, tmp_path, monkeypatch, caplog):
    module, trainer, files = fit_with_faults(tiny_random_path, tmp_path, monkeypatch, bad_loss={1}, bad_norm={2})
    assert_finite(files)
    assert trainer.global_step == 3  # three updates taken, over five rollouts
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 3  # the schedule follows the updates taken
    assert module.guard.skipped == 2 and module.guard.streak == 0
    assert trainer.callback_metrics["train/skipped_nonfinite"] == 2
    assert "the loss was not finite at step 1: update skipped" in caplog.text
    assert "the gradient norm was not finite at step 1: update skipped (2 in a row" in caplog.text
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["VisionZeroModule"]["skipped_nonfinite"] == 2


def test_nonfinite_updates_in_a_row_stop_the_run_naming_the_step(tiny_random_path, tmp_path, monkeypatch):
    with pytest.raises(FloatingPointError, match=r"the loss was not finite at step 1: 2 skipped update\(s\) in a row"):
        fit_with_faults(tiny_random_path, tmp_path, monkeypatch, bad_loss={1, 2, 3}, max_nonfinite_steps=2)
    assert_finite(sorted(tmp_path.glob("*.ckpt")))
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 1


@pytest.fixture
def random_module(tiny_random_path):
    from vzero.model import LoraConfig

    module = VisionZeroModule(vlm=ModelConfig(name_or_path=tiny_random_path, lora=LoraConfig(dropout=0.1)))
    module.configure_model()
    return module


def test_a_checkpoint_of_nonfinite_weights_is_refused_naming_a_tensor(random_module):
    name, param = next((n, p) for n, p in random_module.net.named_parameters() if p.requires_grad)
    with torch.no_grad():
        param[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=f"refusing to write a checkpoint at step None: 1 .*net.{name}"):
        random_module.on_save_checkpoint({"state_dict": random_module.state_dict()})
    state = {f"net.{n}": p for n, p in random_module.net.named_parameters()}
    with pytest.raises(FloatingPointError, match=f"refusing to load the checkpoint of step 2: 1 .*net.{name}"):
        random_module.on_load_checkpoint({"state_dict": state, "global_step": 2})


def test_the_skip_count_and_the_random_state_resume(random_module):
    import random

    import numpy as np

    random_module.guard.skipped, random_module.guard.streak = 4, 1
    checkpoint = {"state_dict": random_module.state_dict()}
    random_module.on_save_checkpoint(checkpoint)
    draws = (torch.rand(2), np.random.rand(2), random.random())
    resumed = VisionZeroModule(vlm=random_module.vlm_config)
    resumed.__dict__["net"] = random_module.net
    resumed.on_load_checkpoint(checkpoint)
    assert (resumed.guard.skipped, resumed.guard.streak) == (4, 1)
    torch.rand(5)  # what happens between loading and the first step (the data loader draws its base seed) ...
    resumed.on_train_batch_start(None, 0)  # ... does not count: the state is restored just before the step
    again = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(draws[0], again[0]) and (draws[1] == again[1]).all() and draws[2] == again[2]
