"""The demo a newcomer runs first (``make demo`` / ``solargw demo``): the whole appliance on one PC.

It starts, each as its own process like on the appliance, with their output in one log file:

- a local mosquitto on a free loopback port (temporary config, no persistence);
- the emulated Z-Stack coordinator with four simulated Enecsys inverters on its "air";
- the Zigbee service (``solargw zigbee``) on that coordinator (``socket://``);
- the web service (``solargw web``, gunicorn), with the Enecsys gateway listener on;
- three simulated Enecsys inverters behind a simulated genuine Enecsys gateway
  (``solargw simulate enecsys-gateway``), uploading to that listener;
- three simulated NEP inverters of different models (``solargw simulate nep``), at midday.

Before the services start, the store gets a week of plausible history for every one of them
(:mod:`appliance.sim.history`), so the charts and the energy per day show several days at once.

It prints the URL and the admin password, and stops everything on Ctrl-C (in the
reverse order, each with SIGINT, then SIGKILL if one hangs). Everything lives in a
temporary directory that is deleted afterwards unless ``--keep`` is given.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

from werkzeug.security import generate_password_hash

from appliance.settings import Settings, apply_timezone, save, without_overrides

NEP_MODELS = ("bdm400", "bdm800", "bdm1200")
ENECSYS_COUNT = 4
GATEWAY_COUNT = 3
HISTORY_DAYS = 7
INVERTER_COUNT = ENECSYS_COUNT + GATEWAY_COUNT + len(NEP_MODELS)
ENECSYS_INTERVAL = 10.0
NEP_INTERVAL = 5.0
LISTENING = re.compile(r"listening on (http://\S+)")


class DemoError(RuntimeError):
    """A part of the demo could not start; the message says which and why."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise DemoError("exited while starting")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise DemoError(f"did not listen on {host}:{port} within {timeout:.0f} s")


def host_timezone() -> str:
    """This PC's time zone name (``TZ`` or the ``/etc/localtime`` link), so the demo's UI shows its clock."""
    name = os.environ.get("TZ", "").lstrip(":")
    if not name:
        try:
            target = os.readlink("/etc/localtime")
        except OSError:
            return "UTC"
        name = target.partition("zoneinfo/")[2]
    return name or "UTC"


def solargw(*args: str) -> list[str]:
    return [sys.executable, "-m", "appliance", *args]


@dataclass
class Child:
    name: str
    process: subprocess.Popen


@dataclass
class Demo:
    host: str = "127.0.0.1"
    port: int = 8080
    workdir: Path | None = None
    keep: bool = False
    out: IO[str] = sys.stdout
    children: list[Child] = field(default_factory=list)
    url: str = ""
    password: str = ""
    _created_dir: bool = False

    # --- starting ----------------------------------------------------------------------------
    def start(self) -> None:
        if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
            raise DemoError("mosquitto is not installed (make deps installs it)")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="solargw-demo-"))
            self._created_dir = True
        self.log_path = self.workdir / "solargw.log"
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.log = open(self.log_path, "a", buffering=1)
        except OSError as exc:
            raise DemoError(f"cannot use {self.workdir}: {exc.strerror or exc}") from None
        self.settings_path = self.workdir / "solargw.toml"
        self.password = secrets.token_urlsafe(9)

        mqtt_port = free_port()
        self._start_mosquitto(mqtt_port)
        zigbee_port = free_port()
        self._start_enecsys(zigbee_port)

        settings = Settings()
        settings.system.timezone = host_timezone()
        if not apply_timezone(settings):
            settings.system.timezone = "UTC"
        settings.data.dir = str(self.workdir / "data")
        settings.web.listen_addr, settings.web.port, settings.web.threads = self.host, self._web_port(), 8
        settings.mqtt.host, settings.mqtt.port = "127.0.0.1", mqtt_port
        settings.zigbee.device = f"socket://127.0.0.1:{zigbee_port}"
        settings.gateway.enabled, settings.gateway.listen_addr = True, "127.0.0.1"
        settings.gateway.port = gateway_port = free_port()
        settings.access_point.passphrase = secrets.token_urlsafe(12)
        settings.admin.password_hash = generate_password_hash(self.password)
        settings.admin.secret_key = secrets.token_hex(32)
        save(settings, self.settings_path)
        self._write_history(settings)

        self._start_web()
        self._start_zigbee()
        self._spawn("Enecsys gateway simulator", solargw(
            "simulate", "enecsys-gateway", "--port", str(gateway_port), "--inverters", str(GATEWAY_COUNT),
            "--interval", str(ENECSYS_INTERVAL), "--ping-interval", "30", "--start", "12:00"))
        self.say(f"Enecsys gateway   tcp://127.0.0.1:{gateway_port} with {GATEWAY_COUNT} simulated inverters behind it")
        self._spawn("NEP simulator", solargw(
            "simulate", "nep", "--url", self.url + "/", "--inverters", str(len(NEP_MODELS)),
            "--models", ",".join(NEP_MODELS), "--interval", str(NEP_INTERVAL), "--start", "12:00", "--quiet"))

    def _write_history(self, settings: Settings) -> None:
        """A week of the simulated inverters' past, through the store, before any service runs."""
        from appliance.sim import enecsys_gateway, history, nep_inverters
        from appliance.sim.enecsys_inverters import InverterFleet
        from appliance.store import Store

        store = Store.from_settings(settings)
        try:
            written = history.write(
                store, zigbee_serials=InverterFleet.default_serials(ENECSYS_COUNT),
                gateway_serials=enecsys_gateway.default_serials(GATEWAY_COUNT),
                nep_fleet=nep_inverters.make_fleet(len(NEP_MODELS), list(NEP_MODELS), seed=1), days=HISTORY_DAYS)
        finally:
            store.close()
        self.say(f"history           {written.days} days, {written.readings} readings of {written.inverters} inverters")

    def _web_port(self) -> int:
        if self.port:
            try:
                with socket.socket() as sock:
                    sock.bind((self.host, self.port))
                return self.port
            except OSError:
                self.say(f"port {self.port} is busy; using a free one")
        return free_port(self.host)

    def _env(self) -> dict[str, str]:
        env = without_overrides()
        env.update(SOLARGW_SETTINGS=str(self.settings_path), SOLARGW_LOG_FILE=str(self.log_path), PYTHONUNBUFFERED="1")
        return env

    def _spawn(self, name: str, argv: list[str], stdout: int | IO[str] | None = None) -> subprocess.Popen:
        self.log.write(f"--- demo: starting {name}: {' '.join(argv)}\n")
        process = subprocess.Popen(argv, stdout=stdout or self.log, stderr=subprocess.STDOUT, env=self._env(),
                                   start_new_session=True, text=True)
        self.children.append(Child(name, process))
        return process

    def _start_mosquitto(self, port: int) -> None:
        config = self.workdir / "mosquitto.conf"
        config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                          "log_dest stdout\nlog_type error\nlog_type warning\nlog_type notice\n")
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        process = self._spawn("mosquitto", [binary, "-c", str(config)])
        self._wait("mosquitto", "127.0.0.1", port, process, 10)
        self.say(f"mosquitto         mqtt://127.0.0.1:{port}")

    def _start_enecsys(self, port: int) -> None:
        process = self._spawn("Enecsys simulator", solargw(
            "simulate", "enecsys", "--host", "127.0.0.1", "--port", str(port), "--inverters", str(ENECSYS_COUNT),
            "--interval", str(ENECSYS_INTERVAL), "--start", "12:00"))
        self._wait("the emulated Zigbee coordinator", "127.0.0.1", port, process, 20)
        self.say(f"Zigbee emulator   socket://127.0.0.1:{port} with {ENECSYS_COUNT} simulated Enecsys inverters")

    def _start_web(self) -> None:
        process = self._spawn("web", solargw("web", "--settings", str(self.settings_path)), stdout=subprocess.PIPE)
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while not self.url:
            line = process.stdout.readline()
            if not line:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise DemoError(f"the web service did not start; see {self.log_path}")
                continue
            self.log.write(line)
            match = LISTENING.search(line)
            if match:
                self.url = match.group(1).rstrip("/")
        threading.Thread(target=self._copy, args=(process.stdout,), daemon=True).start()
        host, port = self.url.split("//", 1)[1].rsplit(":", 1)
        self._wait("the web service", host.strip("[]"), int(port), process, 30)

    def _copy(self, stream: IO[str]) -> None:
        for line in stream:
            self.log.write(line)

    def _start_zigbee(self) -> None:
        self._spawn("Zigbee service", solargw("zigbee"))  # settings from $SOLARGW_SETTINGS

    def _wait(self, what: str, host: str, port: int, process: subprocess.Popen, timeout: float) -> None:
        try:
            wait_for_port(host, port, timeout, lambda: process.poll() is None)
        except DemoError as exc:
            raise DemoError(f"{what} {exc}; see {self.log_path}") from None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # --- running and stopping ----------------------------------------------------------------
    def watch(self) -> int:
        """Block until Ctrl-C (0) or until a part dies (1)."""
        while True:
            for child in self.children:
                code = child.process.poll()
                if code is not None:
                    self.say(f"{child.name} stopped unexpectedly (exit status {code}); see {self.log_path}")
                    return 1
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop the parts one by one, newest first (the Zigbee service before its coordinator)."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                try:
                    os.killpg(child.process.pid, signal.SIGINT)
                    child.process.wait(8)
                except ProcessLookupError:
                    pass
                except subprocess.TimeoutExpired:
                    self.say(f"{child.name} did not stop within 8 s; killing it")
                    os.killpg(child.process.pid, signal.SIGKILL)
                    child.process.wait()
        self.children.clear()
        if hasattr(self, "log"):
            self.log.close()
        if self._created_dir and not self.keep and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # Ctrl-C and SIGTERM stop the demo alike


def run(host: str = "127.0.0.1", port: int = 8080, workdir: Path | None = None, keep: bool = False) -> int:
    demo = Demo(host=host, port=port, workdir=workdir, keep=keep)
    # SIGINT too: a process started in the background by a shell inherits it ignored.
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        demo.say("solargw demo: starting mosquitto, the Zigbee emulator, the Zigbee and web services, "
                 "the Enecsys gateway and NEP simulators...")
        demo.start()
        shown = demo.url.replace("0.0.0.0", socket.gethostname())
        demo.say("")
        demo.say(f"  Open {shown}/   (log in as admin with the password: {demo.password})")
        demo.say(f"  {INVERTER_COUNT} inverters appear within a minute, with a week of history. Logs: {demo.log_path}")
        demo.say("  Press Ctrl-C to stop everything.")
        demo.say("")
        return demo.watch()
    except KeyboardInterrupt:
        demo.say("stopping...")
        return 0
    finally:
        demo.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
