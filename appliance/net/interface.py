"""The access-point interface's link and address, through netlink (pyroute2); idempotent.

pyroute2 (:mod:`appliance.net.netlink`) is imported when used: every ``solargw`` command imports
this module (``net``'s options come from ``net.plan``), and netlink costs the ones that do not need
it ~60 ms and a few MiB.
"""
from __future__ import annotations

import ipaddress
import socket

from appliance.net.addressing import IPAddress

IFF_UP = 0x1


class InterfaceError(RuntimeError):
    """The interface is missing or refused a change (the message says which)."""


def ensure_address(ifname: str, address: ipaddress.IPv4Interface) -> list[str]:
    """Bring ``ifname`` up carrying exactly ``address`` as its IPv4 address.

    Other IPv4 addresses on it are removed (the interface belongs to the access point, and an old
    address from a previous setting must go). Returns what was changed, empty when nothing was.
    """
    from appliance.net.netlink import IPRoute, NetlinkError

    changes: list[str] = []
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise InterfaceError(f"interface {ifname} does not exist (yet)")
        index = found[0]
        try:
            link = ipr.link("get", index=index)[0]
            if not link["flags"] & IFF_UP:
                ipr.link("set", index=index, state="up")
                changes.append(f"{ifname} up")
            present = False
            for msg in ipr.addr("dump", index=index, family=socket.AF_INET):
                current = ipaddress.IPv4Interface(f"{msg.get('address')}/{msg['prefixlen']}")
                if current == address:
                    present = True
                    continue
                ipr.addr("del", index=index, address=str(current.ip), prefixlen=current.network.prefixlen)
                changes.append(f"removed {current} from {ifname}")
            if not present:
                ipr.addr(
                    "add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen,
                    broadcast=str(address.network.broadcast_address),
                )
                changes.append(f"added {address} to {ifname}")
        except NetlinkError as exc:
            raise InterfaceError(f"interface {ifname}: {exc.args[-1] if exc.args else exc}") from None
    return changes


def local_addresses() -> list[IPAddress]:
    """Every address configured on this host (namespace), any interface."""
    from appliance.net.netlink import IPRoute

    with IPRoute() as ipr:
        return [ipaddress.ip_address(msg.get("address")) for msg in ipr.addr("dump") if msg.get("address")]


def other_interfaces(exclude: str) -> list[str]:
    """Interface names other than loopback and ``exclude`` (the LAN side, for LAN DNS mode)."""
    from appliance.net.netlink import IPRoute

    with IPRoute() as ipr:
        names = [link.get("ifname") for link in ipr.link("dump")]
    return sorted(name for name in names if name and name not in ("lo", exclude))


def ipv4_addresses(ifname: str) -> list[str]:
    """The IPv4 addresses (with prefix length) on ``ifname``; empty when it has none or is gone."""
    from appliance.net.netlink import IPRoute, NetlinkError

    try:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                return []
            return [f"{msg.get('address')}/{msg['prefixlen']}"
                    for msg in ipr.addr("dump", index=found[0], family=socket.AF_INET)]
    except (NetlinkError, OSError):
        return []
