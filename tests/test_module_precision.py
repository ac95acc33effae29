"""Under ``trainer.precision: bf16-true`` the frozen base is bf16 and the LoRA adapters, with AdamW's state, fp32:
through a real Trainer, its checkpoints (fp32 ones and older bf16 ones) and ``vzero export``."""

import json

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors import safe_open

from vzero.callbacks import IterativeSPO
from vzero.checkpoint import VerifiedCheckpointIO
from vzero.data.pairs import ClevrPairs
from vzero.game import GameConfig
from vzero.model import ModelConfig
from vzero.model.sampling import SamplingByStage, SamplingConfig
from vzero.module import VisionZeroModule
from vzero.rl.loss import LossConfig
from vzero.rollout import GameRolloutDataModule

STEPS = 3  # LoRA-B starts at zero, so LoRA-A's first gradient comes in step 2: two steps move it
LR = 1e-5


def lora(net, kind="") -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in net.named_parameters() if f"lora_{kind}" in n}


class StartOfFit(L.Callback):
    """The adapters as the optimizer receives them, after Lightning's precision conversion."""

    def on_fit_start(self, trainer, pl_module):
        self.adapters = lora(pl_module.net)


def fit(path, folder, max_steps=STEPS, ckpt_path=None, precision="bf16-true"):
    module = VisionZeroModule(
        vlm=ModelConfig(name_or_path=path, dtype="bfloat16"),
        mode="both",
        loss=LossConfig(micro_batch_size=32),
        optimizer=lambda p: torch.optim.AdamW(p, lr=LR),
        schedule=None,
    )
    sampling = SamplingByStage(SamplingConfig(max_new_tokens=12), SamplingConfig(max_new_tokens=12))
    game = GameConfig(n_civilians=2, clue_rounds=1)
    data = GameRolloutDataModule(ClevrPairs(n=8, seed=3, size=(96, 64)), game=game, sampling=sampling, games_per_step=2)
    start = StartOfFit()
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        precision=precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[IterativeSPO(), start, ModelCheckpoint(folder, save_last=True)],
        plugins=[VerifiedCheckpointIO()],
    )
    L.seed_everything(0)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return module, trainer, start.adapters


@pytest.fixture(scope="module")
def run(tiny_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bf16")
    module, trainer, start = fit(tiny_path, folder)
    return module, trainer, start, folder / "last.ckpt"


def adamw_state(trainer) -> list[torch.Tensor]:
    return [v for s in trainer.optimizers[0].state.values() for k, v in s.items() if k != "step"]


def test_the_adapters_and_adamw_state_are_fp32_and_the_frozen_base_bf16(run):
    module, trainer, start, _ = run
    trainable = [p for p in module.net.parameters() if p.requires_grad]
    frozen = [p for p in module.net.parameters() if not p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    assert all(v.dtype == torch.float32 for v in start.values())  # already at the start, after the conversion
    state = adamw_state(trainer)
    assert len(state) == 2 * len(trainable) and all(v.dtype == torch.float32 for v in state)


def test_lora_a_moves_at_lr_1e_5_where_bf16_would_round_the_steps_away(run):
    module, _, start, _ = run
    end = lora(module.net, "A")
    changed = sum(int((end[n] != start[n]).sum()) for n in end) / sum(v.numel() for v in end.values())
    assert changed > 0.9
    # The same movement on bf16 weights: most of LoRA-A (|w| up to 1/sqrt(128) on the tiny model) rounds back.
    in_bf16 = sum(int(((start[n] + end[n] - start[n]).bfloat16() != start[n].bfloat16()).sum()) for n in end)
    assert in_bf16 / sum(v.numel() for v in end.values()) < 0.25


def test_a_checkpoint_holds_fp32_adapters_and_resumes_them_bit_for_bit(run, tiny_path, tmp_path):
    module, trainer, _, ckpt = run
    saved = torch.load(ckpt, weights_only=True)
    weights = {k.removeprefix("net."): v for k, v in saved["state_dict"].items()}
    assert weights.keys() == lora(module.net).keys()
    assert all(v.dtype == torch.float32 and torch.equal(v, module.net.get_parameter(k)) for k, v in weights.items())
    # Restored before Lightning converts the module to bf16, and never rounded by it; AdamW's state fp32 too.
    resumed, again, _ = fit(tiny_path, tmp_path, max_steps=STEPS, ckpt_path=ckpt)
    assert again.global_step == STEPS
    assert all(torch.equal(v, resumed.net.get_parameter(k)) for k, v in weights.items())
    assert all(a.dtype == torch.float32 and torch.equal(a, b) for a, b in zip(adamw_state(again), adamw_state(trainer)))


@pytest.fixture(scope="module")
def older(run, tmp_path_factory):
    """The run's last checkpoint as an older vzero wrote it under bf16-true: adapters and AdamW's moments in bf16."""
    *_, ckpt = run
    old = torch.load(ckpt, weights_only=True)
    old["state_dict"] = {k: v.bfloat16() for k, v in old["state_dict"].items()}
    for s in old["optimizer_states"][0]["state"].values():
        s.update({k: v.bfloat16() for k, v in s.items() if k != "step"})
    path = tmp_path_factory.mktemp("older") / "old.ckpt"
    VerifiedCheckpointIO().save_checkpoint(old, path)
    return path, old["state_dict"]


def test_an_older_bf16_checkpoint_resumes_into_fp32_adapters(older, tiny_path, tmp_path):
    path, weights = older
    resumed, again, _ = fit(tiny_path, tmp_path, max_steps=STEPS, ckpt_path=path)
    for k, v in weights.items():
        p = resumed.net.get_parameter(k.removeprefix("net."))
        assert p.dtype == torch.float32 and torch.equal(p, v.float())
    assert all(v.dtype == torch.float32 for v in adamw_state(again))


def saved_adapter(folder) -> dict[str, torch.Tensor]:
    with safe_open(folder / "adapter_model.safetensors", "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)


def test_export_writes_the_adapter_in_fp32_and_the_merged_model_in_the_base_dtype(run, tmp_path):
    from vzero.cli.export import export

    module, _, _, ckpt = run
    with torch.no_grad():
        written = export(ckpt, tmp_path, merge=True)
    adapter = saved_adapter(written["adapter"])
    assert adapter and all(v.dtype == torch.float32 for v in adapter.values())
    trained = lora(module.net, "A")
    name = next(iter(trained))
    key = name.replace(".default", "")
    assert torch.equal(adapter[key], trained[name])  # the fp32 weights as trained, not rounded
    assert json.loads((written["merged"] / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(written["merged"] / "model.safetensors", "pt") as f:
        assert all(f.get_slice(k).get_dtype() == "BF16" for k in f.keys())  # noqa: SIM118


def test_export_of_an_older_bf16_checkpoint_casts_its_adapter_up(older, tmp_path):
    from vzero.cli.export import export

    path, weights = older
    with torch.no_grad():
        adapter = saved_adapter(export(path, tmp_path)["adapter"])
    name = next(iter(weights))
    key = name.removeprefix("net.").replace(".default", "")
    assert all(v.dtype == torch.float32 for v in adapter.values()) and torch.equal(adapter[key], weights[name].float())


@pytest.mark.parametrize("lora", [True, False])
def test_converting_the_module_keeps_lora_adapters_fp32_bit_for_bit_and_a_full_finetune_is_converted_whole(
    tiny_random_path, lora
):
    module = VisionZeroModule(vlm=ModelConfig(name_or_path=tiny_random_path, **({} if lora else {"lora": None})))
    module.configure_model()
    trainable = {n: p for n, p in module.net.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in trainable.items()}
    module.to(torch.bfloat16)  # what Lightning's bf16-true plugin does at setup
    frozen = [p for p in module.net.parameters() if not p.requires_grad]
    assert all(p.dtype == torch.bfloat16 for p in frozen)
    if lora:
        assert all(p.dtype == torch.float32 and torch.equal(p, before[n]) for n, p in trainable.items())
    else:
        assert not frozen and all(p.dtype == torch.bfloat16 for p in trainable.values())
        assert all(p.dtype == torch.float32 for p in module.policy.reference_copy.parameters())  # model.vlm.dtype


def test_under_autocast_the_rollouts_decode_with_generate_and_train(tiny_path, tmp_path):
    # bf16-mixed: keys come out fp32 and values bf16, which vzero's static cache cannot hold (it crashed there).
    module, trainer, _ = fit(tiny_path, tmp_path, max_steps=1, precision="bf16-mixed")
    assert module.policy.decoder == "generate" and module.decoding.decoder == "auto" and trainer.global_step == 1


def test_an_explicit_vzero_decoder_under_autocast_is_refused_naming_both_keys():
    from vzero.model import DecodingConfig

    for precision in ("bf16-mixed", "16-mixed"):
        with pytest.raises(ValueError, match=rf"decoder='vzero' cannot run under trainer.precision={precision}"):
            DecodingConfig(decoder="vzero").under(precision)
        assert DecodingConfig().under(precision).decoder == "generate"
    for precision in ("bf16-true", "32-true", "16-true"):
        assert DecodingConfig(decoder="vzero").under(precision) == DecodingConfig(decoder="vzero")
