"""What the settings are: one dataclass per section of the TOML file, with types checked.

:func:`from_dict` turns a TOML-shaped mapping into :class:`Settings`: unknown sections and
keys are an error (a typo must not be silently ignored), every value must have its
default's type, and every error names the key. Which values make sense is
:mod:`appliance.settings.rules`' job.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


class SettingsError(ValueError):
    """A settings file or value that cannot be used; the message names the key.

    ``problems`` holds every value-rule problem found (``"section.key"`` -> message) when
    the error comes from :func:`appliance.settings.rules.validate`, else it is empty."""

    def __init__(self, message: str, problems: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.problems = dict(problems or {})


@dataclass
class WebSettings:
    listen_addr: str = "0.0.0.0"
    port: int = 80
    threads: int = 8
    public_url: str = ""
    """Where users reach the web UI (``configuration_url`` in Home Assistant); empty: http://<hostname>.local/."""
    stale_seconds: int = 900
    """An inverter silent this long is unavailable; its instantaneous values are dropped from /metrics."""
    nep_sources: list[str] = field(default_factory=lambda: ["access_point"])
    """Who may post NEP reports besides loopback: ``access_point`` (its subnet), ``any``, or networks
    such as ``192.168.1.0/24`` (LAN DNS mode). Others get the timestamp reply and are not recorded."""


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
    max_inverters: int = 200
    """Reports from a new serial are refused (kept as rejected frames) once this many inverters are known."""
    new_inverters_per_hour: int = 50
    """At most this many new serials are taken in any hour (forged serials must not grow the tables;
    a large fleet joining at once, 50 Enecsys inverters say, must still be taken in its first hour)."""


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
class GatewaySettings:
    """A genuine Enecsys gateway's upload stream (:mod:`appliance.gateway`, in the web service)."""

    enabled: bool = False
    listen_addr: str = "0.0.0.0"
    port: int = 5040
    """The gateway always connects to 5040; another port is for tests and port forwarding."""


@dataclass
class SystemSettings:
    timezone: str = "UTC"
    hostname: str = "solargw"
    ssh_enabled: bool = False


@dataclass
class PvoutputSettings:
    enabled: bool = False
    api_key: str = ""
    """The key from PVOutput's Settings page (API Access enabled)."""
    system_id: int = 0
    """The PVOutput system every inverter not listed in ``inverters`` reports to; 0: none."""
    inverters: dict[str, int] = field(default_factory=dict)
    """Inverter serial -> PVOutput system id (0: not uploaded), for more than one system."""
    interval_minutes: int = 5
    """The system's Status Interval on PVOutput: 5, 10 or 15."""
    base_url: str = "https://pvoutput.org/service/r2"
    """Where the API lives (another value is for tests)."""


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
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    system: SystemSettings = field(default_factory=SystemSettings)
    pvoutput: PvoutputSettings = field(default_factory=PvoutputSettings)
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
    if isinstance(default, dict):  # a table of names to whole numbers (``[pvoutput.inverters]``)
        if not isinstance(value, Mapping):
            raise SettingsError(f"{where}: expected a table, got {value!r}")
        for name, number in value.items():
            if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                raise SettingsError(f"{where}: {name!r} must be a whole number, 0 or more, got {number!r}")
        return {str(name): number for name, number in value.items()}
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
