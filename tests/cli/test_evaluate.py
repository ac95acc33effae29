"""`vzero evaluate`: question suites answered by a model, a config's model or a checkpoint alone; a table and JSON."""

import json

import pytest

from vzero.__main__ import main

from .conftest import TINY

FAST = ["--questions", "4", "--max_new_tokens", "8"]


def test_evaluate_a_model_prints_a_table_and_writes_json(tiny_random_path, tmp_path, capsys):
    out = tmp_path / "ev"
    main(["evaluate", "--model", "tiny-random", "--suites", "clevr-qa,clevr-diff,chart-qa:3", *FAST, "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| suite | accuracy [95% CI] | chance | blind | unparseable | n | seconds |" in printed
    report = json.loads((out / "evaluate.json").read_text())
    assert report["model"] == "tiny-random" and report["max_new_tokens"] == 8 and report["seed"] == 0
    assert [(name, r["n"]) for name, r in report["suites"].items()] == [
        ("clevr-qa", 4),
        ("clevr-diff", 4),
        ("chart-qa", 3),
    ]
    for name, r in report["suites"].items():
        assert f"| {name} | {r['accuracy']:.3f} [" in printed
        assert 0 <= r["lo"] <= r["accuracy"] <= r["hi"] <= 1 and 0 < r["chance"] < 1 and r["seconds"] > 0
        assert sum(k["n"] for k in r["kinds"].values()) == r["n"]
        assert sum(k["correct"] for k in r["kinds"].values()) == r["correct"]
    rows = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert len(rows) == 11 and {"question", "answer", "response", "correct", "parsed"} <= set(rows[0])
    unparsed = sum(not r["parsed"] for r in rows if r["suite"] == "clevr-qa")
    assert report["suites"]["clevr-qa"]["unparseable"] == unparsed / 4


def test_evaluate_a_configs_model_takes_its_training_seed(tiny_random_path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["--config", TINY, "--model.vlm.name_or_path", "tiny-random", "--data.pairs.init_args.seed", "3"]
    report = main(["evaluate", *args, "--suites", "clevr-diff", *FAST, "--out", "ev"])
    assert report is None  # the command's own return value is not passed through main
    saved = json.loads((tmp_path / "ev" / "evaluate.json").read_text())
    assert saved["seed"] == 3 and saved["model"] == "the base model (tiny-random)"
    assert saved["suites"]["clevr-diff"]["n"] == 4


def test_evaluate_a_checkpoint_without_a_config(trained_run, tmp_path, capsys):
    main(["evaluate", "--ckpt_path", str(trained_run.ckpt), "--suites", "clevr-qa:2", "--out", str(tmp_path / "ev")])
    report = json.loads((tmp_path / "ev" / "evaluate.json").read_text())
    assert report["model"] == f"step 2 of {trained_run.ckpt}" and report["suites"]["clevr-qa"]["n"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--suites", "clevr-qa"], "give a model"),
        (["--model", "tiny-random", "--suites", "clevr-qa:0"], "--suites: suite 'clevr-qa': questions must be"),
        (["--model", "tiny-random", "--questions", "0"], "--questions must be >= 1"),
        (["--config", TINY, "--model", "tiny-random"], "--model is for evaluating without a config"),
        (["--model", "tiny-random", "--suites", "clevr-vqa"], "--suites: 'clevr-vqa' is neither a suite name"),
    ],
)
def test_bad_arguments_are_one_line_errors(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as error:
        main(["evaluate", *args, "--out", str(tmp_path / "ev")])
    assert error.value.code == 2 and message in capsys.readouterr().err


def test_a_checkpoint_without_model_settings_is_one_error_naming_it(tmp_path):
    import torch

    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": {}, "global_step": 3}, path)
    with pytest.raises(SystemExit, match="vzero evaluate: error: .*old.ckpt has no model settings"):
        main(["evaluate", "--ckpt_path", str(path), "--suites", "clevr-qa:2", "--out", str(tmp_path / "ev")])
