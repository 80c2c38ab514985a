"""A helper, not a benchmark: solargw's services as a bench starts them (:func:`service_env`), and
``solargw web`` started on settings of its own (:func:`running_web`)."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

from appliance.settings import Settings, save, without_overrides

SERVICE_ENVIRONMENT = {"MALLOC_ARENA_MAX": "1"}
"""What the systemd units (ansible/roles/*/templates/solargw-*.service.j2) put in the services'
environment besides SOLARGW_SETTINGS: the services are measured as the appliance runs them."""


def service_env() -> dict[str, str]:
    """This process's environment without NEP_/SOLARGW_ overrides, plus the units' own variables."""
    return without_overrides() | SERVICE_ENVIRONMENT


@contextlib.contextmanager
def running_web(root: Path, adjust: Callable[[Settings], None] = lambda settings: None
                ) -> Iterator[tuple[subprocess.Popen, str, dict[str, str]]]:
    """``solargw web`` on 127.0.0.1 (any free port) with its data in ``root/data``, MQTT off,
    ``adjust`` applied to the settings before they are saved: yields the process once it listens,
    its URL and the environment it runs in (:func:`service_env`); stopped after."""
    settings = Settings()
    settings.data.dir = str(root / "data")
    settings.mqtt.enabled = False
    settings.admin.secret_key = "bench"
    adjust(settings)
    path = root / "solargw.toml"
    save(settings, path)
    env = service_env()
    process = subprocess.Popen([sys.executable, "-m", "appliance", "web", "--settings", str(path), "--bind",
                                "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=env, start_new_session=True)
    try:
        for line in process.stdout:
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                break
        else:
            raise SystemExit("solargw web did not start")
        yield process, match.group(1).rstrip("/"), env
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
