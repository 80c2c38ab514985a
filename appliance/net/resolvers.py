"""Which resolvers dnsmasq forwards other names to: the configured ones, else the LAN's."""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from pathlib import Path

from appliance.net.addressing import IPAddress

RESOLV_CONF = Path("/etc/resolv.conf")
RESOLVED_UPSTREAM = Path("/run/systemd/resolve/resolv.conf")
"""systemd-resolved's list of real upstream servers, when /etc/resolv.conf only names its stub."""


def nameservers(text: str) -> list[IPAddress]:
    """The ``nameserver`` addresses of a resolv.conf text (garbage lines are skipped)."""
    found = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                found.append(ipaddress.ip_address(fields[1]))
            except ValueError:
                continue
    return found


def usable(servers: Iterable[IPAddress], own: Iterable[IPAddress]) -> list[IPAddress]:
    """Drop loopback and the appliance's own addresses (forwarding to ourselves is a loop)."""
    own = set(own)
    result = []
    for server in servers:
        plain = ipaddress.ip_address(str(server).split("%", 1)[0])
        if plain.is_loopback or plain.is_unspecified or plain in own or server in result:
            continue
        result.append(server)
    return result


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def upstream_servers(
    configured: Sequence[IPAddress],
    own: Iterable[IPAddress],
    resolv_conf: Path = RESOLV_CONF,
    fallback: Path | None = RESOLVED_UPSTREAM,
) -> list[IPAddress]:
    """``configured`` if given, else the LAN's resolvers from resolv.conf; may be empty."""
    own = list(own)
    if configured:
        return usable(configured, own)
    servers = usable(nameservers(_read(resolv_conf)), own)
    if not servers and fallback is not None:
        servers = usable(nameservers(_read(fallback)), own)
    return servers
