"""Every config under ``configs/`` trains 2 steps through ``vzero fit`` on this CPU, with an evaluation after each.

A recipe is run as it is written, from a folder where its relative paths (``data/...``, ``checkpoints/...``,
``./mlruns``) resolve: the picture folders it names are made there by the ``vzero pairs`` commands of its own header
(smaller), so a recipe whose evaluation cannot draw its pairs, or whose header does not make the folders it reads,
fails here. Only three kinds of keys are overridden, each derived from what the config holds, none per file:

- the hardware: one process on the CPU (``trainer.accelerator``, ``devices``, ``strategy``, ``num_nodes``). The
  recipes' precision (``bf16-true``), dtype, attention, gradient checkpointing and 4-bit quantisation run on a CPU as
  they are (bitsandbytes has CPU kernels), so they stay;
- the model: the tiny stand-in of the recipe's family (:data:`STAND_INS`), at most one tile or 16 visual tokens a
  picture when the recipe bounds ``model.vlm.max_pixels``;
- the sizes: 1 game a step, 2 evaluation games (one pair), 8 new tokens a turn, 2 steps, an evaluation every step.
"""

import json
import shlex
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from vzero.__main__ import main
from vzero.cli.renamed import flatten

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))

CPU = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto"]
CPU += ["--trainer.num_nodes", "1"]
SMALL = ["--data.games_per_step", "1", "--eval.games", "2", "--eval.every_n_steps", "1", "--trainer.max_steps", "2"]
SMALL += ["--data.sampling.clue.max_new_tokens", "8", "--data.sampling.decision.max_new_tokens", "8"]
STAND_INS = {"internvl": "internvl", "qwen2-vl": "qwen2-vl"}
"""A part of a hub id -> the toy family (:mod:`vzero.tiny.families`) that stands in for it; any other name (Qwen2.5-VL,
``tiny``) runs on the embedded tiny Qwen2.5-VL."""
TINY_PIXELS = 112 * 112  # one 112x112 tile of the toy InternVL; 16 visual tokens of the tiny Qwen2.5-VL
PAIRS = 2
"""Pairs each header's ``vzero pairs`` command writes here: at least 1 game a step and 1 evaluation pair."""


def header_pairs_commands(text: str) -> list[list[str]]:
    """The arguments of each ``vzero pairs`` command in a config's header comment."""
    header = [line.lstrip("# ") for line in text.splitlines() if line.startswith("#")]
    return [shlex.split(line.partition("#")[0])[2:] for line in header if line.startswith("vzero pairs ")]


def smaller(args: list[str]) -> list[str]:
    """``vzero pairs`` arguments with ``PAIRS`` pairs of small pictures."""
    out = list(args)
    out[out.index("--n") + 1] = str(PAIRS)
    return [*out, "--size", "96x64"]


def folder_roots(config: dict) -> list[str]:
    """The ``root`` of every source of files the config names (``data.pairs`` and ``eval.pairs``)."""
    sources = [(config.get(group) or {}).get("pairs") or {} for group in ("data", "eval")]
    return [s["init_args"]["root"] for s in sources if "root" in (s.get("init_args") or {})]


def model_overrides(config: dict, family_path) -> list[str]:
    """``--model.vlm`` overrides that put the recipe's family, in toy size, where its hub model was."""
    vlm = config.get("model", {}).get("vlm") or {}
    name = str(vlm.get("name_or_path", "tiny")).lower()
    family = next((family for part, family in STAND_INS.items() if part in name), None)
    out = ["--model.vlm.name_or_path", family_path(family) if family else "tiny"]
    if vlm.get("max_pixels"):
        out += ["--model.vlm.max_pixels", str(TINY_PIXELS)]
    return out


def test_the_stand_ins_follow_the_recipes_families():
    names = {"OpenGVLab/InternVL3-8B-hf": "internvl", "Qwen/Qwen2-VL-7B-Instruct": "qwen2-vl"}
    names |= {"Qwen/Qwen2.5-VL-7B-Instruct": "tiny", "tiny": "tiny"}
    for name, expected in names.items():
        config = {"model": {"vlm": {"name_or_path": name}}}
        assert model_overrides(config, lambda family: family) == ["--model.vlm.name_or_path", expected]


def test_header_commands_are_read_and_made_small():
    text = "# A recipe.\n#\n#   vzero pairs --source clevr --n 50 --seed 1 --out data/e  # evaluation\n"
    text += "#   vzero fit --config c.yaml\nx: 1\n"
    (command,) = header_pairs_commands(text)
    assert command == ["--source", "clevr", "--n", "50", "--seed", "1", "--out", "data/e"]
    assert smaller(command)[3] == str(PAIRS) and smaller(command)[-2:] == ["--size", "96x64"]


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_recipe_trains_and_evaluates_on_cpu(path, family_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["vzero"])
    text = path.read_text()
    config = yaml.safe_load(text)
    for command in header_pairs_commands(text):
        main(["pairs", *smaller(command)])
    missing = [root for root in folder_roots(config) if not (tmp_path / root / "manifest.jsonl").is_file()]
    assert not missing, f"{path.name} reads {missing}, which no `vzero pairs` command of its header makes"

    main(["fit", "--config", str(path), *CPU, *model_overrides(config, family_path), *SMALL, "--run_name", "recipe"])

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (run,) = mlflow.search_runs(experiment_names=[config["experiment"]], output_format="list")
    assert run.info.status == "FINISHED"
    client = mlflow.tracking.MlflowClient()
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss/pg")]
    assert steps == [0, 1]  # two steps taken
    evaluated = [m.step for m in client.get_metric_history(run.info.run_id, "eval/win_rate")]
    assert evaluated == ([0, 1, 2] if config.get("eval", {}).get("at_start") else [1, 2])
    # The recipe's own model settings and precision ran, not the test's: only the stand-in and its pictures differ.
    kept = {k: v for k, v in flatten(config).items() if k.startswith("model.vlm.") or k == "trainer.precision"}
    for key in ("model.vlm.name_or_path", "model.vlm.max_pixels"):
        kept.pop(key, None)
    logged = {k: run.data.params.get(k) for k in kept}
    assert logged == {k: v if isinstance(v, str) else json.dumps(v) for k, v in kept.items()}
