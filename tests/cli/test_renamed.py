"""Renamed config keys: old YAML and old checkpoints' settings still load, and say what to write instead."""

import sys

import pytest
import torch

from vzero.__main__ import main
from vzero.cli.renamed import upgrade_settings
from vzero.model import DecodingConfig
from vzero.rl.stage import StageConfig

from .conftest import TINY, TINY_SETTINGS

OLD_MODEL_KEYS = """model:
  model:
    name_or_path: tiny-random
    lora:
      r: 8
  max_batch_size: 7
  decoder: generate
  compile_decode: false
  reuse_prompts_gb: 0.5
"""
NEW_NAMES = {
    "model.model": "model.vlm",
    "model.max_batch_size": "model.decoding.max_batch_size",
    "model.decoder": "model.decoding.decoder",
    "model.compile_decode": "model.decoding.compile",
    "model.reuse_prompts_gb": "model.decoding.reuse_prompts_gb",
}


@pytest.fixture(autouse=True)
def _command_line(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["vzero"])


def test_the_old_phases_key_still_works_and_says_it_is_deprecated(tmp_path, capsys):
    old = tmp_path / "old.yaml"
    old.write_text("phases:\n  k_min: 3\n  patience: 6\n")
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", TINY, "--config", str(old), "--print_config"])
    assert e.value.code == 0 and "k_min: 3" in capsys.readouterr().out


def test_the_old_phases_key_configures_the_stage_callback(tmp_path, monkeypatch, caplog):
    from vzero.callbacks import IterativeSPO
    from vzero.cli.train import VZeroCLI

    monkeypatch.chdir(tmp_path)
    cli = VZeroCLI(args=["--config", TINY, "--phases.k_min", "3", "--phases.rho", "0.9"], run=False)
    (callback,) = [c for c in cli.trainer.callbacks if isinstance(c, IterativeSPO)]
    assert (callback.config.k_min, callback.config.rho) == (3, 0.9)
    # a field the old key leaves alone keeps the config's `stage` value
    assert callback.config.patience == TINY_SETTINGS["stage"]["patience"] != StageConfig().patience
    assert "deprecated" in caplog.text and "'stage'" in caplog.text


def test_old_model_keys_still_parse(tmp_path, capsys):
    old = tmp_path / "old.yaml"
    old.write_text(OLD_MODEL_KEYS)
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", TINY, "--config", str(old), "--print_config"])
    assert e.value.code == 0 and "name_or_path: tiny-random" in capsys.readouterr().out


def test_old_model_keys_configure_the_module_and_name_the_new_keys(tmp_path, monkeypatch, caplog):
    from vzero.cli.train import VZeroCLI

    monkeypatch.chdir(tmp_path)
    old = tmp_path / "old.yaml"
    old.write_text(OLD_MODEL_KEYS)
    cli = VZeroCLI(args=["--config", TINY, "--config", str(old), "--trainer.logger", "false"], run=False)
    config = cli.model.vlm_config
    assert (config.name_or_path, config.lora.r, config.lora.alpha) == ("tiny-random", 8, 32)  # alpha: tiny.yaml's
    assert config.dtype == "float32"  # a field the old key leaves alone keeps the config's value
    assert cli.model.decoding == DecodingConfig(decoder="generate", reuse_prompts_gb=0.5, max_batch_size=7)
    for old_key, new_key in NEW_NAMES.items():
        assert f"'{old_key}' is deprecated: write '{new_key}' instead" in caplog.text


def test_old_flat_keys_on_the_command_line(tmp_path, monkeypatch, caplog):
    from vzero.cli.train import VZeroCLI

    monkeypatch.chdir(tmp_path)
    args = ["--config", TINY, "--model.model.name_or_path", "tiny-random", "--model.reuse_prompts_gb", "0"]
    cli = VZeroCLI(args=[*args, "--trainer.logger", "false"], run=False)
    assert cli.model.vlm_config.name_or_path == "tiny-random" and cli.model.decoding.reuse_prompts_gb == 0
    assert cli.model.decoding.max_batch_size == 64  # tiny.yaml's, under its new key
    assert "'model.reuse_prompts_gb' is deprecated: write 'model.decoding.reuse_prompts_gb'" in caplog.text


def test_an_old_checkpoints_settings_are_read_under_the_new_names(caplog):
    old = {
        "model": {"name_or_path": "tiny", "lora": {"r": 16}},
        "loss": {"kl_coef": 0.04},
        "mode": "iterative",
        "max_batch_size": 32,
        "decoder": "auto",
        "compile_decode": False,
        "reuse_prompts_gb": 4.0,
    }
    new = upgrade_settings(old)
    assert new == {
        "vlm": {"name_or_path": "tiny", "lora": {"r": 16}},
        "loss": {"kl_coef": 0.04},
        "mode": "iterative",
        "decoding": {"max_batch_size": 32, "decoder": "auto", "compile": False, "reuse_prompts_gb": 4.0},
    }
    assert "'max_batch_size' is read as 'decoding.max_batch_size'" in caplog.text
    assert upgrade_settings(new) == new  # today's names pass through


def test_an_old_checkpoint_exports(trained_run, tmp_path):
    from vzero.cli.export import export

    checkpoint = torch.load(trained_run.ckpt, weights_only=True)
    settings = checkpoint["hyper_parameters"]
    decoding = settings.pop("decoding")
    settings["model"] = settings.pop("vlm")
    settings.update(max_batch_size=decoding["max_batch_size"], decoder=decoding["decoder"])
    path = tmp_path / "old.ckpt"
    torch.save(checkpoint, path)
    assert set(export(path, tmp_path / "out")) == {"adapter"}
