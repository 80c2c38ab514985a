"""A helper, not a benchmark: ``solargw web`` started for a bench on settings of its own."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

from appliance.settings import Settings, save


@contextlib.contextmanager
def running_web(root: Path, adjust: Callable[[Settings], None] = lambda settings: None
                ) -> Iterator[tuple[subprocess.Popen, Path, dict[str, str]]]:
    """``solargw web`` on 127.0.0.1 (any free port) with its data in ``root/data``, MQTT off,
    ``adjust`` applied to the settings before they are saved: yields the process once it listens,
    the settings file and the environment it runs in (no NEP_/SOLARGW_ variables); stopped after."""
    settings = Settings()
    settings.data.dir = str(root / "data")
    settings.mqtt.enabled = False
    settings.admin.secret_key = "bench"
    adjust(settings)
    path = root / "solargw.toml"
    save(settings, path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEP_", "SOLARGW_"))}
    process = subprocess.Popen([sys.executable, "-m", "appliance", "web", "--settings", str(path), "--bind",
                                "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=env, start_new_session=True)
    try:
        for line in process.stdout:
            if "listening on" in line:
                break
        yield process, path, env
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
