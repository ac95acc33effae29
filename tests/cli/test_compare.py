"""`vzero compare`: the runs of an experiment in one table and one figure, from a real MLflow store."""

import json

import mlflow
import pytest

from vzero.cli.compare import compare, figure, grid, panels


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


def test_runs_without_suites_keep_the_old_columns_and_four_panels(store, tmp_path, capsys):
    summaries = compare("ablation", tracking_uri=store, out=str(tmp_path / "c"))
    head = capsys.readouterr().out.splitlines()[0]
    old = ["run", "mode", "model.loss.clip_eps", "final win rate [95% CI]", "best (step)", "decision acc", "N/A"]
    assert head == "| " + " | ".join([*old, "steps", "wall"]) + " |"
    assert all(s.suites == {} for s in summaries)
    keys = ["eval/win_rate", "eval/decision_acc", "eval/na_rate", "stage/decision"]
    assert [key for key, _ in panels(summaries)] == keys
    fig = figure(summaries, "t")
    assert len(fig.axes) == 4 and fig.axes[0].get_subplotspec().get_gridspec().get_geometry() == (2, 2)


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


@pytest.fixture
def suite_store(tmp_path):
    """Three runs: two answered clevr-qa (one of them chart-qa too) at every evaluation, one answered no suite."""
    uri = f"sqlite:///{tmp_path / 'suites.db'}"
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.create_experiment("suites", artifact_location=(tmp_path / "artifacts").as_uri())
    suites = {"both": ["clevr-qa", "chart-qa"], "clevr": ["clevr-qa"], "none": []}
    for r, (name, answered) in enumerate(suites.items()):
        rid = client.create_run(exp, run_name=name).info.run_id
        client.log_param(rid, "model.mode", "iterative")
        for i in range(3):
            step = 10 * i
            for key, value in {"eval/win_rate": 0.5, "eval/win_rate_lo": 0.4, "eval/win_rate_hi": 0.6}.items():
                client.log_metric(rid, key, value, step=step)
            for j, suite in enumerate(answered):
                acc = 0.1 * (i + 1) + 0.01 * r + 0.2 * j
                base = f"eval/{suite}"
                for key, value in {
                    "accuracy": acc,
                    "accuracy_lo": acc - 0.05,
                    "accuracy_hi": acc + 0.05,
                    "unparseable": 0.25,
                    "questions": 100.0,
                    "count/accuracy": 0.9,  # a question kind's accuracy: not a suite
                }.items():
                    client.log_metric(rid, f"{base}/{key}", value, step=step)
        client.set_terminated(rid)
    return uri


def test_compare_tabulates_each_suites_final_accuracy_with_its_interval(suite_store, tmp_path, capsys):
    out = tmp_path / "c"
    summaries = compare("suites", tracking_uri=suite_store, out=str(out))
    lines = capsys.readouterr().out.splitlines()
    head = ["run", "mode", "final win rate [95% CI]", "best (step)", "chart-qa accuracy [95% CI]"]
    head += ["clevr-qa accuracy [95% CI]", "decision acc", "N/A", "steps", "wall"]
    assert lines[0] == "| " + " | ".join(head) + " |"
    rows = {line.split(" | ")[0].strip("| "): line for line in lines[2:5]}
    assert "| 0.500 (0) | 0.500 [0.450, 0.550] | 0.300 [0.250, 0.350] |" in rows["both"]
    assert "| 0.500 (0) | – | 0.310 [0.260, 0.360] |" in rows["clevr"]
    assert "| 0.500 (0) | – | – |" in rows["none"]
    by_name = {s.name: s for s in summaries}
    assert set(by_name["both"].suites) == {"clevr-qa", "chart-qa"} and by_name["none"].suites == {}
    clevr = by_name["clevr"].suites["clevr-qa"]
    assert clevr["step"] == 20 and clevr["accuracy"] == pytest.approx(0.31)
    assert clevr["unparseable"] == pytest.approx(0.25) and clevr["questions"] == 100
    records = {r["name"]: r for r in json.loads((out / "compare.json").read_text())}
    assert records["both"]["suites"]["chart-qa"]["accuracy_hi"] == pytest.approx(0.55)
    assert records["clevr"]["suites"].keys() == {"clevr-qa"} and records["none"]["suites"] == {}
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_figure_gets_a_banded_panel_per_suite_beside_the_win_rate(suite_store, tmp_path):
    summaries = compare("suites", tracking_uri=suite_store, out=str(tmp_path / "c"))
    titles = [title for _, title in panels(summaries)]
    assert titles[:3] == ["win rate vs frozen start", "chart-qa accuracy (eval)", "clevr-qa accuracy (eval)"]
    assert len(titles) == 6 and grid(6) == (2, 3) and grid(4) == (2, 2) and grid(5) == (2, 3) and grid(7) == (3, 3)
    fig = figure(summaries, "t")
    assert [ax.get_title() for ax in fig.axes] == titles
    clevr = fig.axes[2]
    assert len(clevr.lines) == 2 and len(clevr.collections) == 2  # a line and a band per run that answered it
    assert len(fig.axes[1].lines) == 1
    only = [s for s in summaries if s.name != "both"]  # one suite: 5 panels, the empty sixth place removed
    assert len(figure(only, "t").axes) == 5
