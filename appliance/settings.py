"""The appliance settings: one TOML file, ``/etc/solargw/solargw.toml``.

``SOLARGW_SETTINGS`` names another file; ``SOLARGW_DATA_DIR`` and the seed NEP
server's ``NEP_LISTEN_ADDR`` / ``NEP_LISTEN_PORT`` / ``NEP_MQTT_ADDR`` /
``NEP_MQTT_PORT`` override the file, so the collector also runs outside the
appliance. A missing file means defaults. Unknown keys are an error (a typo
must not be silently ignored); every error names the key.
"""
from __future__ import annotations

import dataclasses
import os
import time
import tomllib
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import tomli_w

DEFAULT_PATH = Path("/etc/solargw/solargw.toml")


class SettingsError(ValueError):
    """A setting with a bad value; the message names the key."""


@dataclass
class WebSettings:
    listen_addr: str = "0.0.0.0"
    port: int = 80
    threads: int = 8
    public_url: str = ""
    """Where users reach the web UI (``configuration_url`` in Home Assistant); empty: http://<hostname>.local/."""
    stale_seconds: int = 900
    """An inverter silent this long is unavailable; its instantaneous values are dropped from /metrics."""


@dataclass
class DataSettings:
    dir: str = "/var/lib/solargw"
    full_resolution_days: int = 7
    keep_days: int = 730
    flush_seconds: float = 300.0
    """The loss window: readings reach the SD card in one group commit at most this long after they
    arrive, so a power cut loses at most this much (a service restart loses nothing)."""
    history_seconds: float = 300.0
    """History on the card: the newest reading per inverter of every this many seconds (0: every reading)."""
    ram_dir: str = ""
    """Where the working copy of the newest data lives (a RAM file system); empty: /run/solargw for the
    appliance's data directory, else the data directory itself."""


@dataclass
class MqttSettings:
    enabled: bool = True
    host: str = "localhost"
    port: int = 1883
    tls: bool = False
    ca_file: str = ""
    username: str = ""
    password: str = ""
    discovery_prefix: str = "homeassistant"
    base_topic: str = "solargw"
    retain: bool = True
    """Retain discovery configs."""
    per_entity_discovery: bool = False
    """Use the older one-topic-per-entity discovery instead of device discovery."""
    seed_compat: bool = False
    """Also publish the seed server's ``homeassistant/sensor/<serial>/watt``."""


@dataclass
class RelaySettings:
    enabled: bool = False
    host: str = "www.nepviewer.net"
    address: str = ""
    """Fixed cloud address; empty: resolve ``host`` through ``resolver``."""
    resolver: str = "1.1.1.1"
    """Resolver asked for the cloud's real address (never the local override); ``addr`` or ``addr:port``."""
    timeout_seconds: float = 5.0
    port: int = 80
    """The cloud's HTTP port (the inverters only use 80; other values are for tests)."""


@dataclass
class AccessPointSettings:
    enabled: bool = True
    interface: str = "wlan0"
    ssid: str = "solargw"
    passphrase: str = ""
    country: str = "GB"
    channel: int = 6
    address: str = "10.42.0.1/24"
    dhcp_start: str = "10.42.0.50"
    dhcp_end: str = "10.42.0.250"
    lan_dns_mode: bool = False
    """Also answer DNS on the LAN (for users who point their router's DNS at the appliance)."""
    upstream_dns: list[str] = field(default_factory=list)
    """Resolvers for other names; empty: the LAN's, read from resolv.conf."""


@dataclass
class UpstreamWifiSettings:
    enabled: bool = False
    interface: str = "wlan1"
    ssid: str = ""
    passphrase: str = ""


@dataclass
class ZigbeeSettings:
    enabled: bool = True
    device: str = "auto"
    """Serial path, ``socket://host:port`` or ``auto`` (the Sonoff dongle under /dev/serial/by-id)."""
    channel: int = 13
    pan_id: int = 0x02AA  # the only PAN id Enecsys inverters join (protocols.enecsys.PAN_ID)
    extended_pan_id: str = "d3:73:39:d4:cb:1c:60:bb"
    telemetry_json: str = ""
    """Optional path of a seed-PoC-shaped telemetry.json."""


@dataclass
class SystemSettings:
    timezone: str = "UTC"
    hostname: str = "solargw"
    ssh_enabled: bool = False


@dataclass
class AdminSettings:
    password_hash: str = ""
    """werkzeug password hash; empty: set on first visit."""
    secret_key: str = ""
    """Flask session key; generated on first start when empty."""


@dataclass
class Settings:
    web: WebSettings = field(default_factory=WebSettings)
    data: DataSettings = field(default_factory=DataSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    access_point: AccessPointSettings = field(default_factory=AccessPointSettings)
    upstream_wifi: UpstreamWifiSettings = field(default_factory=UpstreamWifiSettings)
    zigbee: ZigbeeSettings = field(default_factory=ZigbeeSettings)
    system: SystemSettings = field(default_factory=SystemSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    path: Path | None = field(default=None, compare=False)

    @property
    def data_dir(self) -> Path:
        return Path(self.data.dir)

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: dataclasses.asdict(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name != "path"
        }


def _coerce(section: str, key: str, default: Any, value: Any) -> Any:
    where = f"[{section}] {key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SettingsError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):  # every number setting is a count, a size, a time or a port
        whole = isinstance(default, int)
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            raise SettingsError(f"{where}: expected a {'whole ' if whole else ''}number, got {value!r}")
        if value < 0:
            raise SettingsError(f"{where}: must not be negative, got {value!r}")
        return value if whole else float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise SettingsError(f"{where}: expected text, got {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{where}: expected a list of text, got {value!r}")
        return list(value)
    return value


def from_dict(data: Mapping[str, Any], base: Settings | None = None) -> Settings:
    """Settings from a TOML-shaped mapping, on top of ``base`` (defaults when None)."""
    settings = dataclasses.replace(base) if base else Settings()
    sections = {f.name for f in dataclasses.fields(Settings) if f.name != "path"}
    for name, values in data.items():
        if name not in sections:
            raise SettingsError(f"unknown section [{name}]")
        if not isinstance(values, Mapping):
            raise SettingsError(f"[{name}] must be a table")
        current = getattr(settings, name)
        known = {f.name: f for f in dataclasses.fields(current)}
        changes = {}
        for key, value in values.items():
            if key not in known:
                raise SettingsError(f"[{name}] unknown key {key!r}")
            changes[key] = _coerce(name, key, getattr(current, key), value)
        setattr(settings, name, dataclasses.replace(current, **changes))
    return settings


def _apply_environment(settings: Settings, env: Mapping[str, str]) -> Settings:
    def port(name: str) -> int:
        try:
            value = int(env[name])
        except ValueError:
            raise SettingsError(f"{name}: expected a port number, got {env[name]!r}") from None
        if not 0 < value < 65536:
            raise SettingsError(f"{name}: {value} is not a port number")
        return value

    web, mqtt, data = settings.web, settings.mqtt, settings.data
    if "NEP_LISTEN_ADDR" in env:
        web = dataclasses.replace(web, listen_addr=env["NEP_LISTEN_ADDR"])
    if "NEP_LISTEN_PORT" in env:
        web = dataclasses.replace(web, port=port("NEP_LISTEN_PORT"))
    if "NEP_MQTT_ADDR" in env:
        mqtt = dataclasses.replace(mqtt, host=env["NEP_MQTT_ADDR"], enabled=True)
    if "NEP_MQTT_PORT" in env:
        mqtt = dataclasses.replace(mqtt, port=port("NEP_MQTT_PORT"))
    if "SOLARGW_DATA_DIR" in env:
        data = dataclasses.replace(data, dir=env["SOLARGW_DATA_DIR"])
    return dataclasses.replace(settings, web=web, mqtt=mqtt, data=data)


def apply_timezone(settings: Settings) -> bool:
    """Make ``[system] timezone`` this process's local time (``TZ`` + ``tzset``).

    Every service calls it at start and on a settings change, so "today" in the
    store's energy totals, the ledger's dawn detection and the UI's clock are
    one and the same day. An unknown zone changes nothing and returns False.
    """
    name = settings.system.timezone
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    if os.environ.get("TZ") != name:
        os.environ["TZ"] = name
        time.tzset()
    return True


def settings_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("SOLARGW_SETTINGS", str(DEFAULT_PATH)))


def file_fingerprint(path: Path | str) -> tuple[int, int, int] | None:
    """What changes when the settings file is rewritten (``save`` replaces it), None without one:
    the long-running services poll it to follow edits."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def load(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings file (defaults if it does not exist), then the environment overrides."""
    env = os.environ if env is None else env
    path = Path(path) if path is not None else settings_path(env)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        data = {}
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read: {exc.strerror}") from None
    settings = from_dict(data)
    settings.path = path
    return _apply_environment(settings, env)


def save(settings: Settings, path: Path | str | None = None) -> Path:
    """Write the file atomically (mode 0600: it holds secrets)."""
    path = Path(path or settings.path or settings_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        tomli_w.dump(settings.to_dict(), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path
