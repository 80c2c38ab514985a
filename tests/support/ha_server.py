"""A real Home Assistant for tests: the pinned release (``tests/support/ha_rootfs.py``) in its root file system.

    with home_assistant(workdir) as ha:        # started, onboarded, with an admin token
        entry_id = ha.add_mqtt("127.0.0.1", broker.port)   # the MQTT integration, by its config flow
        ha.ws("config/device_registry/list")   # a websocket command's result
        ha.get("/api/states")                  # REST
        ha.problems("homeassistant.components.mqtt")  # its log's warnings and errors

Home Assistant runs headless (no frontend in the configuration, though its default integrations
load it) on a free loopback port, with its configuration directory ``workdir/config`` bind-mounted
at ``/config``; the root file system is mounted read-only. It shares the host's network, so
``127.0.0.1`` is this machine for it too. Its whole log stays in ``workdir/config/home-assistant.log``.
"""
from __future__ import annotations

import contextlib
import json
import re
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import requests
import websocket

from support import ha_rootfs
from support import processes
from support.ports import HOST, free_port
from support.waiting import wait_for

START_TIMEOUT = 180.0
WEBSOCKET_LOGGERS = ("homeassistant.components.websocket_api", "homeassistant.components.http", "aiohttp")
USERNAME, PASSWORD = "owner", "test-owner-password"
# Nothing on Home Assistant's own side (its owner, the location, the tier's websocket client) is
# named after the appliance: the tier reads every log line that mentions "solargw" as about us, and
# Home Assistant names the user in its websocket log lines.

CONFIGURATION = """\
homeassistant:
  name: Test home
  unit_system: metric
  time_zone: UTC
  country: GB
  currency: EUR
  latitude: 51.48
  longitude: 0.0
  elevation: 10
http:
  server_host: {host}
  server_port: {port}
{integrations}
recorder:
  commit_interval: 1
logger:
  default: info
"""


class HomeAssistantError(RuntimeError):
    """Home Assistant did not start, or refused a request; the message says what it answered."""


@dataclass
class LogRecord:
    level: str
    logger: str
    text: str
    """The message with any traceback lines that followed it."""

    def __str__(self) -> str:
        return f"{self.level} [{self.logger}] {self.text}"


RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\S* (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                    r"\([^)]*\) \[([^\]]+)\] ?(.*)$")


class HomeAssistant:
    def __init__(self, workdir: Path, root: Path) -> None:
        self.workdir = workdir
        self.root = root
        self.config_dir = workdir / "config"
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.process: subprocess.Popen | None = None
        self.token = ""
        self._socket: websocket.WebSocket | None = None
        self._next_id = 0

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        others = [d for d in ha_rootfs.INTEGRATIONS if d not in ("recorder", "mqtt")]  # mqtt: a config entry
        (self.config_dir / "configuration.yaml").write_text(CONFIGURATION.format(
            host=HOST, port=self.port, integrations="".join(f"{d}:\n" for d in others)))
        argv = [ha_rootfs.HA_PYTHON, "-m", "homeassistant", "--config", "/config", "--skip-pip", "--log-no-color"]
        command = ha_rootfs.chroot_command(self.root, argv, binds=[(self.config_dir, "/config", True)],
                                           read_only=True)
        with open(self.workdir / "home-assistant.console.log", "wb") as console:
            self.process = subprocess.Popen(command, stdout=console, stderr=subprocess.STDOUT)
        self._wait_for(lambda: self._answers("/api/onboarding"), START_TIMEOUT, "its HTTP API")

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (Home Assistant stops cleanly), then SIGKILL; its mounts go with it."""
        self._disconnect()
        if self.process is None:
            return None
        return processes.stop(self.process, timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _answers(self, path: str) -> bool:
        try:
            return requests.get(self.url + path, timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def _wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """:func:`wait_for`, failing at once if Home Assistant exits; either failure shows its log."""
        def ready() -> Any:
            value = predicate()
            if not value and not self.alive():
                raise HomeAssistantError(f"Home Assistant exited ({self.process.returncode}) while waiting for "
                                         f"{what}:\n{self.log_tail()}")
            return value

        try:
            return wait_for(ready, timeout, what, interval=0.5)
        except AssertionError as timed_out:
            raise HomeAssistantError(f"Home Assistant: {timed_out}:\n{self.log_tail()}") from None

    # -- onboarding and integrations ---------------------------------------------------------------

    def onboard(self) -> None:
        """Create the owner through the onboarding API and get an access token for it."""
        client_id = self.url + "/"
        reply = self._check(requests.post(self.url + "/api/onboarding/users", timeout=30, json={
            "client_id": client_id, "name": "Test owner", "username": USERNAME, "password": PASSWORD,
            "language": "en"}))
        tokens = self._check(requests.post(self.url + "/auth/token", timeout=30, data={
            "grant_type": "authorization_code", "code": reply["auth_code"], "client_id": client_id}))
        self.token = tokens["access_token"]
        # That token lasts 30 minutes, less than a slow run of the tier: swap it for a long-lived one.
        self.token = self.ws("auth/long_lived_access_token", client_name="tier tests", lifespan=1)
        self._disconnect()

    def confirm_http_config(self) -> None:
        """Confirm the ``http:`` settings, as its owner would once the server answers.

        Home Assistant 2026.11 moves them from configuration.yaml into its store as a trial and,
        unless an admin confirms the trial within 5 minutes, restarts itself on its defaults (a CI
        run lost seven tests to that restart in the middle of the tier)."""
        if self.ws("http/config")["pending"] is not None:
            self.ws("http/config/promote")
        config = self.ws("http/config")
        if config["pending"] is not None or config["revert_at"] is not None:
            raise HomeAssistantError(f"Home Assistant still holds its HTTP settings on trial: {config}")

    def add_mqtt(self, host: str, port: int) -> str:
        """Add the MQTT integration through its config flow (what a user clicks); its entry id."""
        flow = self.post("/api/config/config_entries/flow", {"handler": "mqtt"})
        answer = {"broker": host, "port": port,
                  # Home Assistant 2026.11 asks for these (the form's advanced section) even when unchanged.
                  "other_settings": {"set_client_cert": False, "set_ca_cert": "off", "transport": "tcp"}}
        result = self.post(f"/api/config/config_entries/flow/{flow['flow_id']}", answer)
        if result.get("type") != "create_entry":
            raise HomeAssistantError("the MQTT config flow did not create an entry; it answered:\n"
                                     + json.dumps(result, indent=1)[:4000])
        entry_id = result["result"]["entry_id"]
        self.wait_for_entry(entry_id)
        return entry_id

    def entry_state(self, entry_id: str) -> str | None:
        for entry in self.get("/api/config/config_entries/entry"):
            if entry["entry_id"] == entry_id:
                return entry["state"]
        return None

    def wait_for_entry(self, entry_id: str, timeout: float = 60.0) -> None:
        self._wait_for(lambda: self.entry_state(entry_id) == "loaded", timeout, f"config entry {entry_id} loaded")

    def reload_entry(self, entry_id: str) -> None:
        self.post(f"/api/config/config_entries/entry/{entry_id}/reload", {})
        self.wait_for_entry(entry_id)

    # -- APIs --------------------------------------------------------------------------------------

    def _check(self, reply: requests.Response) -> Any:
        if reply.status_code >= 400:
            raise HomeAssistantError(f"{reply.request.method} {reply.url}: {reply.status_code} {reply.text[:2000]}")
        return reply.json() if reply.content else None

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str) -> Any:
        return self._check(requests.get(self.url + path, headers=self._headers, timeout=30))

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._check(requests.post(self.url + path, headers=self._headers, json=body, timeout=60))

    def states(self) -> dict[str, dict[str, Any]]:
        return {state["entity_id"]: state for state in self.get("/api/states")}

    def ws(self, command: str, **fields: Any) -> Any:
        """Send one websocket command and return its result (events of other commands are skipped).

        Every command the tests send is idempotent, so when Home Assistant has closed the connection
        (a close frame, or the socket gone) the command is sent once more on a new connection, with
        a warning that says why."""
        for attempt in (1, 2):
            try:
                return self._command(command, fields)
            except (websocket.WebSocketConnectionClosedException, ConnectionError) as closed:
                self._disconnect()
                said = "\n".join(str(r) for r in self.problems(*WEBSOCKET_LOGGERS)[-10:]) or "nothing"
                if attempt == 2 or not self.alive():
                    raise HomeAssistantError(f"websocket {command}: the connection closed ({closed}); Home "
                                             f"Assistant logged about its websockets: {said}; its log ends:\n"
                                             f"{self.log_tail()}") from None
                warnings.warn(f"Home Assistant closed the websocket under {command} ({closed}), reconnected; "
                              f"it logged about its websockets: {said}")
        raise AssertionError("unreachable")

    def _disconnect(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(Exception):
                self._socket.close()
            self._socket = None

    def _connect(self) -> websocket.WebSocket:
        socket = websocket.create_connection(self.url.replace("http", "ws", 1) + "/api/websocket", timeout=60)
        socket.recv()  # auth_required
        socket.send(json.dumps({"type": "auth", "access_token": self.token}))
        reply = json.loads(socket.recv())
        if reply.get("type") != "auth_ok":
            raise HomeAssistantError(f"websocket authentication failed: {reply}")
        return socket

    def _command(self, command: str, fields: dict[str, Any]) -> Any:
        if self._socket is None:
            self._socket = self._connect()
        self._next_id += 1
        self._socket.send(json.dumps({"id": self._next_id, "type": command, **fields}))
        while True:
            opcode, data = self._socket.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                raise websocket.WebSocketConnectionClosedException(
                    f"Home Assistant sent a close frame (code {code}, {data[2:].decode(errors='replace')!r})")
            reply = json.loads(data)
            if reply.get("id") == self._next_id and reply.get("type") == "result":
                break
        if not reply.get("success"):
            raise HomeAssistantError(f"websocket {command}: {reply.get('error')}")
        return reply["result"]

    # -- its log -----------------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.config_dir / "home-assistant.log"

    def log_tail(self, lines: int = 60) -> str:
        for path in (self.log_path, self.workdir / "home-assistant.console.log"):
            if path.exists() and path.stat().st_size:
                return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def log_records(self) -> list[LogRecord]:
        records: list[LogRecord] = []
        if not self.log_path.exists():
            return records
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = RECORD.match(line)
            if match:
                records.append(LogRecord(match.group(1), match.group(2), match.group(3)))
            elif records:
                records[-1].text += "\n" + line
        return records

    def problems(self, *loggers: str, mentioning: tuple[str, ...] = ()) -> list[LogRecord]:
        """Warnings and errors logged by ``loggers`` (and their children) or naming ``mentioning``."""
        found = []
        for record in self.log_records():
            if record.level not in ("WARNING", "ERROR", "CRITICAL"):
                continue
            if any(record.logger == name or record.logger.startswith(name + ".") for name in loggers) \
                    or any(word.lower() in record.text.lower() for word in mentioning):
                found.append(record)
        return found


@contextlib.contextmanager
def home_assistant(workdir: Path, root: Path | None = None) -> Iterator[HomeAssistant]:
    """Home Assistant started and onboarded; stopped (and its mounts gone) on exit, even on failure."""
    ha = HomeAssistant(workdir, root or ha_rootfs.rootfs_path())
    try:
        ha.start()
        ha.onboard()
        ha.confirm_http_config()
        yield ha
    finally:
        ha.stop()
