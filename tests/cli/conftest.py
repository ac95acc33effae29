"""One short, finished training run shared by the tests of the commands that read runs back (play, export, compare)."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny.yaml")
TINY_SETTINGS = yaml.safe_load(Path(TINY).read_text())
"""tiny.yaml as written, for the tests that check a value it sets."""
# A few games per step and per evaluation: the same code paths as the real config, in seconds.
FAST = ["--data.games_per_step", "2", "--eval.games", "4", "--eval.every_n_steps", "2", "--eval.at_start", "false"]
TWO_STEPS = ["fit", "--config", TINY, *FAST, "--model.vlm.name_or_path", "tiny-random", "--trainer.max_steps", "2"]
"""A 2-step fit of the random tiny model, with the fast settings."""


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_random_path):
    """A 2-step fit of the random tiny model, with a checkpoint per step and the step-2 games logged."""
    from vzero.__main__ import main

    root = tmp_path_factory.mktemp("trained_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setattr(sys, "argv", ["vzero"])
        main(
            [
                *TWO_STEPS,
                "--checkpoint.every_n_train_steps",
                "1",
                "--transcripts.every_n_steps",
                "2",
                "--transcripts.games",
                "1",
                "--run_name",
                "trained",
            ]
        )
    (ckpt,) = root.glob("checkpoints/tiny/trained-*/last.ckpt")
    return SimpleNamespace(root=root, ckpt=ckpt, tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
