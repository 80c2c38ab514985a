"""dnsmasq for the access point: the configuration (pure), its validation, the foreground child.

What the rendered configuration does:
- DHCP on the access-point subnet only (``dhcp-range`` matches no other interface; LAN interfaces
  are ``no-dhcp-interface``), authoritative, short leases, a leases file the UI reads.
- The NEP portal's domains answer with the appliance's address. ``address=`` covers every name in
  the domain (www.nepviewer.net, nepviewer.net, api.nepviewer.net ...); since dnsmasq 2.86 it only
  answers A, so ``local=`` keeps AAAA and every other type local instead of forwarding them.
  So does the genuine Enecsys gateway's server, ``gw.enecsys.net`` (:mod:`appliance.gateway`),
  whether or not ``[gateway]`` is on: its real server is gone since 2015.
- Other names go to the LAN's resolvers (``server=``). With none, ``no-resolv`` and no server make
  dnsmasq answer REFUSED at once: an inverter never waits for a timeout. The service keeps them in
  a servers file of their own (``servers-file=``, :func:`render_servers`), which dnsmasq reads
  again on SIGHUP: when the LAN's resolvers change, dnsmasq keeps running, with its leases, its
  sockets and the inverters' DHCP, instead of being restarted. It reads that file after dropping
  its privileges (as ``nobody``), at start and on SIGHUP, so the file is world-readable, in a
  directory of its own (``/run/solargw-dns``: ``/run/solargw`` is the services' group's only).
- ``bind-dynamic``: listen on the access point even when it appears after dnsmasq starts.
  ``except-interface=lo``: ``interface=`` would add loopback too; the appliance's own lookups must
  not see the override, and a stub resolver on 127.0.0.x must not clash with us.
- LAN DNS mode also listens on the LAN interfaces; there the portal names answer with the address
  of the interface the query came in on (``interface-name`` + ``localise-queries``).
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from appliance.net.addressing import AccessPointPlan, IPAddress
from appliance.net.child import Child
from appliance.protocols import enecsys_gateway

log = logging.getLogger(__name__)

PORTAL_DOMAINS = ("nepviewer.net", "nepviewer.com")
"""Domains answered with the appliance's address. The inverters post to www.nepviewer.net; the
portal and its app use user.nepviewer.com, nep.nepviewer.com and api.nepviewer.net."""
GATEWAY_SERVERS = (enecsys_gateway.SERVER_NAME,)
"""The Enecsys gateway's upload server (only this name: the rest of enecsys.net is not ours)."""
PORTAL_HOSTS = ("www.nepviewer.net", "nepviewer.net", *GATEWAY_SERVERS)
"""Names answered per interface in LAN DNS mode (``interface-name`` takes exact names only)."""
LEASE_TIME = "1h"


class DnsmasqConfigError(ValueError):
    """``dnsmasq --test`` refused a configuration."""


def render(
    plan: AccessPointPlan,
    *,
    upstreams: Sequence[IPAddress],
    leases: Path,
    pid_file: Path,
    lan_interfaces: Sequence[str] = (),
    servers_file: Path | None = None,
) -> str:
    """The dnsmasq configuration text for ``plan``: the ``upstreams`` in it, or, given
    ``servers_file``, in that file (:func:`render_servers`; the service's way)."""
    ap, ip = plan.interface, plan.ip
    lines = [
        "# Rendered by solargw (solargw net render dnsmasq); edits are overwritten.",
        "port=53",
        "bind-dynamic",
        f"interface={ap}",
        "except-interface=lo",
        "no-hosts",
        "domain-needed",
        "bogus-priv",
        "no-resolv",
        "no-poll",
        "log-facility=-",
        f"pid-file={pid_file}",
        "",
        "# The NEP portal and the Enecsys gateway's server are the appliance.",
        f"address=/{'/'.join(PORTAL_DOMAINS + GATEWAY_SERVERS)}/{ip}",
        f"local=/{'/'.join(PORTAL_DOMAINS + GATEWAY_SERVERS)}/",
    ]
    if plan.lan_dns_mode and lan_interfaces:
        lines += ["", "# LAN DNS mode: answer on the LAN too, with the LAN-side address.", "localise-queries"]
        for lan in lan_interfaces:
            lines += [f"interface={lan}", f"no-dhcp-interface={lan}"]
        for host in PORTAL_HOSTS:
            lines += [f"interface-name={host},{name}/4" for name in (ap, *lan_interfaces)]
    lines += ["", "# Every other name."]
    if servers_file is not None:
        lines.append(f"servers-file={servers_file}")
    else:
        lines += render_servers(upstreams).splitlines()
    lines += [
        "",
        "# DHCP for the inverters.",
        f"dhcp-range={plan.dhcp_start},{plan.dhcp_end},{plan.network.netmask},{LEASE_TIME}",
        "dhcp-authoritative",
        f"dhcp-leasefile={leases}",
        f"dhcp-option=option:dns-server,{ip}",
        "",
    ]
    return "\n".join(lines)


def render_servers(upstreams: Sequence[IPAddress]) -> str:
    """Where every other name goes: a servers file (or the lines of the configuration)."""
    if not upstreams:
        return "# no upstream resolver: other names are refused at once\n"
    return "".join(f"server={server}\n" for server in upstreams)


def validate(conf: Path, binary: str = "dnsmasq") -> None:
    """Run ``dnsmasq --test`` on ``conf``; raise ``DnsmasqConfigError`` with dnsmasq's own words."""
    try:
        result = subprocess.run(
            [binary, "--test", f"--conf-file={conf}"],
            capture_output=True, text=True, timeout=20, check=False,
        )
    except FileNotFoundError:
        raise DnsmasqConfigError(f"{binary} is not installed") from None
    except subprocess.TimeoutExpired:
        raise DnsmasqConfigError(f"{binary} --test did not finish") from None
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise DnsmasqConfigError(message[-1] if message else f"dnsmasq --test exit {result.returncode}")


class DnsmasqProcess(Child):
    """dnsmasq in the foreground as our child; its log lines (``log-facility=-``) come back
    through the pipe."""

    def __init__(self, conf: Path, binary: str = "dnsmasq") -> None:
        super().__init__("dnsmasq", [binary, "--keep-in-foreground", f"--conf-file={conf}"])
        self.conf = conf
        self.binary = binary

    def reread_servers(self) -> bool:
        """SIGHUP: dnsmasq reads its servers file again (and clears its cache); False if it is not running."""
        if not self.running():
            return False
        self.process.send_signal(signal.SIGHUP)
        return True

    def stop(self, timeout: float = 5.0) -> list[str]:
        last = super().stop(timeout)
        for line in last:
            log.info("dnsmasq: %s", line)
        return last


def listening(address: IPAddress, port: int = 53, table: Path = Path("/proc/net/udp")) -> bool:
    """Whether a UDP socket of this network namespace is bound to ``address:port``.

    The kernel prints each IPv4 socket's address as one 32-bit number in the host's byte order
    (``01002A0A:0035`` for 10.42.0.1:53 on a little-endian Pi), hence the native ``=I``.
    """
    wanted = f"{struct.unpack('=I', socket.inet_aton(str(address)))[0]:08X}:{port:04X}"
    try:
        rows = table.read_text().splitlines()[1:]
    except OSError:
        return True  # cannot tell: never restart on a guess
    return any(row.split()[1] == wanted for row in rows if len(row.split()) > 1)


def reap_stale(pid_file: Path, conf: Path) -> None:
    """Stop a dnsmasq left behind by an earlier run of ours (it would hold port 53)."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return
    if f"--conf-file={conf}".encode() not in cmdline:
        return
    log.warning("stopping a dnsmasq left over from an earlier run (pid %d)", pid)
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if _gone(pid):
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _gone(pid: int) -> bool:
    """No such process, or only its zombie is left."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")
