"""`vzero export`: a checkpoint becomes a peft adapter folder and a merged HF folder that computes the same logits."""

import json

import pytest
import torch

from vzero.checkpoint import DIGEST_KEY
from vzero.cli.export import export, load_trained
from vzero.cli.runs import CheckpointError
from vzero.data.pairs import ClevrPairs


def _inputs(processor):
    picture = ClevrPairs(n=1, seed=3, size=(96, 64))[0].original
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the picture."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(text=[text], images=[picture], return_tensors="pt")


@pytest.fixture
def moved_checkpoint(trained_run, tmp_path):
    """The run's checkpoint with every LoRA weight moved at random. Two steps of the random tiny model leave the adapter
    at its start (its gibberish votes all score the same, so their advantages are 0), and this test needs an adapter
    that changes the logits."""
    checkpoint = torch.load(trained_run.ckpt, weights_only=True)
    generator = torch.Generator().manual_seed(0)
    checkpoint["state_dict"] = {
        k: v + 0.05 * torch.randn(v.shape, generator=generator) for k, v in checkpoint["state_dict"].items()
    }
    checkpoint.pop(DIGEST_KEY, None)  # the tensors changed on purpose
    path = tmp_path / "moved.ckpt"
    torch.save(checkpoint, path)
    return path


def test_merged_export_computes_the_training_policys_logits(moved_checkpoint, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    written = export(moved_checkpoint, tmp_path / "out", merge=True)
    assert set(written) == {"adapter", "merged"}
    adapter = written["adapter"]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter.iterdir()}
    settings = json.loads((adapter / "adapter_config.json").read_text())
    assert settings["base_model_name_or_path"] == "tiny-random"  # the name the run used, not a cache folder
    assert settings["r"] == 16 and settings["lora_alpha"] == 32

    policy_net, processor, _ = load_trained(moved_checkpoint)
    merged = AutoModelForImageTextToText.from_pretrained(written["merged"]).eval()
    merged_processor = AutoProcessor.from_pretrained(written["merged"])
    batch = _inputs(processor)
    assert torch.equal(batch["input_ids"], _inputs(merged_processor)["input_ids"])
    with torch.no_grad():
        trained = policy_net(**batch).logits
        exported = merged(**batch).logits
        with policy_net.disable_adapter():
            base = policy_net(**batch).logits
    assert (trained - exported).abs().max() < 1e-5
    assert (trained - base).abs().max() > 1e-2  # the adapter changes the logits, so the check above means something


def test_a_checkpoint_without_model_settings_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": {}, "global_step": 3}, path)
    with pytest.raises(CheckpointError, match="old.ckpt has no model settings"):
        export(path, tmp_path / "out")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_an_unreadable_checkpoint_is_one_clear_error(tmp_path, content):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="broken.ckpt") as error:
        export(path, tmp_path / "out")
    assert "weights_only=False" not in str(error.value)


def test_export_command_line(trained_run, tmp_path, capsys):
    from vzero.__main__ import main

    main(["export", "--ckpt_path", str(trained_run.ckpt), "--out", str(tmp_path / "cli")])
    assert f"wrote adapter: {tmp_path / 'cli' / 'adapter'}" in capsys.readouterr().out
    assert not (tmp_path / "cli" / "merged").exists()  # --merge not given
    with pytest.raises(SystemExit, match="no such checkpoint file"):
        main(["export", "--ckpt_path", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "x")])
