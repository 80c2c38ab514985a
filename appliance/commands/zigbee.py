"""``solargw zigbee``: the Enecsys Zigbee service (runs until stopped; systemd unit ``solargw-zigbee``)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from appliance.cli import CommandError, load_settings
from appliance.settings import Settings, apply_timezone

log = logging.getLogger(__name__)


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
    settings = load_settings(args.settings)
    if args.device:
        settings.zigbee.device = args.device
    if not settings.zigbee.enabled:
        log.info("the Zigbee service is disabled in the settings ([zigbee] enabled = false)")
        return 0
    apply_timezone(settings)
    return asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> int:
    from appliance.mqtt import make_publisher
    from appliance.store import Store, StoreError
    from appliance.zigbee.service import ZigbeeService, check_settings

    try:
        check_settings(settings)
    except ValueError as exc:
        raise CommandError(str(exc)) from None

    try:
        store = Store.from_settings(settings)
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    publisher = make_publisher(settings, service="zigbee", store=store)
    service = ZigbeeService(settings, store, publisher)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, service.stop)
    try:
        await service.run()
    finally:
        if publisher is not None:
            publisher.close()
        store.close()
    return 0
