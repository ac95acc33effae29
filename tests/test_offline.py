"""Offline means offline: a whole `vzero fit`, default MLflow logger included, opens no connection beyond loopback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--data.games_per_step", "2", "--eval.games", "4", "--eval.every_n_steps", "2", "--eval.at_start", "false"]

# Every outbound attempt is written to stderr as one `OUTBOUND {...}` line and refused. Threads swallow the refusal
# (MLflow's telemetry catches everything), so the test reads the lines, not just the exit status.
GUARD = """
import json, os, socket, sys

LOOPBACK = {"127.0.0.1", "::1", "localhost", "0.0.0.0", "::"}

def _host(address):
    if isinstance(address, tuple) and address:
        return address[0]
    return None  # a unix socket's path: local

def _guard(event, args):
    if event == "socket.getaddrinfo":
        host = args[0]
    elif event == "socket.connect":
        sock, address = args
        if sock.family == getattr(socket, "AF_UNIX", None):
            return
        host = _host(address)
    else:
        return
    if isinstance(host, bytes):
        host = host.decode()
    if host is None or host in LOOPBACK or (isinstance(host, str) and host.startswith("127.")):
        return
    os.write(2, ("OUTBOUND " + json.dumps({"event": event, "host": str(host)}) + "\\n").encode())
    raise ConnectionRefusedError(f"vzero test: outbound {event} to {host} refused")

sys.addaudithook(_guard)
sys.argv = ["vzero", *sys.argv[1:]]
from vzero.__main__ import main
main()
"""

# Markers under which MLflow turns its telemetry off by itself (tests, CI): a user's shell has none of them.
QUIET = {
    "PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "CIRCLECI", "GITLAB_CI", "JENKINS_URL", "TRAVIS", "TF_BUILD",
    "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION", "CLOUD_RUN_EXECUTION",
    "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME", "RUNBOT_WORKER_ID", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK",
    "HF_HUB_DISABLE_TELEMETRY", "DISABLE_TELEMETRY", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
}  # fmt: skip


def run_guarded(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, list[dict]]:
    environ = {k: v for k, v in os.environ.items() if k not in QUIET}
    environ.update(OMP_NUM_THREADS="1", **(env or {}))
    done = subprocess.run(
        [sys.executable, "-c", GUARD, *args], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=900
    )
    out = done.stderr + done.stdout
    outbound = [json.loads(line[len("OUTBOUND ") :]) for line in out.splitlines() if line.startswith("OUTBOUND ")]
    return done.returncode, out, outbound


@pytest.mark.slow
@pytest.mark.parametrize("hub_offline", [False, True], ids=["default", "HF_HUB_OFFLINE"])
def test_a_fit_with_the_default_logger_opens_no_outbound_connection(tiny_random_path, tmp_path, hub_offline):
    args = ["fit", "--config", str(ROOT / "configs" / "tiny.yaml"), *FAST, "--trainer.max_steps", "2"]
    args += ["--model.vlm.name_or_path", "tiny-random", "--trainer.enable_progress_bar", "false"]
    code, out, outbound = run_guarded(tmp_path, *args, env={"HF_HUB_OFFLINE": "1"} if hub_offline else None)
    assert code == 0, out[-3000:]
    assert "win rate vs reference at step 2" in out
    assert outbound == [], f"outbound connections attempted: {outbound}"


def test_the_guard_sees_an_outbound_lookup(tmp_path):
    # The guard itself: a name lookup of a remote host is caught, a loopback one is not.
    probe = "import socket\nfor host in ('localhost', 'example.invalid'):\n    try: socket.getaddrinfo(host, 443)\n"
    probe += "    except OSError: pass\n"
    script = GUARD.replace("from vzero.__main__ import main\nmain()\n", probe)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("OUTBOUND")] == [
        'OUTBOUND {"event": "socket.getaddrinfo", "host": "example.invalid"}'
    ]


def test_telemetry_is_off_unless_the_user_opts_in(monkeypatch):
    from vzero.offline import OFF, stay_offline

    for key in OFF:  # set, then deleted: so monkeypatch restores whatever was there, and removes what stay_offline sets
        monkeypatch.setenv(key, "unset")
        monkeypatch.delenv(key)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")  # a user who opts in keeps their choice
    stay_offline()
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"
    assert all(os.environ[key] == value for key, value in OFF.items() if key != "MLFLOW_DISABLE_TELEMETRY")
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY")
    stay_offline()
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"

    from mlflow.telemetry.utils import is_telemetry_disabled

    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    assert is_telemetry_disabled()  # what MLflow itself reads
