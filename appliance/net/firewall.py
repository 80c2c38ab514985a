"""nftables isolation for the appliance, in its own table ``inet solargw``.

- From the access point: only the appliance's DNS (53), DHCP (67) and HTTP (web port) are open,
  and the Enecsys gateway listener when ``[gateway]`` is on; DNS, HTTP and the gateway's port
  5040 sent to any other address (a hard-coded resolver or cloud address) are redirected to the
  appliance. Nothing from the access point is forwarded, anywhere.
- From the LAN: the web UI, the embedded MQTT broker when it serves, SSH when enabled, DNS in LAN
  DNS mode, the gateway listener when on (a genuine Enecsys gateway is an Ethernet device, on the
  LAN), and what a host needs to live on a LAN (ICMP, DHCP/DHCPv6 client replies, mDNS).
- Loopback and established traffic always pass; the host's own outgoing traffic is not filtered.
Applied atomically with ``nft -f -``: the table is replaced as a whole, never half-written.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass

from appliance.net.addressing import AccessPointPlan
from appliance.protocols import enecsys_gateway
from appliance.settings import Settings

TABLE = "solargw"


class FirewallError(RuntimeError):
    """nft refused the ruleset (the message is nft's)."""


@dataclass(frozen=True)
class LanPorts:
    web: int = 80
    ssh: bool = False
    mqtt: bool = False
    dns: bool = False
    gateway: int | None = None
    """The Enecsys gateway listener's port (both sides), None when ``[gateway]`` is off."""

    @classmethod
    def from_settings(cls, settings: Settings) -> LanPorts:
        mqtt_local = settings.mqtt.enabled and settings.mqtt.host in ("localhost", "127.0.0.1", "::1")
        return cls(
            web=settings.web.port,
            ssh=settings.system.ssh_enabled,
            mqtt=mqtt_local,
            dns=settings.access_point.lan_dns_mode,
            gateway=settings.gateway.port if settings.gateway.enabled else None,
        )


def _set(ports: list[int]) -> str:
    return "{ " + ", ".join(str(p) for p in sorted(set(ports))) + " }"


def render(plan: AccessPointPlan, lan: LanPorts) -> str:
    ap, ip, web = plan.interface, plan.ip, lan.web
    gateway = [lan.gateway] if lan.gateway else []
    lan_tcp = ([web] + ([22] if lan.ssh else []) + ([1883] if lan.mqtt else []) + ([53] if lan.dns else [])
               + gateway)
    gateway_dnat = (f'\n\t\tiifname "{ap}" tcp dport {enecsys_gateway.PORT} dnat ip to {ip}:{lan.gateway}'
                    if lan.gateway else "")
    lan_udp = [68, 546, 5353] + ([53] if lan.dns else [])
    return f"""\
# Rendered by solargw (solargw net render nftables); replaced as a whole on every change.
table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
	chain prerouting {{
		type nat hook prerouting priority dstnat; policy accept;
		iifname "{ap}" meta l4proto {{ tcp, udp }} th dport 53 dnat ip to {ip}
		iifname "{ap}" tcp dport 80 dnat ip to {ip}:{web}{gateway_dnat}
	}}

	chain input {{
		type filter hook input priority filter; policy accept;
		iif "lo" accept
		ct state invalid drop
		ct state established,related accept
		iifname "{ap}" jump from_access_point
		jump from_lan
	}}

	chain from_access_point {{
		udp dport {{ 53, 67 }} accept
		tcp dport {_set([53, web] + gateway)} accept
		counter reject with icmpx admin-prohibited
	}}

	chain from_lan {{
		meta l4proto {{ icmp, ipv6-icmp }} accept
		tcp dport {_set(lan_tcp)} accept
		udp dport {_set(lan_udp)} accept
		counter reject with icmpx admin-prohibited
	}}

	chain forward {{
		type filter hook forward priority filter; policy accept;
		iifname "{ap}" counter reject with icmpx admin-prohibited
		oifname "{ap}" counter reject with icmpx admin-prohibited
	}}
}}
"""


def apply(ruleset: str, nft: str = "nft") -> None:
    """Load ``ruleset`` in one transaction; raise ``FirewallError`` with nft's message."""
    try:
        result = subprocess.run([nft, "-f", "-"], input=ruleset, capture_output=True, text=True,
                                timeout=20, check=False)
    except FileNotFoundError:
        raise FirewallError(f"{nft} is not installed") from None
    if result.returncode != 0:
        raise FirewallError(" ".join(result.stderr.split())[:400] or f"nft exit {result.returncode}")


def present(nft: str = "nft") -> bool:
    """Whether our table is loaded (something like ``flush ruleset`` may have removed it)."""
    try:
        return subprocess.run([nft, "list", "table", "inet", TABLE], capture_output=True,
                              timeout=20, check=False).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
