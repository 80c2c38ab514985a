"""The access point's addressing plan, checked once so every renderer can trust it.

Every value that ends up in a rendered configuration file passes through here (or through the
hostapd / wpa_supplicant checks), so a setting can never inject a line into a config file.
The rules themselves are the settings' (:mod:`appliance.settings.rules`): the same ones the
settings pages and every service apply.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from appliance.settings import AccessPointSettings, rules

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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


def require(key: str, message: str | None) -> None:
    """Refuse a value its rule found wrong (``message``; None: the value is fine)."""
    if message:
        raise NetConfigError(f"{key}: {message}")


def check_interface_name(name: str, key: str) -> str:
    require(key, rules.interface_error(name))
    return name


def parse_ip(text: str, key: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise NetConfigError(f"{key}: {text!r} is not an IP address") from None


def plan(ap: AccessPointSettings) -> AccessPointPlan:
    """Check ``[access_point]`` and return its addressing plan; ``NetConfigError`` names the bad key."""
    interface = check_interface_name(ap.interface, "[access_point] interface")
    for key, message in rules.access_point_addressing(ap).items():
        require(f"[access_point] {key}", message)
    return AccessPointPlan(
        interface,
        ipaddress.IPv4Interface(ap.address.strip()),
        ipaddress.IPv4Address(ap.dhcp_start.strip()),
        ipaddress.IPv4Address(ap.dhcp_end.strip()),
        ap.lan_dns_mode,
        tuple(parse_ip(text, "[access_point] upstream_dns") for text in ap.upstream_dns),
    )
