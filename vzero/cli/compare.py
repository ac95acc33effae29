"""``vzero compare``: the runs of an experiment side by side, as a table and a figure of their curves.

::

    vzero compare --experiment vzero-tiny [--runs iterative pure_clue pure_decision] [--tracking_uri URI] [--out DIR]

For each run (the newest run of each name given, or every run of the experiment): its mode, the settings that differ
between the runs, the final and the best ``eval/win_rate`` with its 95% interval, the final evaluation's decision
accuracy and N/A rate, the steps trained and the wall time; and, for every question suite a compared run logged
(``eval.suites``: ``eval/<suite>/accuracy``), the final accuracy with its 95% interval. The table is printed as Markdown
and written with a JSON copy and ``compare.png``: win rate with its interval band, each suite's accuracy with its band,
decision accuracy, N/A rate and the active stage, per run, against the step. Reads the local store (``./mlruns``) or
any MLflow tracking server.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mlflow.tracking import MlflowClient

CURVES = (
    "eval/win_rate",
    "eval/win_rate_lo",
    "eval/win_rate_hi",
    "eval/decision_acc",
    "eval/na_rate",
    "stage/decision",
)
SUITE_FIELDS = ("accuracy", "accuracy_lo", "accuracy_hi", "unparseable", "questions")
"""What a suite logs at each evaluation, as ``eval/<suite>/<field>``; the final values of these are tabulated."""
_IGNORED_PARAMS = {"run_name", "experiment", "tracking_uri", "model.mode"}  # the mode has its own column


@dataclass
class RunSummary:
    name: str
    run_id: str
    mode: str
    status: str
    steps: int
    wall_s: float
    final: dict[str, float] = field(default_factory=dict)
    """The last evaluation: win rate, its interval, decision accuracy, N/A rate, and its step."""
    best: dict[str, float] = field(default_factory=dict)
    """The evaluation with the highest win rate: the same keys."""
    differs: dict[str, str] = field(default_factory=dict)
    """Its value of each setting that differs between the compared runs."""
    suites: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per question suite it logged, the last evaluation of it: ``SUITE_FIELDS`` and its step."""
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict, repr=False)


def client_for(tracking_uri: str | None) -> MlflowClient:
    if tracking_uri is None:
        from vzero.cli.train import local_store

        tracking_uri = local_store()[0]
    return MlflowClient(tracking_uri=tracking_uri)


def find_runs(client: MlflowClient, experiment: str, names: list[str] | None = None) -> list:
    """The experiment's runs, oldest first; with ``names``, the newest run of each name (or id), in that order."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        known = sorted(e.name for e in client.search_experiments())
        raise SystemExit(f"vzero compare: error: no experiment {experiment!r} (known: {', '.join(known) or 'none'})")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"], max_results=5000)
    if not names:
        return runs
    out = []
    for name in names:
        matches = [r for r in runs if name in (r.info.run_name, r.info.run_id)]
        if not matches:
            raise SystemExit(f"vzero compare: error: experiment {experiment!r} has no run named {name!r}")
        out.append(matches[-1])
    return out


def suite_names(runs: list) -> list[str]:
    """The question suites any of the runs logged: ``<suite>`` of each ``eval/<suite>/accuracy`` (not the per-kind
    ``eval/<suite>/<kind>/accuracy``), sorted."""
    names = set()
    for run in runs:
        for key in run.data.metrics:
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "eval" and parts[2] == "accuracy":
                names.add(parts[1])
    return sorted(names)


def summarize(client: MlflowClient, runs: list) -> list[RunSummary]:
    """One :class:`RunSummary` per run, with ``differs`` filled across them."""
    suites = suite_names(runs)
    suite_keys = [f"eval/{name}/{f}" for name in suites for f in SUITE_FIELDS]
    out = []
    for run in runs:
        curves = {}
        for key in (*CURVES, *suite_keys):
            history = client.get_metric_history(run.info.run_id, key)
            by_step = {m.step: m.value for m in sorted(history, key=lambda m: m.timestamp)}  # a re-logged step: last
            curves[key] = sorted(by_step.items())
        steps = max([s for c in curves.values() for s, _ in c], default=0)
        end = run.info.end_time or int(time.time() * 1000)
        summary = RunSummary(
            name=run.info.run_name,
            run_id=run.info.run_id,
            mode=run.data.params.get("model.mode", run.data.tags.get("mode", "?")),
            status=run.info.status,
            steps=steps,
            wall_s=(end - run.info.start_time) / 1000,
            curves=curves,
        )
        evals = _evaluations(curves)
        if evals:
            summary.final = evals[-1]
            summary.best = max(evals, key=lambda e: (e["win_rate"], -e["step"]))
        for name in suites:
            points = curves[f"eval/{name}/accuracy"]
            if points:
                step = points[-1][0]
                last = {f: dict(curves[f"eval/{name}/{f}"]).get(step, math.nan) for f in SUITE_FIELDS}
                summary.suites[name] = {"step": step, **last}
        out.append(summary)
    params = [r.data.params for r in runs]
    keys = sorted({k for p in params for k in p} - _IGNORED_PARAMS)
    differing = [k for k in keys if len({p.get(k) for p in params}) > 1]
    for summary, p in zip(out, params):
        summary.differs = {k: p.get(k, "–") for k in differing}
    return out


def _evaluations(curves: dict[str, list[tuple[int, float]]]) -> list[dict[str, float]]:
    columns = {k.removeprefix("eval/"): dict(curves[k]) for k in CURVES if k.startswith("eval/")}
    return [
        {"step": step, **{name: values.get(step, float("nan")) for name, values in columns.items()}}
        for step, _ in curves["eval/win_rate"]
    ]


def table(summaries: list[RunSummary]) -> str:
    """The comparison as a Markdown table."""
    differing = list(summaries[0].differs) if summaries else []
    suites = sorted({name for s in summaries for name in s.suites})
    head = [
        "run",
        "mode",
        *differing,
        "final win rate [95% CI]",
        "best (step)",
        *[f"{name} accuracy [95% CI]" for name in suites],
        "decision acc",
        "N/A",
        "steps",
        "wall",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        f, b = s.final, s.best
        cells = [
            s.name,
            s.mode,
            *[s.differs[k] for k in differing],
            f"{f['win_rate']:.3f} [{f['win_rate_lo']:.3f}, {f['win_rate_hi']:.3f}]" if f else "–",
            f"{b['win_rate']:.3f} ({int(b['step'])})" if b else "–",
            *[_accuracy(s.suites.get(name)) for name in suites],
            f"{f['decision_acc']:.3f}" if f else "–",
            f"{f['na_rate']:.3f}" if f else "–",
            str(s.steps),
            _duration(s.wall_s),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _accuracy(suite: dict[str, float] | None) -> str:
    if not suite:
        return "–"
    return f"{suite['accuracy']:.3f} [{suite['accuracy_lo']:.3f}, {suite['accuracy_hi']:.3f}]"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def panels(summaries: list[RunSummary]) -> list[tuple[str, str]]:
    """The figure's panels, in order, as ``(metric, title)``: the win rate, each suite's accuracy, then decision
    accuracy, N/A rate and the stage."""
    suites = sorted({name for s in summaries for name in s.suites})
    return [
        ("eval/win_rate", "win rate vs frozen start"),
        *[(f"eval/{name}/accuracy", f"{name} accuracy (eval)") for name in suites],
        ("eval/decision_acc", "decision accuracy (eval)"),
        ("eval/na_rate", "N/A rate (eval)"),
        ("stage/decision", "stage (1 = decision, 0 = clue)"),
    ]


def grid(n: int) -> tuple[int, int]:
    """Rows and columns for ``n`` panels: 2 x 2 for the four without suites, else rows of 3."""
    columns = 2 if n <= 4 else 3
    return math.ceil(n / columns), columns


def figure(summaries: list[RunSummary], title: str):
    """The figure of :func:`plot`, one axes per panel of :func:`panels`; the caller closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layout = panels(summaries)
    rows, columns = grid(len(layout))
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.5 * rows), sharex=True, squeeze=False)
    dashes = ["-", "--", ":", "-."]  # runs that coincide stay visible on top of each other
    for ax, (key, label) in zip(axes.flat, layout):
        banded = key == "eval/win_rate" or (key.startswith("eval/") and key.endswith("/accuracy"))
        for i, s in enumerate(summaries):
            points = s.curves.get(key, [])
            if not points:
                continue
            steps, values = zip(*points)
            style = {"drawstyle": "steps-post"} if key.startswith("stage/") else {"marker": "os^v"[i % 4]}
            line_style = {"linestyle": dashes[i % 4], "linewidth": 2.5 - 0.5 * (i % 4), "markersize": 6 - i % 4}
            (line,) = ax.plot(steps, values, label=f"{s.name} ({s.mode})", **style, **line_style)
            if banded:
                lo, hi = dict(s.curves.get(key + "_lo", [])), dict(s.curves.get(key + "_hi", []))
                ax.fill_between(
                    steps,
                    [lo.get(x, v) for x, v in points],
                    [hi.get(x, v) for x, v in points],
                    color=line.get_color(),
                    alpha=0.15,
                )
        if key == "eval/win_rate":
            ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_title(label)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(layout) :]:  # the last row's empty places
        fig.delaxes(ax)
    for column in range(columns):
        bottom = max(r for r in range(rows) if r * columns + column < len(layout))
        axes[bottom][column].set_xlabel("step")
        axes[bottom][column].xaxis.set_tick_params(labelbottom=True)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot(summaries: list[RunSummary], path: Path, title: str) -> Path:
    """Win rate and each suite's accuracy (with their interval bands), decision accuracy, N/A rate and the stage, per
    run, against the step."""
    fig = figure(summaries, title)
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def compare(experiment: str, runs: list[str] | None = None, tracking_uri: str | None = None, out: str = "compare"):
    """Print the table and write ``compare.md``, ``compare.json`` and ``compare.png`` into ``out``."""
    client = client_for(tracking_uri)
    summaries = summarize(client, find_runs(client, experiment, runs))
    if not summaries:
        raise SystemExit(f"vzero compare: error: experiment {experiment!r} has no runs")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    text = table(summaries)
    (folder / "compare.md").write_text(text + "\n")
    records = [{k: v for k, v in asdict(s).items() if k != "curves"} for s in summaries]
    (folder / "compare.json").write_text(json.dumps(records, indent=2) + "\n")
    plot(summaries, folder / "compare.png", f"{experiment}: {len(summaries)} runs")
    print(text)
    print(f"wrote {folder}/compare.md, compare.json and compare.png")
    return summaries


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="vzero compare", description="Compare the runs of an MLflow experiment.", allow_abbrev=False
    )
    parser.add_argument("--experiment", required=True, help="the MLflow experiment, e.g. vzero-tiny")
    parser.add_argument("--runs", nargs="*", default=None, help="run names or ids (default: every run)")
    parser.add_argument("--tracking_uri", default=None, help="an MLflow tracking URI (default: the local ./mlruns)")
    parser.add_argument("--out", default="compare", help="the folder to write the table and figure into")
    args = parser.parse_args(argv)
    compare(args.experiment, args.runs, args.tracking_uri, args.out)
