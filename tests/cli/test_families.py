"""`vzero fit` and its resume on the toy Qwen2-VL and InternVL models, with the default settings (vision cache on).

The embedded model (Qwen2.5-VL) runs the same path in ``test_train.py``.
"""

import sys

import mlflow
import pytest
import torch

from vzero.__main__ import main

from .conftest import FAST, TINY


@pytest.mark.parametrize("family", ["qwen2-vl", "internvl"])
def test_a_family_trains_and_resumes(family, family_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["vzero"])
    path = family_path(family)
    common = ["fit", "--config", TINY, *FAST, "--model.vlm.name_or_path", path, "--model.schedule.steps", "2"]
    common += ["--checkpoint.every_n_train_steps", "1", "--eval.every_n_steps", "0"]
    main([*common, "--trainer.max_steps", "1"])
    (folder,) = (tmp_path / "checkpoints/tiny").iterdir()
    first = torch.load(folder / "last.ckpt", weights_only=True)
    assert first["global_step"] == 1 and first["hyper_parameters"]["vlm"]["name_or_path"] == path
    assert first["state_dict"] and all("lora_" in k and "language_model" in k for k in first["state_dict"])

    main([*common, "--trainer.max_steps", "2", "--ckpt_path", "last"])
    resumed = torch.load(folder / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 2 and resumed["GameRolloutDataModule"]["position"] == 2
    assert resumed["vzero"]["mlflow_run_id"] == first["vzero"]["mlflow_run_id"]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    history = mlflow.tracking.MlflowClient().get_metric_history(first["vzero"]["mlflow_run_id"], "loss/pg")
    assert [m.step for m in history] == [0, 1]
    assert all(torch.isfinite(v).all() for v in resumed["state_dict"].values())
