"""``solargw zigbee``: the Enecsys Zigbee service (runs until stopped; systemd unit ``solargw-zigbee``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from appliance.cli import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "zigbee", help="run the Enecsys Zigbee service",
        description="Drive the Zigbee coordinator stick (settings [zigbee] device: auto, a serial path or "
                    "socket://host:port), keep the Enecsys network open, answer the inverters' handshakes "
                    "and record their reports.")
    parser.add_argument("--settings", metavar="FILE", help="settings file (default: $SOLARGW_SETTINGS or "
                        "/etc/solargw/solargw.toml)")
    parser.add_argument("--device", help="override [zigbee] device for this run")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from appliance.runtime import ServiceError
    from appliance.settings import settings_path
    from appliance.zigbee.service import serve

    try:
        return serve(Path(args.settings) if args.settings else settings_path(), args.device)
    except ServiceError as exc:
        raise CommandError(str(exc)) from None
