"""`vzero compare`: the runs of an experiment in one table and one figure, from a real MLflow store."""

import json

import mlflow
import pytest

from vzero.cli.compare import compare


@pytest.fixture
def store(tmp_path):
    """Two runs with known settings and evaluation curves, logged through MLflow's own client."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.create_experiment("ablation", artifact_location=(tmp_path / "artifacts").as_uri())
    curves = {"iterative": [0.50, 0.62, 0.58], "pure_clue": [0.50, 0.48, 0.52]}
    for name, win_rates in curves.items():
        run = client.create_run(exp, run_name=name)
        rid = run.info.run_id
        client.log_param(rid, "model.mode", "iterative" if name == "iterative" else "clue")
        client.log_param(rid, "model.loss.kl_coef", "0.04")  # the same in both: not a column
        client.log_param(rid, "model.loss.clip_eps", "0.2" if name == "iterative" else "0.3")
        client.log_param(rid, "run_name", name)
        for i, w in enumerate(win_rates):
            step = 10 * i
            for key, value in {
                "eval/win_rate": w,
                "eval/win_rate_lo": w - 0.1,
                "eval/win_rate_hi": w + 0.1,
                "eval/decision_acc": 0.2 + i / 10,
                "eval/na_rate": 0.3 - i / 10,
            }.items():
                client.log_metric(rid, key, value, step=step)
            client.log_metric(rid, "stage/decision", float(i % 2), step=step)
        client.set_terminated(rid)
    return uri


def test_compare_tabulates_final_and_best_win_rates_and_what_differs(store, tmp_path, capsys):
    out = tmp_path / "cmp"
    summaries = compare("ablation", tracking_uri=store, out=str(out))
    by_name = {s.name: s for s in summaries}
    it = by_name["iterative"]
    assert it.final["win_rate"] == pytest.approx(0.58) and it.final["step"] == 20
    assert it.best["win_rate"] == pytest.approx(0.62) and it.best["step"] == 10
    assert it.final["decision_acc"] == pytest.approx(0.4) and it.final["na_rate"] == pytest.approx(0.1)
    assert it.steps == 20 and it.mode == "iterative"
    assert it.differs == {"model.loss.clip_eps": "0.2"}  # the mode has its own column; equal settings have none
    assert by_name["pure_clue"].differs == {"model.loss.clip_eps": "0.3"}
    printed = capsys.readouterr().out
    assert "| iterative | iterative | 0.2 | 0.580 [0.480, 0.680] | 0.620 (10) | 0.400 | 0.100 | 20 |" in printed
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["name"] for r in json.loads((out / "compare.json").read_text())] == ["iterative", "pure_clue"]


def test_compare_picks_runs_by_name_in_order_and_names_what_is_missing(store, tmp_path):
    summaries = compare("ablation", runs=["pure_clue", "iterative"], tracking_uri=store, out=str(tmp_path / "c"))
    assert [s.name for s in summaries] == ["pure_clue", "iterative"]
    with pytest.raises(SystemExit, match="no run named 'pure_decision'"):
        compare("ablation", runs=["pure_decision"], tracking_uri=store, out=str(tmp_path / "c"))
    with pytest.raises(SystemExit, match="no experiment 'nope'.*ablation"):
        compare("nope", tracking_uri=store, out=str(tmp_path / "c"))


def test_compare_reads_a_real_training_run(trained_run, tmp_path):
    (summary,) = compare("vzero-tiny", tracking_uri=trained_run.tracking_uri, out=str(tmp_path / "c"))
    assert summary.name == "trained" and summary.mode == "iterative" and summary.steps == 2
    assert summary.final["step"] == 2 and 0 <= summary.final["win_rate_lo"] <= summary.final["win_rate_hi"] <= 1
    assert summary.status == "FINISHED" and summary.wall_s > 0
