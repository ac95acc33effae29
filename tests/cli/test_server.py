"""A real MLflow tracking server: a 2-step fit logs to it, and its REST API gives the run, metrics and transcripts."""

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from .conftest import TWO_STEPS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(base: str, endpoint: str, **query) -> dict:
    url = f"{base}{endpoint}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination",
        (tmp_path / "server-artifacts").as_uri(),
    ]
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield base
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def test_a_fit_logs_to_a_tracking_server(server, tiny_random_path, tmp_path, monkeypatch):
    from vzero.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["vzero"])
    main([*TWO_STEPS, "--tracking_uri", server, "--run_name", "served"])
    assert not (tmp_path / "mlruns").exists()  # nothing went to the local store
    experiment = _get(server, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="vzero-tiny")["experiment"]
    request = urllib.request.Request(
        f"{server}/api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": [experiment["experiment_id"]]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        (run,) = json.loads(response.read())["runs"]
    info = run["info"]
    assert info["run_name"] == "served" and info["status"] == "FINISHED"
    history = _get(server, "/api/2.0/mlflow/metrics/get-history", run_id=info["run_id"], metric_key="eval/win_rate")
    assert [m["step"] for m in history["metrics"]] == [2]
    listed = _get(server, "/api/2.0/mlflow/artifacts/list", run_id=info["run_id"], path="transcripts/eval-step000002")
    assert {f["path"].rsplit("/", 1)[1] for f in listed["files"]} == {"transcripts.html", "transcripts.jsonl"}
    page_url = f"{server}/get-artifact?" + urllib.parse.urlencode(
        {"path": "transcripts/eval-step000002/transcripts.html", "run_uuid": info["run_id"]}
    )
    with urllib.request.urlopen(page_url, timeout=30) as response:
        assert b"<section class=game>" in response.read()
