"""Run the real ``solargw web`` (gunicorn) for a test, on a free loopback port.

    with running_web(tmp_path) as web:          # or: web = start_web(tmp_path); ...; web.stop()
        requests.post(web.url + "i.php", data=body)
        web.store().latest()

The server gets its own settings file and data directory under ``tmp_path``
(MQTT off unless the ``settings`` overrides turn it on), binds port 0 and
reports the port gunicorn actually got, so there is no port race.
``web.log()`` returns its stderr for assertion messages.
"""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import tomli_w

LISTENING = re.compile(r"listening on (http://[^\s]+/)")
SCRUBBED_ENV = ("SOLARGW_SETTINGS", "SOLARGW_DATA_DIR", "NEP_LISTEN_ADDR", "NEP_LISTEN_PORT",
                "NEP_MQTT_ADDR", "NEP_MQTT_PORT")


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for section, values in overrides.items():
        merged.setdefault(section, {}).update(values)
    return merged


@dataclass
class RunningWeb:
    url: str
    """Base URL with a trailing slash, e.g. ``http://127.0.0.1:41234/``."""
    port: int
    data_dir: Path
    settings_path: Path
    process: subprocess.Popen
    log_path: Path
    _stores: list = field(default_factory=list)

    def store(self):
        """A Store on the server's database (read it from the test, like another process)."""
        from appliance.store import Store

        store = Store(self.data_dir)
        self._stores.append(store)
        return store

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait, SIGKILL if it hangs; returns the exit status."""
        for store in self._stores:
            store.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def start_web(tmp_path: Path, settings: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None,
              timeout: float = 30.0, name: str = "web", port: int | None = 0, keep_settings: bool = False) -> RunningWeb:
    """Start ``solargw web`` and wait until it answers HTTP; raise with its log if it does not.

    ``settings`` are TOML sections merged over the test defaults; ``port`` 0 means any free port,
    None means no ``--bind`` (the settings file and the environment decide); ``keep_settings``:
    start on the settings file left by an earlier start, as it is now (broken, say)."""
    root = Path(tmp_path) / name
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / "data"
    base = {
        "web": {"listen_addr": "127.0.0.1", "port": 0, "threads": 4},
        "data": {"dir": str(data_dir)},
        "mqtt": {"enabled": False},
        "admin": {"secret_key": "test-secret-key"},
    }
    settings_path = root / "solargw.toml"
    if not keep_settings:
        settings_path.write_text(tomli_w.dumps(_merge(base, settings or {})))
    log_path = root / "web.log"
    child_env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    child_env.update(env or {})
    child_env["PYTHONUNBUFFERED"] = "1"
    log_file = open(log_path, "ab" if keep_settings else "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "appliance", "web", "--settings", str(settings_path)]
        + ([] if port is None else ["--bind", f"127.0.0.1:{port}"]),
        stdout=subprocess.PIPE, stderr=log_file, env=child_env, start_new_session=True,
    )
    log_file.close()
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            lines.put(raw.decode(errors="replace"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    url = None
    while url is None:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            line = ""
        if line is None or time.monotonic() > deadline:
            _abort(process)
            raise RuntimeError(f"solargw web did not start; log:\n{log_path.read_text(errors='replace')}")
        match = LISTENING.search(line or "")
        if match:
            url = match.group(1)
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    web = RunningWeb(url, port, data_dir, settings_path, process, log_path)
    while True:  # the arbiter is listening; wait for the worker to answer
        try:
            with urllib.request.urlopen(url + "data.json", timeout=5) as reply:
                if reply.status == 200:
                    return web
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline or not web.alive():
            web.stop()
            raise RuntimeError(f"solargw web does not answer; log:\n{web.log()}")
        time.sleep(0.1)


def _abort(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(5)


@contextmanager
def running_web(tmp_path: Path, settings: Mapping[str, Any] | None = None, **kwargs: Any) -> Iterator[RunningWeb]:
    web = start_web(tmp_path, settings, **kwargs)
    try:
        yield web
    finally:
        web.stop()
