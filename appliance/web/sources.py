"""Who may post NEP reports: ``[web] nep_sources``, loopback always.

The inverters reach the appliance through its access point, so by default only that subnet
(``[access_point] address``, e.g. 10.42.0.0/24) and loopback may post reports; any host on
the LAN could otherwise forge readings. Users whose inverters reach the appliance another
way (LAN DNS mode, a router's DNS override) add their network (``"192.168.1.0/24"``) or
``"any"``. A refused report still gets the timestamp reply (an inverter must never retry in
a loop) and is kept with the rejected frames, the reason naming the address.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache

from appliance.settings import Settings

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ACCESS_POINT = "access_point"
ANY = "any"


def parse_source(entry: str) -> IpNetwork | str:
    """``access_point``, ``any`` or a network (a bare address is a /32 or /128); ValueError if not."""
    text = entry.strip()
    if text in (ACCESS_POINT, ANY):
        return text
    return ipaddress.ip_network(text, strict=False)


@dataclass(frozen=True)
class SourceFilter:
    networks: tuple[IpNetwork, ...]
    anyone: bool
    description: str
    _seen: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def allows(self, address: str) -> bool:
        """Whether ``address`` may post (answers are remembered: an inverter posts again and again)."""
        if self.anyone:
            return True
        known = self._seen.get(address)
        if known is None:
            if len(self._seen) >= 1024:
                self._seen.clear()
            known = self._seen[address] = self._check(address)
        return known

    def _check(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:  # a unix socket or nothing: a local process
            return address in ("", "unix")
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback or any(ip in network for network in self.networks)


@lru_cache(maxsize=8)
def _build(sources: tuple[str, ...], access_point: str) -> SourceFilter:
    networks: list[IpNetwork] = []
    shown: list[str] = []
    anyone = False
    for entry in sources:
        try:
            parsed = parse_source(entry)
        except ValueError:  # the settings rules refuse it; never widen the filter for it
            continue
        if parsed == ANY:
            anyone = True
        elif parsed == ACCESS_POINT:
            try:
                network = ipaddress.IPv4Interface(access_point.strip()).network
            except ValueError:
                continue
            networks.append(network)
            shown.append(f"access point {network}")
        else:
            networks.append(parsed)
            shown.append(str(parsed))
    description = "any address" if anyone else ", ".join([*shown, "loopback"])
    return SourceFilter(tuple(networks), anyone, description)


def source_filter(settings: Settings) -> SourceFilter:
    """The filter for ``settings`` (cached: it is asked for every report)."""
    return _build(tuple(settings.web.nep_sources), settings.access_point.address)
