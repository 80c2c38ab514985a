"""Everything ``solargw net`` renders from one version of the settings and the host's state."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from appliance.net import dnsmasq, firewall, hostapd, interface, resolvers, wpa
from appliance.net.addressing import AccessPointPlan, IPAddress, plan
from appliance.settings import Settings

RUN_DIR = Path("/run/solargw")
DNS_DIR = Path("/run/solargw-dns")
"""dnsmasq's servers file: readable by dnsmasq once it has dropped its privileges (see dnsmasq.py)."""


@dataclass(frozen=True)
class RuntimePaths:
    run_dir: Path = RUN_DIR
    leases: Path | None = None
    """dnsmasq's leases file; None: ``<data dir>/dnsmasq.leases``."""
    resolv_conf: Path = resolvers.RESOLV_CONF
    dns_dir: Path = DNS_DIR

    @property
    def dnsmasq_conf(self) -> Path:
        return self.run_dir / "dnsmasq.conf"

    @property
    def dnsmasq_servers(self) -> Path:
        return self.dns_dir / "servers"

    @property
    def dnsmasq_pid(self) -> Path:
        return self.run_dir / "dnsmasq.pid"

    def leases_for(self, settings: Settings) -> Path:
        return self.leases or settings.data_dir / "dnsmasq.leases"


@dataclass(frozen=True)
class NetPlan:
    """One generation of rendered configuration; equal plans need no change on the host."""
    access_point: AccessPointPlan
    upstreams: tuple[IPAddress, ...]
    lan_interfaces: tuple[str, ...]
    leases: Path
    dnsmasq_conf: str
    dnsmasq_servers: str
    """The servers file's text (the LAN's resolvers): a change needs a SIGHUP, not a restart."""
    ruleset: str
    serving: bool = True
    """``[access_point] enabled``: false keeps the firewall but no address, DHCP or DNS."""


def with_interface(settings: Settings, name: str | None) -> Settings:
    """``settings`` with the access point moved to ``name`` (a command-line override)."""
    if not name:
        return settings
    return dataclasses.replace(
        settings, access_point=dataclasses.replace(settings.access_point, interface=name)
    )


def build(settings: Settings, paths: RuntimePaths) -> NetPlan:
    """Check the settings and render; raises ``NetConfigError`` naming the bad setting."""
    ap = plan(settings.access_point)
    upstreams = tuple(resolvers.upstream_servers(
        ap.upstream_dns, [*interface.local_addresses(), ap.ip], paths.resolv_conf
    ))
    lan = tuple(interface.other_interfaces(ap.interface)) if ap.lan_dns_mode else ()
    leases = paths.leases_for(settings)
    return NetPlan(
        access_point=ap,
        upstreams=upstreams,
        lan_interfaces=lan,
        leases=leases,
        dnsmasq_conf=dnsmasq.render(ap, upstreams=upstreams, leases=leases, pid_file=paths.dnsmasq_pid,
                                    lan_interfaces=lan, servers_file=paths.dnsmasq_servers),
        dnsmasq_servers=dnsmasq.render_servers(upstreams),
        ruleset=firewall.render(ap, firewall.LanPorts.from_settings(settings)),
        serving=settings.access_point.enabled,
    )


CONFIGS = ("hostapd", "dnsmasq", "nftables", "wpa_supplicant")


def render_config(config: str, settings: Settings, paths: RuntimePaths) -> str:
    """One daemon's configuration text (``CONFIGS``); raises ``NetConfigError`` naming the bad setting."""
    if config == "hostapd":  # on the channel the upstream Wi-Fi holds the radio on, if it does
        from appliance.net import upstream  # here: every command imports this module, few need netlink

        return hostapd.render(settings.access_point, channel=upstream.held_channel(settings))
    if config == "wpa_supplicant":
        return wpa.render(settings, paths.run_dir / "wpa_supplicant")
    plan = build(settings, paths)
    if config == "dnsmasq":  # whole, the resolvers in it: what the service splits in two, in one piece
        return dnsmasq.render(plan.access_point, upstreams=plan.upstreams, leases=plan.leases,
                              pid_file=paths.dnsmasq_pid, lan_interfaces=plan.lan_interfaces)
    return plan.ruleset
