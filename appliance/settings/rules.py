"""Which setting values make sense: the one place for value rules.

:func:`validate` returns every problem of a :class:`~appliance.settings.model.Settings`,
keyed ``"section.key"`` (a settings page shows each message beside its field);
:func:`require_valid` raises them together as one ``SettingsError``. The settings pages, an
imported file, the first-boot file and every service (at start and whenever the file
changes) go through it, so a hand-edited file meets the same rules as the form. The network
renderers call the single-value rules again on what they write into a daemon's config file.

A single-value rule (``*_error``) returns what is wrong, without the key, or None. Pure
apart from reading tzdata's tables (time zones, ISO 3166 codes), once.
"""
from __future__ import annotations

import ipaddress
import re
import urllib.parse
import zoneinfo
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

from appliance.protocols.enecsys import PAN_ID as ENECSYS_PAN_ID
from appliance.pvoutput.api import INTERVALS_MINUTES
from appliance.settings.model import AccessPointSettings, Settings, SettingsError

Problems = dict[str, str]
"""``"section.key"`` -> what is wrong with its value."""

_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_COUNTRY = re.compile(r"[A-Z]{2}")


# --- single values ------------------------------------------------------------------------------

def interface_error(name: str) -> str | None:
    """A Linux interface name: it also ends up in config files, so nothing else gets through."""
    if not _IFNAME.fullmatch(name) or name in (".", ".."):
        return f"{name!r} is not an interface name (1-15 letters, digits, '.', '_' or '-')"
    return None


def upstream_interface_error(name: str, access_point_interface: str) -> str | None:
    """The upstream client's own interface: a valid name, not the access point's."""
    if name == access_point_interface:
        return "must differ from [access_point] interface"
    return interface_error(name)


def ssid_error(ssid: str) -> str | None:
    """An SSID is 1-32 bytes (UTF-8 here) without control characters."""
    if not ssid:
        return "not set"
    size = len(ssid.encode("utf-8"))
    if size > 32:
        return f"an SSID is 1 to 32 bytes, {ssid!r} is {size}"
    if any(ord(c) < 32 or ord(c) == 127 for c in ssid):
        return "the SSID contains a control character"
    return None


def passphrase_error(passphrase: str) -> str | None:
    """WPA2 passphrases are 8-63 printable ASCII characters (IEEE 802.11i)."""
    if not 8 <= len(passphrase) <= 63:
        return f"a WPA2 passphrase is 8 to 63 characters, not {len(passphrase)}"
    if not all(32 <= ord(c) <= 126 for c in passphrase):
        return "the passphrase may only use printable ASCII characters"
    return None


@lru_cache(maxsize=1)
def country_codes() -> frozenset[str]:
    """ISO 3166 alpha-2 codes from tzdata's table (on every Debian system); empty if absent."""
    try:
        text = Path("/usr/share/zoneinfo/iso3166.tab").read_text(encoding="utf-8")
    except OSError:
        return frozenset()
    return frozenset(line.split("\t", 1)[0] for line in text.splitlines() if line and not line.startswith("#"))


def country_error(value: str) -> str | None:
    """An ISO 3166 code; case and spaces do not matter (hostapd gets it upper-cased)."""
    code = value.strip().upper()
    if not _COUNTRY.fullmatch(code):
        return f"{value!r} is not a two-letter ISO 3166 country code (for example GB, DE, US)"
    codes = country_codes()
    if codes and code not in codes:
        return f"{code} is not an ISO 3166 country code"
    return None


def channel_error(channel: int, country: str) -> str | None:
    """2.4 GHz channels 1-13; 14 exists only in Japan (and only for 802.11b)."""
    if channel == 14 and country.strip().upper() == "JP":
        return None
    if not 1 <= channel <= 13:
        allowed = "1 to 14" if country.strip().upper() == "JP" else "1 to 13 (14 only in Japan)"
        return f"{channel} is not a 2.4 GHz channel; use {allowed}"
    return None


def host_error(value: str) -> str | None:
    if not value:
        return "must not be empty"
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    if not _HOST_NAME.match(value):
        return "not a valid host name or IP address"
    return None


def hostname_error(value: str) -> str | None:
    """This appliance's own name: one DNS label (it becomes ``<name>.local``)."""
    return None if _HOST_LABEL.match(value) else f"{value!r} is not a valid host name"


def address_error(value: str) -> str | None:
    """An optional fixed IP address (empty: look the name up)."""
    if not value:
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "not an IP address (leave empty to look the name up)"
    return None


def listen_address_error(value: str) -> str | None:
    """An address to listen on: an IP address of this machine, or 0.0.0.0 / :: for all."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address (0.0.0.0 listens on every interface)"
    return None


def port_error(value: int, *, zero_allowed: bool = False) -> str | None:
    if zero_allowed:
        return None if 0 <= value <= 65535 else f"{value} is not a port number (0 to 65535; 0: any free port)"
    return None if 1 <= value <= 65535 else "must be a port number from 1 to 65535"


def topic_prefix_error(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if any(c in value for c in "#+\0") or value.startswith("/") or value.endswith("/"):
        return "an MQTT topic without wildcards (# +) and without a leading or trailing /"
    return None


@lru_cache(maxsize=1)
def time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def timezone_error(value: str) -> str | None:
    return None if value in time_zones() else f"unknown time zone {value!r} (for example Europe/London)"


def timeout_error(value: float) -> str | None:
    return None if 0.5 <= value <= 60 else "must be between 0.5 and 60 seconds"


def parse_resolver(text: str) -> tuple[str, int]:
    """``1.1.1.1``, ``127.0.0.1:5353``, ``::1`` or ``[::1]:5353`` -> (address, port); ValueError if not."""
    text = text.strip()
    if text.startswith("["):
        address, _, port = text[1:].partition("]")
        return address, int(port.lstrip(":") or 53)
    if text.count(":") == 1:
        address, port = text.split(":")
        return address, int(port)
    return text, 53


def resolver_error(value: str) -> str | None:
    try:
        address, port = parse_resolver(value)
        ipaddress.ip_address(address)
    except ValueError:
        return f"{value!r} is not ADDRESS or ADDRESS:PORT (for example 1.1.1.1 or [::1]:5353)"
    return port_error(port)


def password_error(value: str) -> str | None:
    """The admin password (set on the settings page or in the first-boot file; stored as a hash)."""
    if len(value) < 8:
        return "must be at least 8 characters"
    if len(value) > 256:
        return "must be at most 256 characters"
    return None


def zigbee_channel_error(channel: int) -> str | None:
    return None if 11 <= channel <= 26 else f"{channel} is not a Zigbee channel (11 to 26)"


def pan_id_error(pan_id: int) -> str | None:
    return None if 0x0001 <= pan_id <= 0xFFFE else f"0x{pan_id:X} is not a PAN id (0x0001 to 0xFFFE)"


def extended_pan_id_error(value: str) -> str | None:
    try:
        if len(bytes.fromhex(value.replace(":", ""))) == 8:
            return None
    except ValueError:
        pass
    return f"{value!r} is not 8 bytes in hex (like d3:73:39:d4:cb:1c:60:bb)"


def nep_source_error(entry: str) -> str | None:
    """One ``[web] nep_sources`` entry: ``access_point``, ``any`` or an IP network."""
    if entry.strip() in ("access_point", "any"):
        return None
    try:
        ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        return f"{entry!r} is not access_point, any or a network such as 192.168.1.0/24"
    return None


def limit_error(value: int, low: int, high: int) -> str | None:
    return None if low <= value <= high else f"must be from {low} to {high}"


MAX_PVOUTPUT_SYSTEM_ID = 2**31 - 1


def pvoutput_key_error(value: str, enabled: bool) -> str | None:
    """The API key from PVOutput's settings (40 letters and digits there; not checked more closely)."""
    if not value:
        return "the API key from PVOutput (Settings, API Settings) is needed to upload" if enabled else None
    if len(value) > 100 or any(c.isspace() or not c.isprintable() for c in value):
        return "an API key is up to 100 characters without spaces (PVOutput's are 40 letters and digits)"
    return None


def pvoutput_system_error(value: int) -> str | None:
    return None if 0 <= value <= MAX_PVOUTPUT_SYSTEM_ID else f"{value} is not a PVOutput system id (0: none)"


def pvoutput_interval_error(value: int) -> str | None:
    if value not in INTERVALS_MINUTES:
        return "5, 10 or 15 minutes: the Status Interval of the system on PVOutput"
    return None


def url_error(value: str) -> str | None:
    parts = urllib.parse.urlsplit(value)
    return None if parts.scheme in ("http", "https") and parts.hostname else f"{value!r} is not an http:// or https:// address"


# --- the access point's addressing (several keys at once) -------------------------------------

def access_point_addressing(ap: AccessPointSettings) -> Problems:
    """Address, DHCP range and resolvers of ``[access_point]``, keyed by the bare key."""
    problems: Problems = {}
    try:
        address = ipaddress.IPv4Interface(ap.address.strip())
    except ValueError:
        problems["address"] = f"{ap.address!r} is not an IPv4 address with prefix, like 10.42.0.1/24"
        address = None
    network = address.network if address is not None else None
    if network is not None and not 8 <= network.prefixlen <= 29:
        problems["address"] = f"prefix /{network.prefixlen} leaves no room for a DHCP range (use /8 to /29)"
        network = None
    if address is not None and network is not None and address.ip in (network.network_address,
                                                                        network.broadcast_address):
        problems["address"] = f"{address.ip} is the subnet's network or broadcast address"
        network = None
    bounds = {}
    for key in ("dhcp_start", "dhcp_end"):
        text = getattr(ap, key)
        try:
            value = ipaddress.IPv4Address(text.strip())
        except ValueError:
            problems[key] = f"{text!r} is not an IPv4 address"
            continue
        if network is not None and (value not in network or value in (network.network_address,
                                                                      network.broadcast_address)):
            problems[key] = f"{value} is outside the access point subnet {network}"
            continue
        bounds[key] = value
    if network is not None and len(bounds) == 2:
        start, end = bounds["dhcp_start"], bounds["dhcp_end"]
        if start > end:
            problems["dhcp_end"] = f"dhcp_start {start} is after dhcp_end {end}"
        elif start <= address.ip <= end:
            problems["address"] = f"the appliance's own address {address.ip} lies inside the DHCP range {start}-{end}"
    for text in ap.upstream_dns:
        try:
            server = ipaddress.ip_address(text.strip())
        except ValueError:
            problems["upstream_dns"] = f"{text!r} is not an IP address"
            break
        if address is not None and server == address.ip:
            problems["upstream_dns"] = f"{server} is the appliance itself (a forwarding loop)"
            break
    return problems


# --- the whole settings --------------------------------------------------------------------------

def validate(settings: Settings, sections: Iterable[str] | None = None) -> Problems:
    """Every problem of ``settings`` (of ``sections`` only, when given), keyed ``section.key``."""
    wanted = set(sections) if sections is not None else None
    problems: Problems = {}

    def add(key: str, message: str | None) -> None:
        if message and (wanted is None or key.split(".", 1)[0] in wanted) and key not in problems:
            problems[key] = message

    add("web.port", port_error(settings.web.port, zero_allowed=True))
    for entry in settings.web.nep_sources:
        add("web.nep_sources", nep_source_error(entry))
    add("data.max_inverters", limit_error(settings.data.max_inverters, 1, 10000))
    add("data.new_inverters_per_hour", limit_error(settings.data.new_inverters_per_hour, 0, 10000))

    ap = settings.access_point
    add("access_point.interface", interface_error(ap.interface))
    add("access_point.ssid", ssid_error(ap.ssid))
    if ap.passphrase:  # empty: the first boot generates one
        add("access_point.passphrase", passphrase_error(ap.passphrase))
    add("access_point.country", country_error(ap.country))
    add("access_point.channel", channel_error(ap.channel, ap.country))
    for key, message in access_point_addressing(ap).items():
        add(f"access_point.{key}", message)

    up = settings.upstream_wifi
    if up.enabled:
        add("upstream_wifi.interface", upstream_interface_error(up.interface, ap.interface))
        add("upstream_wifi.ssid", ssid_error(up.ssid))
        if up.passphrase:  # empty: an open network
            add("upstream_wifi.passphrase", passphrase_error(up.passphrase))

    mq = settings.mqtt
    add("mqtt.host", host_error(mq.host))
    add("mqtt.port", port_error(mq.port))
    add("mqtt.discovery_prefix", topic_prefix_error(mq.discovery_prefix))
    add("mqtt.base_topic", topic_prefix_error(mq.base_topic))
    if mq.password and not mq.username:
        add("mqtt.username", "a password needs a user name")

    rl = settings.relay
    add("relay.host", host_error(rl.host))
    add("relay.address", address_error(rl.address))
    add("relay.resolver", resolver_error(rl.resolver))
    add("relay.timeout_seconds", timeout_error(rl.timeout_seconds))
    add("relay.port", port_error(rl.port))

    zb = settings.zigbee
    add("zigbee.channel", zigbee_channel_error(zb.channel))
    add("zigbee.pan_id", pan_id_error(zb.pan_id))
    add("zigbee.extended_pan_id", extended_pan_id_error(zb.extended_pan_id))

    gw = settings.gateway
    add("gateway.listen_addr", listen_address_error(gw.listen_addr))
    add("gateway.port", port_error(gw.port))
    addresses = {gw.listen_addr, settings.web.listen_addr}
    if gw.enabled and gw.port == settings.web.port and (len(addresses) == 1 or addresses & {"0.0.0.0", "::"}):
        add("gateway.port", f"{gw.port} is the web service's port")

    add("system.timezone", timezone_error(settings.system.timezone))
    add("system.hostname", hostname_error(settings.system.hostname))

    pv = settings.pvoutput
    add("pvoutput.api_key", pvoutput_key_error(pv.api_key, pv.enabled))
    add("pvoutput.system_id", pvoutput_system_error(pv.system_id))
    if pv.enabled and not pv.system_id and not any(pv.inverters.values()):
        add("pvoutput.system_id", "the PVOutput system id is needed (or one per inverter)")
    for serial, system in pv.inverters.items():
        message = pvoutput_system_error(system)
        add("pvoutput.inverters", message and f"inverter {serial}: {message}")
    add("pvoutput.interval_minutes", pvoutput_interval_error(pv.interval_minutes))
    add("pvoutput.base_url", url_error(pv.base_url))
    return problems


def advice(settings: Settings) -> Problems:
    """Values that are allowed but will not work as one probably expects (worth a warning)."""
    notes: Problems = {}
    sources = [entry.strip() for entry in settings.web.nep_sources]
    if "any" not in sources and all(entry == "access_point" for entry in sources):
        if settings.access_point.lan_dns_mode:
            notes["web.nep_sources"] = ("LAN DNS mode is on but NEP reports are only taken from the access "
                                        "point's subnet: add your LAN (e.g. \"192.168.1.0/24\") or \"any\"")
        elif not settings.access_point.enabled:
            notes["web.nep_sources"] = ("the access point is off but NEP reports are only taken from its "
                                        "subnet: add the inverters' network or \"any\"")
    if settings.zigbee.pan_id != ENECSYS_PAN_ID:
        notes["zigbee.pan_id"] = (f"0x{settings.zigbee.pan_id:04X}: Enecsys inverters only join PAN "
                                  f"0x{ENECSYS_PAN_ID:04X}")
    return notes


def describe(problems: Mapping[str, str]) -> str:
    """``[section] key: message; ...`` (the form every settings error takes)."""
    parts = []
    for key, message in problems.items():
        section, _, name = key.partition(".")
        parts.append(f"[{section}] {name}: {message}")
    return "; ".join(parts)


def require_valid(settings: Settings, sections: Iterable[str] | None = None) -> Settings:
    """``settings`` when :func:`validate` finds nothing, else ``SettingsError`` with every problem."""
    problems = validate(settings, sections)
    if problems:
        raise SettingsError(describe(problems), problems)
    return settings
