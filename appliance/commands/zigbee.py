"""``solargw zigbee``: the Enecsys Zigbee service (runs until stopped; systemd unit ``solargw-zigbee``)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from appliance.cli import CommandError, load_service_settings
from appliance.settings import Settings, SettingsError, apply_timezone, file_fingerprint, load

log = logging.getLogger(__name__)
SETTINGS_POLL_SECONDS = 2.0


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
    settings = load_service_settings(args.settings).settings  # a broken file: the last good settings
    if args.device:
        settings.zigbee.device = args.device
    if not settings.zigbee.enabled:
        log.info("the Zigbee service is disabled in the settings ([zigbee] enabled = false)")
        return 0
    apply_timezone(settings)
    return asyncio.run(_serve(settings, args.device))


async def _serve(settings: Settings, device_override: str | None = None) -> int:
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
    reload = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, service.stop)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    follower = asyncio.create_task(_follow_settings(service, store, reload, device_override))
    try:
        await service.run()
    finally:
        follower.cancel()
        if service.publisher is not None:
            service.publisher.close()
        store.close()
    return 0


async def _follow_settings(service, store, reload: asyncio.Event, device_override: str | None) -> None:
    """Apply edits of the settings file (the web UI's Settings page rewrites it) while running:
    checked every SETTINGS_POLL_SECONDS, or at once on SIGHUP."""
    path = service.settings.path
    fingerprint = file_fingerprint(path)
    while True:
        try:
            await asyncio.wait_for(reload.wait(), SETTINGS_POLL_SECONDS)
        except TimeoutError:
            pass
        signalled, now = reload.is_set(), file_fingerprint(path)
        reload.clear()
        if not signalled and now == fingerprint:
            continue
        fingerprint = now
        try:
            await _apply_settings_file(service, store, path, device_override)
        except Exception:  # the service runs on with the settings it has
            log.exception("while applying %s", path)


async def _apply_settings_file(service, store, path, device_override: str | None) -> None:
    """A file that does not load or check keeps the current settings, and says why."""
    from appliance.mqtt import make_publisher
    from appliance.zigbee.service import check_settings

    try:
        new = load(path)
        if device_override:
            new.zigbee.device = device_override
        check_settings(new)
    except (SettingsError, ValueError) as exc:
        log.error("%s; keeping the settings in use", exc)
        return
    if not new.zigbee.enabled:
        log.info("the Zigbee service was disabled in the settings: stopping")
        service.stop()
        return
    apply_timezone(new)
    if new.mqtt != service.settings.mqtt:
        log.info("the MQTT settings changed: connecting to %s:%d", new.mqtt.host, new.mqtt.port)
        publisher = await asyncio.to_thread(make_publisher, new, "zigbee", store)
        previous = service.publisher
        service.use_publisher(publisher)
        if previous is not None:
            await asyncio.to_thread(previous.close)
    service.apply_settings(new)
