"""The Enecsys Zigbee service (``solargw zigbee``): keeps the coordinator stick connected, the
network right and permit-join open.

- The network is the one the inverters insist on: PAN id 0x02AA, the configured channel and
  extended PAN id, stack profile 0. It is (re)formed from the settings when the stick has no
  network or a different one (never restored from zigpy's backups: an old backup would bring
  back an old network), and STACK_PROFILE (NV 0x002A) is checked at every start, written as 0
  and the stick reset when needed (forming rewrites it to 2).
- Permit-join stays open for ever: zigpy allows at most 254 s, so it is renewed well before.
- Frames go to :mod:`appliance.zigbee.frames` through :mod:`appliance.zigbee.application`
  (zigpy-znp's application class for this network).
- Once the network is up, the stick is checked as ``solargw firmware verify`` checks it (same
  code, on the service's own connection); what is wrong goes to the log and the status.
- The link to the stick may die (unplugged, TCP link lost): the service logs it and reconnects
  with backoff, and with no stick at all it keeps running and retrying.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import time
from pathlib import Path
from typing import Any

import zigpy.exceptions
import zigpy.types as zt
import zigpy_znp.types as t
from zigpy_znp.exceptions import CommandNotRecognized
from zigpy_znp.types.nvids import OsalNvIds

from appliance.firmware import stick
from appliance.pipeline import Pipeline
from appliance.protocols import enecsys
from appliance.runtime import PublisherHolder, ServiceError, SettingsFollower, StatusReporter
from appliance.settings import Settings
from appliance.store import Store, StoreError
from appliance.zigbee import port
from appliance.zigbee.application import EnecsysApplication, zigpy_config
from appliance.zigbee.frames import EnecsysFrames, JoinWatch
from appliance.zigbee.telemetry import TelemetryFile

log = logging.getLogger(__name__)

PERMIT_SECONDS = 254  # zigpy's maximum
STATUS_HEARTBEAT_SECONDS = 60.0
"""An unchanged status is still rewritten this often, so its timestamp shows the service is alive."""
SETTINGS_POLL_SECONDS = 2.0


class ZigbeeService:
    """Keeps the stick connected, the network right and permit-join open; reports its state."""

    def __init__(self, settings: Settings, store: Store, publisher=None, *,
                 permit_renew_seconds: float = 180.0, join_watch_seconds: float = 60.0,
                 status_seconds: float = 5.0, max_backoff: float = 60.0, by_id: Path = port.BY_ID):
        self.settings = settings
        self.store = store
        self.publisher = publisher
        """Any ``Publisher`` (the runtime's ``PublisherHolder`` in the service), or None."""
        self.pipeline = Pipeline(store, publisher, limits=lambda: self.settings.data)
        self.reporter = StatusReporter("zigbee", store, heartbeat=STATUS_HEARTBEAT_SECONDS,
                                       publish=self._publish_state if publisher is not None else None)
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self.joins = JoinWatch(join_watch_seconds)
        self.frames = EnecsysFrames(store, self.pipeline, self.executor, _telemetry(settings), self.joins)
        self.permit_renew_seconds = permit_renew_seconds
        self.max_backoff = max_backoff
        self.status_seconds = status_seconds
        self.by_id = by_id
        self.database = settings.data_dir / "zigbee.db"
        self.app: EnecsysApplication | None = None
        self._lost = asyncio.Event()
        self._stop = asyncio.Event()
        self._restart = asyncio.Event()
        self.status: dict[str, Any] = {"state": "starting", "connected": False, "device": settings.zigbee.device,
                                       "firmware": None, "channel": None, "pan_id": None, "extended_pan_id": None,
                                       "joined_inverters": [], "last_error": None, "firmware_warning": None,
                                       "stick_problems": [],
                                       "handshakes": 0, "reconnects": 0}

    # --- status -------------------------------------------------------------------------

    def _set_status(self, **changes: Any) -> None:
        self.status.update(changes)
        now = time.monotonic()
        self.status["joined_inverters"] = sorted(
            serial for serial, seen in self.frames.inverters.items() if now - seen < 3 * 3600)
        self.status["handshakes"] = self.frames.handshakes
        self.reporter.report(self.status)

    def _publish_state(self, status: dict[str, Any]) -> None:
        self.publisher.publish_status({"zigbee": status.get("state")})

    # --- settings -----------------------------------------------------------------------

    def apply_settings(self, new: Settings) -> None:
        """Use ``new`` from now on. A changed radio (device, channel, PAN ids) ends the session:
        ``run`` then connects again with it, re-forming the network if needed."""
        old, self.settings = self.settings, new
        if old.zigbee.telemetry_json != new.zigbee.telemetry_json:
            self.frames.telemetry = _telemetry(new)
        if _radio(old) != _radio(new):
            log.info("the Zigbee radio settings changed: connecting again with them")
            self._restart.set()

    # --- main loop ----------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        backoff = 1.0
        try:
            while not self._stop.is_set():
                path = port.resolve(self.settings.zigbee.device, self.by_id)
                if path is None:
                    if self.status["state"] != "no_stick":  # said once, not every minute all year
                        log.warning("no Zigbee coordinator stick found under %s; the service keeps looking",
                                    self.by_id)
                    self._set_status(state="no_stick", connected=False,
                                     last_error="no Zigbee coordinator stick found under /dev/serial/by-id")
                else:
                    try:
                        await self._session(path)
                        backoff = 1.0
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # every failure of the link or stick ends up here
                        message = _describe(exc)
                        log.error("Zigbee coordinator %s: %s; retrying in %.0f s", path, message, backoff)
                        self._set_status(state="error", connected=False, last_error=message)
                if self._stop.is_set():
                    break
                # Stopping or new radio settings cut the pause short.
                await _first_of((self._stop, self._restart), backoff)
                self._restart.clear()
                backoff = min(backoff * 2, self.max_backoff)
                self.status["reconnects"] += 1
        finally:
            self._set_status(state="stopped", connected=False)
            self.executor.shutdown(wait=True)

    async def _session(self, path: str) -> None:
        self._lost.clear()
        self._restart.clear()
        self._set_status(state="connecting", device=path)
        app = EnecsysApplication(zigpy_config(self.settings, path, self.database), frames=self.frames,
                                 joins=self.joins, on_connection_lost=self._connection_lost)
        self.app = app
        try:
            await app._load_db()
            await app.connect()
            await self._prepare_network(app)
            await app.initialize(auto_form=False)
            await app.permit(PERMIT_SECONDS)
            self._describe_network(app)
            await self._check_stick(app, path)
            await self._watch(app)
        finally:
            self.app = None
            await app.shutdown()

    def _connection_lost(self, exc: Exception | None) -> None:
        log.warning("lost the link to the Zigbee coordinator: %s", exc or "closed")
        self._lost.set()

    async def _prepare_network(self, app: EnecsysApplication) -> None:
        """Form the Enecsys network if the stick has none or another, then make sure of stack profile 0."""
        z = self.settings.zigbee
        wanted = (z.pan_id, z.channel, zt.ExtendedPanId.convert(z.extended_pan_id))
        try:
            await app.load_network_info(load_devices=False)
            info = app.state.network_info
            current = (info.pan_id, info.channel, info.extended_pan_id)
        except zigpy.exceptions.NetworkNotFormed:
            current = None
        if current != wanted:
            if current is None:
                log.info("the stick has no network: forming PAN 0x%04X on channel %d", z.pan_id, z.channel)
            else:
                log.warning("the stick runs PAN 0x%04X on channel %d (extended %s); re-forming PAN 0x%04X on "
                            "channel %d for the inverters", current[0], current[1], current[2], z.pan_id, z.channel)
            await app.form_network()
        znp = app._znp  # zigpy-znp has no public NV API on the application; its ZNP object is the one way
        profile = await znp.nvram.osal_read(OsalNvIds.STACK_PROFILE, item_type=t.uint8_t)
        if profile != enecsys.STACK_PROFILE:
            log.info("setting stack profile %d (was %d) and restarting the stick", enecsys.STACK_PROFILE, profile)
            await znp.nvram.osal_write(OsalNvIds.STACK_PROFILE, t.uint8_t(enecsys.STACK_PROFILE))
            await znp.reset()
            profile = await znp.nvram.osal_read(OsalNvIds.STACK_PROFILE, item_type=t.uint8_t)
            if profile != enecsys.STACK_PROFILE:
                raise RuntimeError(f"the stick kept stack profile {profile} after writing {enecsys.STACK_PROFILE}")

    def _describe_network(self, app: EnecsysApplication) -> None:
        info, node = app.state.network_info, app.state.node_info
        build = ((info.metadata or {}).get("zstack") or {}).get("CodeRevision") or 0
        log.info("Zigbee network up: %s, PAN 0x%04X, channel %d, extended PAN %s, stack profile %d; "
                 "permit-join open. Waiting for inverters (they join when their panels produce).",
                 node.version, info.pan_id, info.channel, info.extended_pan_id, enecsys.STACK_PROFILE)
        self._set_status(state="running", connected=True, firmware=node.version, firmware_build=build,
                         channel=int(info.channel), pan_id=f"0x{info.pan_id:04X}",
                         extended_pan_id=str(info.extended_pan_id), coordinator_ieee=str(node.ieee),
                         last_error=None)

    async def _check_stick(self, app: EnecsysApplication, path: str) -> None:
        """What ``solargw firmware verify`` would say about the stick, from the running service."""
        try:
            report = await stick.inspect(app._znp, device=path)  # zigpy-znp's ZNP: see above
        except (zigpy.exceptions.ZigbeeException, CommandNotRecognized, TimeoutError, ValueError) as exc:
            log.warning("could not check the coordinator: %s", _describe(exc))
            return
        problems = report.problems(self.settings.zigbee.pan_id)
        for problem in problems:
            log.error("coordinator: %s", problem)
        self._set_status(stick_problems=problems)

    async def _watch(self, app: EnecsysApplication) -> None:
        """Renew permit-join before it lapses and refresh the status, until the link dies, the radio
        settings change or we stop."""
        last_permit = time.monotonic()
        tick = min(self.status_seconds, self.permit_renew_seconds)
        ends = (self._lost, self._stop, self._restart)
        while not any(event.is_set() for event in ends):
            if await _first_of(ends, tick):
                break
            if time.monotonic() - last_permit >= self.permit_renew_seconds:
                await app.permit(PERMIT_SECONDS)
                last_permit = time.monotonic()
            self._check_joins(app)
            self._set_status()
        if self._lost.is_set():
            raise ConnectionError("the link to the coordinator died")

    def _check_joins(self, app: EnecsysApplication) -> None:
        for ieee in self.joins.expire():
            log.warning("device %016x joined the trust center but never sent the Enecsys handshake", ieee)
        if self.joins.firmware_suspect and not self.status.get("firmware_warning"):
            warning = (f"inverters join the trust center but never start the handshake: the stick's firmware "
                       f"({self.status.get('firmware')}) is probably not built with the Enecsys trust-center link "
                       "key ENCSYS-SOLAR-NET (see firmware/ in the project)")
            log.error(warning)
            self._set_status(firmware_warning=warning)


async def _first_of(events: tuple[asyncio.Event, ...], timeout: float) -> bool:
    """Wait until one of ``events`` is set (True) or ``timeout`` seconds pass (False)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return any(event.is_set() for event in events)


def _telemetry(settings: Settings) -> TelemetryFile | None:
    return TelemetryFile(settings.zigbee.telemetry_json) if settings.zigbee.telemetry_json else None


def _radio(settings: Settings) -> tuple:
    z = settings.zigbee
    return (z.device, z.channel, z.pan_id, z.extended_pan_id)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (ConnectionError, OSError)):
        return f"cannot talk to the stick ({text})"
    if isinstance(exc, TimeoutError):
        return "the stick did not answer in time"
    return text


def serve(settings_path: Path, device_override: str | None = None) -> int:
    """``solargw zigbee``: load the settings, open the store, then run until SIGTERM/SIGINT while
    following the settings file (polled, or at once on SIGHUP): a new ``[mqtt]`` swaps the
    publisher, new radio settings reconnect, ``enabled = false`` stops the service."""

    def adjust(settings: Settings) -> Settings:
        if device_override:
            settings.zigbee.device = device_override
        return settings

    follower = SettingsFollower(settings_path, adjust=adjust, recover=True)  # a broken file: the last good one
    if not follower.settings.zigbee.enabled:
        log.info("the Zigbee service is disabled in the settings ([zigbee] enabled = false)")
        return 0
    try:
        store = Store.from_settings(follower.settings)
    except StoreError as exc:
        raise ServiceError(str(exc)) from None
    try:
        asyncio.run(_run(follower, store))
    finally:
        store.close()
    return 0


async def _run(follower: SettingsFollower, store: Store) -> None:
    from appliance.mqtt import make_publisher

    publisher = PublisherHolder(lambda settings: make_publisher(settings, service="zigbee", store=store),
                                follower.settings)
    service = ZigbeeService(follower.settings, store, publisher)

    def changed(_old: Settings, new: Settings) -> None:
        if not new.zigbee.enabled:
            log.info("the Zigbee service was disabled in the settings: stopping")
            service.stop()
            return
        if publisher.update(new):
            service.reporter.force()  # the new broker hears the state at the next tick
        service.apply_settings(new)

    def reload() -> None:
        follower.request_reload()
        follower.check()

    follower.on_change = changed
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, service.stop)
    loop.add_signal_handler(signal.SIGHUP, reload)

    async def follow() -> None:
        while True:
            await asyncio.sleep(SETTINGS_POLL_SECONDS)
            follower.check()

    following = asyncio.create_task(follow(), name="settings-follower")
    try:
        await service.run()
    finally:
        following.cancel()
        publisher.close()
