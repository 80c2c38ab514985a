"""Who is connected to the access point: dnsmasq's DHCP leases and the radio's stations."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from appliance.net.netlink import IW, NetlinkError


@dataclass(frozen=True)
class Lease:
    mac: str
    ip: str
    hostname: str
    expires: int
    """Unix time; 0 for an infinite lease."""


@dataclass(frozen=True)
class Station:
    mac: str
    signal_dbm: int | None
    connected_seconds: int | None
    inactive_ms: int | None


def parse_leases(text: str) -> list[Lease]:
    """dnsmasq's leases file: ``expiry mac ip hostname client-id`` per line; odd lines are skipped
    (DHCPv6 ``duid`` lines, a file caught half-written)."""
    leases = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or not fields[0].isdigit() or fields[1].count(":") != 5:
            continue
        hostname = "" if fields[3] == "*" else fields[3]
        leases.append(Lease(fields[1].lower(), fields[2], hostname, int(fields[0])))
    return leases


def read_leases(path: Path) -> list[Lease]:
    try:
        return parse_leases(path.read_text(errors="replace"))
    except FileNotFoundError:
        return []


def station_from_message(msg: Any) -> Station:
    """A ``Station`` from an nl80211 NEW_STATION message."""
    info = msg.get_attr("NL80211_ATTR_STA_INFO")
    get = info.get_attr if info is not None else (lambda name: None)
    return Station(
        mac=str(msg.get_attr("NL80211_ATTR_MAC")).lower(),
        signal_dbm=get("NL80211_STA_INFO_SIGNAL"),
        connected_seconds=get("NL80211_STA_INFO_CONNECTED_TIME"),
        inactive_ms=get("NL80211_STA_INFO_INACTIVE_TIME"),
    )


def read_stations(ifname: str) -> tuple[list[Station], str]:
    """The stations associated with ``ifname`` and a note ("" when the radio answered).

    Without a Wi-Fi radio (no nl80211 in the kernel, or ``ifname`` not wireless) this returns no
    stations and says why, rather than failing: the leases still tell who is there.
    """
    try:
        with IW() as iw:
            interfaces = iw.get_interfaces_dict()
            if ifname not in interfaces:
                return [], f"{ifname} is not a Wi-Fi interface"
            return [station_from_message(m) for m in iw.get_stations(interfaces[ifname][0])], ""
    except NetlinkError as exc:
        return [], f"no Wi-Fi radio ({exc.args[-1] if exc.args else exc})"
    except OSError as exc:
        return [], f"no Wi-Fi radio ({exc})"


def clients(leases_path: Path, ifname: str, now: float | None = None) -> dict[str, Any]:
    """Leases and stations merged by MAC address, for the UI, ``solargw net clients`` and status."""
    now = time.time() if now is None else now
    leases = {lease.mac: lease for lease in read_leases(leases_path)
              if lease.expires == 0 or lease.expires > now}
    stations, note = read_stations(ifname)
    by_mac = {s.mac: s for s in stations}
    merged = []
    for mac in sorted(set(leases) | set(by_mac)):
        lease, station = leases.get(mac), by_mac.get(mac)
        entry: dict[str, Any] = {"mac": mac, "ip": None, "hostname": "", "lease_expires": None}
        if lease:
            entry.update(ip=lease.ip, hostname=lease.hostname, lease_expires=lease.expires)
        entry["associated"] = None if note else station is not None
        entry.update({k: v for k, v in asdict(station).items() if k != "mac"} if station else
                     {"signal_dbm": None, "connected_seconds": None, "inactive_ms": None})
        merged.append(entry)
    return {"interface": ifname, "clients": merged, "stations_note": note}
