"""Offline by default: no telemetry and no other outbound connection unless the user opts in.

vzero needs nothing from the network: the embedded tiny model, procedural pairs and the local MLflow store are all
files. Two libraries it uses would reach out anyway:

- MLflow, the default logger, starts a telemetry client at ``import mlflow`` that resolves and fetches
  ``config.mlflow-telemetry.io`` and then posts usage events. In the installed source (``mlflow.telemetry.utils.
  is_telemetry_disabled``) it is off when ``MLFLOW_DISABLE_TELEMETRY`` is ``true``/``1`` (read at import and at every
  event), when ``DO_NOT_TRACK`` is ``true``, or under CI and pytest (markers read once, at import); ``HF_HUB_OFFLINE``
  does not affect it.
- The Hugging Face hub client downloads a model named by hub id and sends telemetry with it; it reads
  ``HF_HUB_OFFLINE`` and ``HF_HUB_DISABLE_TELEMETRY`` once, at import.

:func:`stay_offline` sets the variables in :data:`OFF` with ``os.environ.setdefault``, before anything imports those
libraries, so a value the user set wins: ``MLFLOW_DISABLE_TELEMETRY=false`` opts back into MLflow's telemetry, and
``HF_HUB_OFFLINE=0`` lets a hub model that is not in the local cache be downloaded.
"""

from __future__ import annotations

import os
import sys

OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
"""The environment :func:`stay_offline` sets unless the user already set it."""


def stay_offline() -> None:
    """Default every variable of :data:`OFF`; called first thing by the ``vzero`` command."""
    for key, value in OFF.items():
        os.environ.setdefault(key, value)
    # MLflow decides at import whether to keep a telemetry client. If a caller imported it before (a script, a test),
    # let it decide again now, so the client it made is dropped (unless the user opted in).
    client = sys.modules.get("mlflow.telemetry.client")
    if client is not None and os.environ["MLFLOW_DISABLE_TELEMETRY"].strip().lower() in ("true", "1"):
        client.set_telemetry_client()
