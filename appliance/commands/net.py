"""``solargw net``: the inverters' access point (dnsmasq, addresses, firewall) and its configs.

  solargw net run                                   the service (systemd unit solargw-net)
  solargw net render hostapd --output /run/solargw/hostapd.conf
  solargw net render {dnsmasq,nftables,wpa_supplicant} [--output PATH]
  solargw net clients                               leases and Wi-Fi stations as JSON
  solargw net enabled                               exit 0 if the access point is on (hostapd's ExecCondition)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from appliance import settings as settings_module
from appliance.atomic import write_atomic
from appliance.cli import CommandError, load_service_settings
from appliance.net.addressing import NetConfigError
from appliance.net.plan import CONFIGS, DNS_DIR, RUN_DIR, RuntimePaths, render_config, with_interface
from appliance.net.resolvers import RESOLV_CONF


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "net", help="the inverters' Wi-Fi access point: DHCP, DNS, firewall, configs",
        description="Run the access point's network service, render its daemons' configurations, "
        "or list the connected inverters.",
    )
    actions = parser.add_subparsers(dest="net_action", metavar="ACTION", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--settings", type=Path, default=None,
                         help="settings file (default: $SOLARGW_SETTINGS or /etc/solargw/solargw.toml)")
        sub.add_argument("--interface", default=None, help="access-point interface (overrides the settings)")
        sub.add_argument("--run-dir", "--dnsmasq-dir", dest="run_dir", type=Path, default=RUN_DIR,
                         help=f"where dnsmasq's runtime files go (default {RUN_DIR})")
        sub.add_argument("--dns-dir", type=Path, default=DNS_DIR,
                         help=f"where dnsmasq's servers file goes, readable by dnsmasq's own user (default {DNS_DIR})")
        sub.add_argument("--leases", type=Path, default=None,
                         help="dnsmasq leases file (default <data dir>/dnsmasq.leases)")
        sub.add_argument("--resolv-conf", type=Path, default=RESOLV_CONF,
                         help=f"where the LAN's resolvers are read (default {RESOLV_CONF})")

    run_parser = actions.add_parser("run", help="run the service (dnsmasq supervised, in the foreground)")
    common(run_parser)
    run_parser.add_argument("--no-firewall", action="store_true",
                            help="do not load the nftables isolation (development only)")
    run_parser.add_argument("--dnsmasq", default="dnsmasq", help="dnsmasq binary")
    run_parser.set_defaults(func=run_service)

    render_parser = actions.add_parser("render", help="print or write a rendered configuration")
    common(render_parser)
    render_parser.add_argument("config", choices=CONFIGS)
    render_parser.add_argument("--output", "-o", type=Path, default=None,
                               help="write here (atomically, mode 0600) instead of printing")
    render_parser.set_defaults(func=run_render)

    enabled_parser = actions.add_parser(
        "enabled", help="exit 0 if the access point is enabled in the settings, 1 if not",
        description="For systemd's ExecCondition= (the hostapd unit): exit 0 when [access_point] enabled "
        "is true, 1 when it is false; a broken settings file is answered from the last good settings "
        "(the problem on stderr), so the access point stays up.")
    enabled_parser.add_argument("--settings", type=Path, default=None,
                                help="settings file (default: $SOLARGW_SETTINGS or /etc/solargw/solargw.toml)")
    enabled_parser.set_defaults(func=run_enabled)

    clients_parser = actions.add_parser("clients", help="print the DHCP leases and Wi-Fi stations as JSON")
    common(clients_parser)
    clients_parser.set_defaults(func=run_clients)


def _settings(args: argparse.Namespace) -> settings_module.Settings:
    """The settings to render from: a broken file gives the last good settings (the problem in one
    line on stderr), so hostapd and the access point come up with what the inverters know."""
    return with_interface(load_service_settings(args.settings).settings, args.interface)


def _paths(args: argparse.Namespace) -> RuntimePaths:
    return RuntimePaths(run_dir=args.run_dir, leases=args.leases, resolv_conf=args.resolv_conf, dns_dir=args.dns_dir)


def run_render(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        text = render_config(args.config, settings, _paths(args))
    except NetConfigError as exc:
        raise CommandError(str(exc)) from None
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.output, text, 0o600)
    except OSError as exc:
        raise CommandError(f"cannot write {args.output}: {exc.strerror}") from None
    return 0


def run_clients(args: argparse.Namespace) -> int:
    settings = _settings(args)
    leases = _paths(args).leases_for(settings)
    try:
        from appliance.net import clients  # here: netlink (pyroute2) costs every command 60 ms

        result = clients.clients(leases, settings.access_point.interface)
    except OSError as exc:
        raise CommandError(f"cannot read the leases {leases}: {exc.strerror or exc}") from None
    print(json.dumps(result, indent=2))
    return 0


def run_enabled(args: argparse.Namespace) -> int:
    settings = load_service_settings(args.settings).settings
    if settings.access_point.enabled:
        return 0
    print("the access point is disabled ([access_point] enabled = false)")
    return 1


def run_service(args: argparse.Namespace) -> int:
    from appliance.net.service import serve
    from appliance.runtime import ServiceError

    try:
        return serve(Path(args.settings or settings_module.settings_path()), _paths(args), interface=args.interface,
                     dnsmasq_binary=args.dnsmasq, use_firewall=not args.no_firewall)
    except ServiceError as exc:
        raise CommandError(str(exc)) from None
