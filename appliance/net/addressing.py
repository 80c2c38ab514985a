"""The access point's addressing plan, checked once so every renderer can trust it.

Every value that ends up in a rendered configuration file passes through here (or through the
hostapd / wpa_supplicant checks), so a setting can never inject a line into a config file.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from appliance.settings import AccessPointSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


class NetConfigError(ValueError):
    """A network setting that cannot work; the message names the setting."""


@dataclass(frozen=True)
class AccessPointPlan:
    interface: str
    address: ipaddress.IPv4Interface
    dhcp_start: ipaddress.IPv4Address
    dhcp_end: ipaddress.IPv4Address
    lan_dns_mode: bool
    upstream_dns: tuple[IPAddress, ...]

    @property
    def ip(self) -> ipaddress.IPv4Address:
        return self.address.ip

    @property
    def network(self) -> ipaddress.IPv4Network:
        return self.address.network


def check_interface_name(name: str, key: str) -> str:
    if not _IFNAME.fullmatch(name) or name in (".", ".."):
        raise NetConfigError(
            f"{key}: {name!r} is not an interface name (1-15 letters, digits, '.', '_' or '-')"
        )
    return name


def parse_ip(text: str, key: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise NetConfigError(f"{key}: {text!r} is not an IP address") from None


def plan(ap: AccessPointSettings) -> AccessPointPlan:
    """Check ``[access_point]`` and return its addressing plan; ``NetConfigError`` names the bad key."""
    interface = check_interface_name(ap.interface, "[access_point] interface")
    try:
        address = ipaddress.IPv4Interface(ap.address.strip())
    except ValueError:
        raise NetConfigError(
            f"[access_point] address: {ap.address!r} is not an IPv4 address with prefix, like 10.42.0.1/24"
        ) from None
    network = address.network
    if not 8 <= network.prefixlen <= 29:
        raise NetConfigError(
            f"[access_point] address: prefix /{network.prefixlen} leaves no room for a DHCP range (use /8 to /29)"
        )
    if address.ip in (network.network_address, network.broadcast_address):
        raise NetConfigError(
            f"[access_point] address: {address.ip} is the subnet's network or broadcast address"
        )
    bounds = []
    for key in ("dhcp_start", "dhcp_end"):
        text = getattr(ap, key)
        try:
            value = ipaddress.IPv4Address(text.strip())
        except ValueError:
            raise NetConfigError(f"[access_point] {key}: {text!r} is not an IPv4 address") from None
        if value not in network or value in (network.network_address, network.broadcast_address):
            raise NetConfigError(
                f"[access_point] {key}: {value} is outside the access point subnet {network}"
            )
        bounds.append(value)
    start, end = bounds
    if start > end:
        raise NetConfigError(f"[access_point] dhcp_start {start} is after dhcp_end {end}")
    if start <= address.ip <= end:
        raise NetConfigError(
            f"[access_point] the appliance's own address {address.ip} lies inside the DHCP range {start}-{end}"
        )
    upstream = tuple(parse_ip(text, "[access_point] upstream_dns") for text in ap.upstream_dns)
    if address.ip in upstream:
        raise NetConfigError(
            f"[access_point] upstream_dns: {address.ip} is the appliance itself (a forwarding loop)"
        )
    return AccessPointPlan(interface, address, start, end, ap.lan_dns_mode, upstream)
