"""Transcripts as run artifacts: where they land without MLflow, and which training steps log theirs."""

import json
from types import SimpleNamespace

import pytest
from lightning.pytorch.loggers import CSVLogger

from vzero.callbacks import TrainingTranscripts, log_transcripts
from vzero.data.pairs import ClevrPairs
from vzero.game import GameConfig
from vzero.model.sampling import SamplingByStage, SamplingConfig
from vzero.rl.advantages import RoleBaselines
from vzero.rollout import RolloutEngine, build_batch
from vzero.rollout.batch import score_samples

SHORT = SamplingByStage(SamplingConfig(max_new_tokens=4), SamplingConfig(max_new_tokens=4))
CONFIG = GameConfig(n_civilians=2, clue_rounds=1)


@pytest.fixture(scope="module")
def batch(random_policy):
    source = ClevrPairs(n=3, seed=2, size=(96, 64))
    pairs = [source[i] for i in range(3)]
    rollout = RolloutEngine(random_policy).play(pairs, CONFIG, SHORT, seeds=[1, 2, 3])
    return build_batch(rollout, score_samples(rollout.transcripts, RoleBaselines(0.9)))


def trainer(tmp_path, step: int, loggers=None, rank: int = 0):
    loggers = [CSVLogger(tmp_path)] if loggers is None else loggers
    return SimpleNamespace(global_step=step, global_rank=rank, loggers=loggers, default_root_dir=str(tmp_path))


def test_without_mlflow_the_files_go_under_the_root_dir_and_without_loggers_nowhere(batch, tmp_path):
    where = log_transcripts(
        trainer(tmp_path, 5), "eval-step000005", batch.rollout.pairs, batch.rollout.transcripts, "t"
    )
    folder = tmp_path / "transcripts" / "eval-step000005"
    assert where == str(folder) and {p.name for p in folder.iterdir()} == {"transcripts.html", "transcripts.jsonl"}
    assert (
        log_transcripts(trainer(tmp_path, 5, loggers=[]), "x", batch.rollout.pairs, batch.rollout.transcripts, "t")
        == ""
    )
    assert log_transcripts(trainer(tmp_path, 5, rank=1), "y", batch.rollout.pairs, batch.rollout.transcripts, "t") == ""
    assert not (tmp_path / "transcripts" / "x").exists() and not (tmp_path / "transcripts" / "y").exists()


def test_training_transcripts_log_every_nth_step_with_the_batchs_advantages(batch, tmp_path):
    callback = TrainingTranscripts(every_n_steps=2, games=2)
    for step in (1, 2, 3, 4):
        callback.on_train_batch_end(trainer(tmp_path, step), None, {"batch": batch, "votes": 0.0}, None, 0)
    assert sorted(p.name for p in (tmp_path / "transcripts").iterdir()) == ["train-step000002", "train-step000004"]
    rows = [json.loads(line) for line in (tmp_path / "transcripts/train-step000002/transcripts.jsonl").open()]
    assert {r["game"] for r in rows} == {0, 1}  # the first 2 games
    played = [i for i, g in enumerate(batch.game.tolist()) if g < 2]
    assert [r["advantage"] for r in rows] == pytest.approx(batch.advantage[played].tolist())


def test_training_transcripts_are_off_by_default_and_check_their_settings(batch, tmp_path):
    TrainingTranscripts().on_train_batch_end(trainer(tmp_path, 10), None, {"batch": batch}, None, 0)
    assert not (tmp_path / "transcripts").exists()
    with pytest.raises(ValueError, match="transcripts.every_n_steps must be >= 0"):
        TrainingTranscripts(every_n_steps=-1)
    with pytest.raises(ValueError, match="transcripts.games must be >= 1"):
        TrainingTranscripts(games=0)
