"""``solargw demo``: the whole appliance on this PC, with simulated inverters (see :mod:`appliance.sim.demo`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from appliance.cli import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the web UI, MQTT, the Zigbee service and ten simulated inverters on this PC",
        description="Write a week of history, then start mosquitto, the emulated Zigbee coordinator with four "
                    "simulated Enecsys inverters, the Zigbee and web services, a simulated Enecsys gateway with "
                    "three inverters behind it and three simulated NEP inverters; print the URL and the "
                    "admin password; Ctrl-C stops everything.",
    )
    parser.add_argument("--listen", default="127.0.0.1", metavar="ADDRESS",
                        help="address the web UI listens on (default: %(default)s; 0.0.0.0 for the LAN)")
    parser.add_argument("--port", type=int, default=8080, help="web UI port; 0 or busy: any free port (default: %(default)s)")
    parser.add_argument("--dir", type=Path, default=None, help="keep settings, data and logs here (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="do not delete the temporary directory afterwards")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from appliance.sim import demo

    if not 0 <= args.port < 65536:
        raise CommandError(f"--port {args.port} is not a port number")
    try:
        return demo.run(host=args.listen, port=args.port, workdir=args.dir, keep=args.keep)
    except demo.DemoError as exc:
        raise CommandError(str(exc)) from None
