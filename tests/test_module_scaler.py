"""``VisionZeroModule._update`` under 16-mixed's gradient scaler (a real ``GradScaler`` and Lightning's
``MixedPrecision`` plugin, on the CPU): the guard and the clipping see unscaled gradients, and an overflow is the
scaler's to drop, not a non-finite update of the guard's."""

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.strategies import SingleDeviceStrategy

from vzero.module import VisionZeroModule
from vzero.rl.loss import LossConfig

LENGTHS = [7, 5, 6, 3]


def toy_module(plugin: MixedPrecision | None, max_grad_norm: float, features_scale: float = 1.0):
    """A module whose policy is log-probs = logsigmoid(features @ w) over 4 rows, with an SGD optimizer stepped as
    Lightning steps it (through ``plugin.optimizer_step`` when there is a plugin)."""
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(4, 7, 3, generator=gen) * features_scale  # [B, T, 3]
    advantage = torch.randn(4, generator=gen)  # [B]
    ref = torch.nn.functional.logsigmoid(torch.randn(4, 7, generator=gen))  # [B, T]
    mask = (torch.arange(7)[None, :] < torch.tensor(LENGTHS)[:, None]).float()  # [B, T]
    net = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.3, -0.2, 0.5]]))
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    cfg = LossConfig(kl_coef=0.3, max_grad_norm=max_grad_norm, micro_batch_size=2, max_nonfinite_steps=1)
    module = VisionZeroModule(loss=cfg)
    module.net = net
    module.__dict__["policy"] = SimpleNamespace(
        logprobs=lambda inputs, temps: torch.nn.functional.logsigmoid(net(inputs.features))[..., 0]  # [b, C]
    )
    strategy = SingleDeviceStrategy(torch.device("cpu"))
    module.trainer = SimpleNamespace(
        strategy=strategy, world_size=1, global_step=0, is_global_zero=True, precision_plugin=plugin
    )
    if plugin is None:
        module.manual_backward = lambda loss: loss.backward()
        module.optimizers = lambda: opt
    else:
        plugin._after_closure = lambda model, optimizer: None  # the trainer's hooks: none here
        module.manual_backward = lambda loss: plugin.scaler.scale(loss).backward()  # what plugin.pre_backward does
        step = lambda: plugin.optimizer_step(opt, model=module, closure=lambda: None)  # noqa: E731
        module.optimizers = lambda: SimpleNamespace(step=step, zero_grad=opt.zero_grad)
    module.lr_schedulers = lambda: sched
    micro = []
    for lo in range(0, 4, 2):
        inputs = SimpleNamespace(features=features[lo : lo + 2], completion_mask=mask[lo : lo + 2])
        micro.append((slice(lo, lo + 2), inputs, torch.ones(2)))
    batch = SimpleNamespace(samples=[SimpleNamespace(completion_ids=[0] * n) for n in LENGTHS], advantage=advantage)

    def update() -> dict:
        return module._update(batch, micro, [ref[m[0]] for m in micro], None)

    return module, update, sched


def scaled(init_scale: float) -> MixedPrecision:
    return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=init_scale))


@pytest.mark.parametrize("max_grad_norm", [0.0, 0.05])
def test_the_guard_and_the_clipping_see_unscaled_gradients(max_grad_norm):
    plain, update, _ = toy_module(None, max_grad_norm)
    expected = update()
    plugin = scaled(2.0**10)
    module, update, _ = toy_module(plugin, max_grad_norm)
    got = update()
    assert expected["grad_norm"] > 0.05  # so 0.05 clips
    assert got["grad_norm"] == pytest.approx(expected["grad_norm"], rel=1e-6)  # not 1024 times it
    # The same step: clipped at 0.05 of the unscaled gradients (not of the scaled ones, 1024 times smaller after).
    torch.testing.assert_close(module.net.weight, plain.net.weight, rtol=1e-5, atol=1e-6)  # clipping's eps: 1e-6
    assert not torch.equal(module.net.weight, torch.tensor([[0.3, -0.2, 0.5]]))
    assert plugin.scaler.get_scale() == 2.0**10 and module.guard.overflows == 0
    assert got["train/scaler_overflows"] == 0 and "train/scaler_overflows" not in expected


def test_an_overflow_is_left_to_the_scaler_and_never_stops_the_run():
    """With the scale at 2**127 the scaled gradients overflow: the scaler drops the step and halves the scale, again
    and again, with loss.max_nonfinite_steps=1, and the step finally taken is the one without a scaler."""
    plain, update, _ = toy_module(None, 0.05, features_scale=30.0)
    update()
    plugin = scaled(2.0**127)
    module, update, sched = toy_module(plugin, 0.05, features_scale=30.0)
    start = module.net.weight.detach().clone()
    overflows = 0
    while torch.equal(module.net.weight, start):
        assert overflows < 130
        out = update()  # never the guard's FloatingPointError, although the limit is 1
        overflows += 1
    overflows -= 1  # the last update was taken
    assert overflows >= 1 and module.guard.overflows == overflows and out["train/scaler_overflows"] == overflows
    assert plugin.scaler.get_scale() == 2.0 ** (127 - overflows)  # halved at each
    assert (module.guard.skipped, module.guard.streak) == (0, 0)
    assert sched.last_epoch == overflows + 1  # the scheduler steps with each step Lightning counts
    torch.testing.assert_close(module.net.weight, plain.net.weight, rtol=1e-5, atol=1e-6)  # clipping's eps: 1e-6


@pytest.mark.slow
def test_a_fit_under_lightnings_16_mixed_plugin_survives_a_run_of_overflows(tiny_path):
    """Lightning's own 16-mixed flow (fp16 autocast, its MixedPrecision plugin calling the scaler's unscale_, step and
    update inside opt.step()), on the CPU: three overflowing steps in a row with loss.max_nonfinite_steps=3 leave the
    weights, halve the scale three times and do not stop the run. (The ``generate`` decoder: vzero's static cache is
    allocated in the weights' dtype, which autocast's keys and values do not match.)"""
    import lightning as L

    from vzero.callbacks import IterativeSPO
    from vzero.data.pairs import ClevrPairs
    from vzero.game import GameConfig
    from vzero.model import ModelConfig
    from vzero.model.policy import DecodingConfig
    from vzero.model.sampling import SamplingByStage, SamplingConfig
    from vzero.rollout import GameRolloutDataModule

    sampling = SamplingByStage(SamplingConfig(max_new_tokens=32), SamplingConfig(max_new_tokens=48))
    decoding = DecodingConfig(decoder="generate")
    module = VisionZeroModule(vlm=ModelConfig(name_or_path=tiny_path), mode="both", schedule=None, decoding=decoding)
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.net.named_parameters() if p.requires_grad}
    game = GameConfig(n_civilians=2, clue_rounds=1)
    data = GameRolloutDataModule(ClevrPairs(n=8, seed=3, size=(96, 64)), game=game, sampling=sampling, games_per_step=2)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**100))
    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[IterativeSPO()],
        plugins=[plugin],
    )
    trainer.fit(module, data)
    assert trainer.global_step == 3 and module.guard.overflows == 3
    assert (module.guard.skipped, module.guard.streak) == (0, 0)
    assert plugin.scaler.get_scale() == 2.0**97
    assert trainer.callback_metrics["train/scaler_overflows"] == 3
    assert all(torch.equal(p, before[n]) for n, p in module.net.named_parameters() if p.requires_grad)
