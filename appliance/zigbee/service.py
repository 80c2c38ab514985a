"""The Enecsys Zigbee service (``solargw zigbee``): zigpy-znp drives the coordinator stick.

- The network is the one the inverters insist on: PAN id 0x02AA, the configured channel and
  extended PAN id, stack profile 0. It is (re)formed from the settings when the stick has no
  network or a different one (never restored from zigpy's backups: an old backup would bring
  back an old network), and STACK_PROFILE (NV 0x002A) is checked at every start, written as 0
  and the stick reset when needed (forming rewrites it to 2).
- Permit-join stays open for ever: zigpy allows at most 254 s, so it is renewed well before.
- Endpoint 1 is registered with the Enecsys profile 0xC00F (instead of zigpy's ZHA endpoint):
  Z-Stack sends with the source endpoint's profile, so replies go out as 0xC00F like the genuine
  gateway's, and matching frames are delivered even by builds that drop foreign profiles.
- Enecsys frames bypass zigpy's device model: ``packet_received`` takes cluster 0x0057 frames
  starting with 0x57 (zigpy-znp reports the local endpoint's profile, not the frame's, so the
  profile is no criterion), answers handshake requests at once and hands reports to the pipeline.
  Enecsys inverters are not Zigbee HA devices, so they are not interviewed; frames from other
  devices are counted and dropped.
- Once the network is up, the stick is checked as ``solargw firmware verify`` checks it (same
  code, on the service's own connection); what is wrong goes to the log and the status.
- The link to the stick may die (unplugged, TCP link lost): the service logs it and reconnects
  with backoff, and with no stick at all it keeps running and retrying.
- Store writes happen on one worker thread so a slow disk never delays a handshake reply.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import zigpy.exceptions
import zigpy.profiles.zgp
import zigpy.zgp.types
import zigpy.types as zt
import zigpy.zdo.types as zdo_t
import zigpy_znp.types as t
from zigpy_znp.exceptions import CommandNotRecognized
from zigpy_znp.types.nvids import OsalNvIds
from zigpy.zcl.clusters.general import GreenPowerProxy
from zigpy_znp.zigbee.application import ControllerApplication

from appliance.firmware import stick as stick_check
from appliance.pipeline import Pipeline
from appliance.protocols import enecsys
from appliance.reading import FrameError
from appliance.settings import Settings, require_valid
from appliance.store import Store
from appliance.zigbee import device as stick
from appliance.zigbee.telemetry import TelemetryFile

log = logging.getLogger(__name__)

ENECSYS_CLUSTER = enecsys.CLUSTER_ID
ENECSYS_PROFILE = enecsys.PROFILE_ID
ENECSYS_ENDPOINT = enecsys.ENDPOINT
STACK_PROFILE_ENECSYS = stick_check.ENECSYS_STACK_PROFILE
PERMIT_SECONDS = 254  # zigpy's maximum
FAMILY = "enecsys"
STATUS_HEARTBEAT_SECONDS = 60.0
"""An unchanged status is still rewritten this often, so its timestamp shows the service is alive."""


def check_settings(settings: Settings) -> None:
    """Raise ValueError (a SettingsError) naming the ``[zigbee]`` key that zigpy would refuse."""
    require_valid(settings, sections=("zigbee",))


def zigpy_config(settings: Settings, device_path: str, database: Path | None) -> dict[str, Any]:
    z = settings.zigbee
    return {
        "device": {"path": device_path},
        "database_path": str(database) if database else None,
        "network": {"pan_id": z.pan_id, "channel": z.channel, "channels": [z.channel],
                    "extended_pan_id": z.extended_pan_id},
        # Nothing on this network is a Zigbee HA device: no OTA, no topology scans, and the
        # network comes from the settings rather than from backups.
        "ota": {"enabled": False},
        "topology_scan_enabled": False,
        "backup_enabled": False,
        "network_validate_settings": False,
    }


@dataclass
class JoinWatch:
    """Trust-center joins waiting for their handshake request (the firmware diagnosis)."""

    timeout: float
    pending: dict[int, float] = field(default_factory=dict)
    joins_without_handshake: int = 0
    handshakes: int = 0

    def joined(self, ieee: int) -> None:
        self.pending.setdefault(ieee, time.monotonic())

    def handshake(self, ieee: int) -> None:
        self.pending.pop(ieee, None)
        self.handshakes += 1

    def expire(self) -> list[int]:
        now = time.monotonic()
        expired = [ieee for ieee, at in self.pending.items() if now - at > self.timeout]
        for ieee in expired:
            del self.pending[ieee]
        self.joins_without_handshake += len(expired)
        return expired

    @property
    def firmware_suspect(self) -> bool:
        return self.joins_without_handshake >= 2 and self.handshakes == 0


class EnecsysFrames:
    """What to do with one frame on cluster 0x0057: reply, record, reject or ignore.

    ``send_reply(nwk, frame)`` is a coroutine that sends the handshake reply.
    """

    def __init__(self, store: Store, pipeline: Pipeline, executor: concurrent.futures.Executor,
                 telemetry: TelemetryFile | None = None):
        self.store = store
        self.pipeline = pipeline
        self.executor = executor
        self.telemetry = telemetry
        self.models: dict[str, str] = {}
        self.inverters: dict[str, float] = {}  # serial -> last handshake or report (monotonic)
        self.handshakes = 0
        self.handshake_reply_seconds: collections.deque[float] = collections.deque(maxlen=1000)
        """The latest handshakes' service times (frame in, reply acknowledged by the stick)."""

    def _io(self, fn: Callable, *args, **kwargs) -> asyncio.Future:
        """Run store work on the store thread (in order); after shutdown there is nothing left to do."""
        loop = asyncio.get_running_loop()
        try:
            return loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))
        except RuntimeError:  # the executor is shut down: the service is stopping
            future = loop.create_future()
            future.set_result(None)
            return future

    def ignore(self, why: str) -> None:
        log.debug("ignored a frame: %s", why)
        self._io(self.store.count, "frames_ignored", FAMILY)

    async def frame(self, nwk: int, payload: bytes, gateway_ieee: bytes,
                    send_reply: Callable[[int, bytes], Any], received_at: float | None = None) -> None:
        started = time.monotonic()
        received_at = time.time() if received_at is None else received_at
        source = f"zigbee:0x{nwk:04x}"
        kind = enecsys.classify(payload)
        if kind == enecsys.FrameKind.FOREIGN:
            self.ignore(f"not an Enecsys frame from 0x{nwk:04x}")
            return
        if kind == enecsys.FrameKind.MALFORMED:
            self._io(self.pipeline.reject, payload, FAMILY, source, "malformed Enecsys frame", received_at)
            return
        if kind == enecsys.FrameKind.REPORT:
            await self._report(payload, source, received_at)
            return
        try:
            handshake = enecsys.decode_handshake(payload)
        except FrameError as exc:
            self._io(self.pipeline.reject, payload, FAMILY, source, str(exc), received_at)
            return
        if not handshake.checksum_ok:
            self._io(self.pipeline.reject, payload, FAMILY, source, f"handshake {handshake.step}: checksum mismatch",
                     received_at)
            return
        if kind == enecsys.FrameKind.HANDSHAKE_REQUEST:
            reply = enecsys.handshake_reply(gateway_ieee)
            await send_reply(nwk, reply)
            self.handshake_reply_seconds.append(time.monotonic() - started)
            self.handshakes += 1
            self.inverters[handshake.serial] = time.monotonic()
            log.info("inverter %s (0x%04x) asked to join: handshake reply sent in %.0f ms", handshake.serial, nwk,
                     1000 * (time.monotonic() - started))
            self._io(self.store.count, "handshakes", FAMILY)
        else:
            log.debug("inverter %s: handshake %s", handshake.serial, handshake.step)

    async def _report(self, payload: bytes, source: str, received_at: float) -> None:
        serial = enecsys.serial_text(enecsys.ieee_from_frame(payload))
        try:
            reading = enecsys.decode(payload, received_at=received_at, model=self.models.get(serial, ""))
        except FrameError as exc:
            self._io(self.pipeline.reject, payload, FAMILY, source, str(exc), received_at)
            return
        if reading.checksum_ok:
            self.inverters[serial] = time.monotonic()
            if reading.kind == "info" and reading.model:
                self.models[serial] = reading.model
        try:
            await self._io(self._record, reading, source)
        except Exception:  # a storage failure loses this reading, never the service
            log.exception("recording a reading of %s failed", serial)

    def _record(self, reading, source: str) -> None:
        recorded = self.pipeline.handle(reading, source=source)
        if recorded is not None and self.telemetry is not None:
            self.telemetry.update(reading)


class EnecsysApplication(ControllerApplication):
    """zigpy-znp's application with Enecsys frames taken out before zigpy's device model."""

    def __init__(self, config: dict, *, frames: EnecsysFrames, joins: JoinWatch,
                 on_connection_lost: Callable[[Exception | None], None]):
        super().__init__(config)
        self.frames = frames
        self.joins = joins
        self._on_connection_lost = on_connection_lost

    async def register_endpoints(self) -> None:
        """Endpoint 1 speaks the Enecsys profile: Z-Stack sends with the source endpoint's profile
        (so replies go out as 0xC00F, like the genuine gateway's) and delivers frames whose profile
        matches it even on builds that drop the others. Green Power keeps its endpoint for zigpy."""
        await self.add_endpoint(zdo_t.SimpleDescriptor(
            endpoint=ENECSYS_ENDPOINT, profile=ENECSYS_PROFILE, device_type=0x0000, device_version=0,
            input_clusters=[ENECSYS_CLUSTER], output_clusters=[ENECSYS_CLUSTER]))
        await self.add_endpoint(zdo_t.SimpleDescriptor(
            endpoint=zigpy.zgp.types.GP_ENDPOINT, profile=zigpy.profiles.zgp.PROFILE_ID,
            device_type=zigpy.profiles.zgp.DeviceType.COMBO_BASIC, device_version=0,
            input_clusters=[GreenPowerProxy.cluster_id], output_clusters=[GreenPowerProxy.cluster_id]))

    def packet_received(self, packet: zt.ZigbeePacket) -> None:
        if packet.dst_ep == 0 or packet.src_ep == 0:
            self._zdo_received(packet)
            return
        data = packet.data.serialize()
        if packet.cluster_id != ENECSYS_CLUSTER or data[:1] != b"\x57":
            self.frames.ignore(f"cluster 0x{packet.cluster_id:04x} from {packet.src}")
            return
        if packet.src.addr_mode != zt.AddrMode.NWK:
            self.frames.ignore(f"Enecsys-looking frame from {packet.src}")
            return
        if enecsys.classify(data) == enecsys.FrameKind.HANDSHAKE_REQUEST:
            self.joins.handshake(enecsys.ieee_from_frame(data))
        self.create_task(self.frames.frame(packet.src.address, data, self.gateway_ieee, self.send_enecsys),
                         "enecsys-frame")

    def _zdo_received(self, packet: zt.ZigbeePacket) -> None:
        """ZDO from known devices (the coordinator's own interview) goes to zigpy; from the
        inverters only their announce matters, and zigpy would otherwise hunt for the unknown sender."""
        try:
            self.get_device_with_address(packet.src)
        except (KeyError, ValueError):
            data = packet.data.serialize()
            if packet.cluster_id == zdo_t.ZDOCmd.Device_annce and len(data) >= 11:
                nwk = zt.NWK.deserialize(data[1:3])[0]
                ieee = zt.EUI64.deserialize(data[3:11])[0]
                self.handle_join(nwk=nwk, ieee=ieee, parent_nwk=None)
            return
        super().packet_received(packet)

    @property
    def gateway_ieee(self) -> bytes:
        return bytes(self.state.node_info.ieee.serialize())

    async def send_enecsys(self, nwk: int, data: bytes) -> None:
        """APS unicast, profile 0xC00F, cluster 0x0057, endpoint 1 -> 1, APS ACK requested."""
        try:
            await self.send_packet(zt.ZigbeePacket(
                src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=self.state.node_info.nwk),
                src_ep=ENECSYS_ENDPOINT,
                dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=nwk),
                dst_ep=ENECSYS_ENDPOINT,
                tsn=self.get_sequence(),
                profile_id=ENECSYS_PROFILE,
                cluster_id=ENECSYS_CLUSTER,
                data=zt.SerializableBytes(data),
                tx_options=zt.TransmitOptions.ACK,
                radius=0,
            ))
        except (zigpy.exceptions.DeliveryError, TimeoutError) as exc:
            log.warning("handshake reply to 0x%04x not delivered: %s", nwk, exc)

    def handle_join(self, nwk, ieee, parent_nwk, *, handle_rejoin: bool = True) -> None:
        value = int.from_bytes(bytes(zt.EUI64(ieee).serialize()), "little")
        if enecsys.ieee_to_serial(value) is not None:
            log.info("inverter %s joined (0x%04x)", enecsys.serial_text(value), nwk)
            return  # not a Zigbee HA device: no interview
        log.info("a non-Enecsys device %s joined (0x%04x): ignored", zt.EUI64(ieee), nwk)

    def on_zdo_tc_device_join(self, msg) -> None:
        ieee = int.from_bytes(bytes(msg.SrcIEEE.serialize()), "little")
        if enecsys.ieee_to_serial(ieee) is not None:
            self.joins.joined(ieee)
        super().on_zdo_tc_device_join(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._on_connection_lost(exc)


class ZigbeeService:
    """Keeps the stick connected, the network right and permit-join open; reports its state."""

    def __init__(self, settings: Settings, store: Store, publisher=None, *,
                 permit_renew_seconds: float = 180.0, join_watch_seconds: float = 60.0,
                 status_seconds: float = 5.0, max_backoff: float = 60.0, by_id: Path = stick.BY_ID):
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.pipeline = Pipeline(store, publisher)
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self.frames = EnecsysFrames(store, self.pipeline, self.executor, _telemetry(settings))
        self.joins = JoinWatch(join_watch_seconds)
        self.permit_renew_seconds = permit_renew_seconds
        self.max_backoff = max_backoff
        self.status_seconds = status_seconds
        self.by_id = by_id
        self.database = settings.data_dir / "zigbee.db"
        self.app: EnecsysApplication | None = None
        self._last_status: dict[str, Any] = {}
        self._last_status_at = 0.0
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
        snapshot = dict(self.status)
        if snapshot == self._last_status and time.monotonic() - self._last_status_at < STATUS_HEARTBEAT_SECONDS:
            return
        self._last_status, self._last_status_at = snapshot, time.monotonic()
        try:
            self.store.set_status("zigbee", snapshot)
        except Exception:
            log.exception("cannot store the zigbee status")
        if self.publisher is not None:
            try:
                self.publisher.publish_status({"zigbee": snapshot.get("state")})
            except Exception:
                log.exception("cannot publish the zigbee status")

    # --- settings -----------------------------------------------------------------------

    def use_publisher(self, publisher) -> None:
        """Publish through ``publisher`` (None: no MQTT) from the next reading on."""
        self.publisher = self.pipeline.publisher = publisher
        self._last_status = {}  # the new broker hears the state at the next tick

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
                path = stick.resolve(self.settings.zigbee.device, self.by_id)
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
        if profile != STACK_PROFILE_ENECSYS:
            log.info("setting stack profile %d (was %d) and restarting the stick", STACK_PROFILE_ENECSYS, profile)
            await znp.nvram.osal_write(OsalNvIds.STACK_PROFILE, t.uint8_t(STACK_PROFILE_ENECSYS))
            await znp.reset()
            profile = await znp.nvram.osal_read(OsalNvIds.STACK_PROFILE, item_type=t.uint8_t)
            if profile != STACK_PROFILE_ENECSYS:
                raise RuntimeError(f"the stick kept stack profile {profile} after writing {STACK_PROFILE_ENECSYS}")

    def _describe_network(self, app: EnecsysApplication) -> None:
        info, node = app.state.network_info, app.state.node_info
        build = ((info.metadata or {}).get("zstack") or {}).get("CodeRevision") or 0
        log.info("Zigbee network up: %s, PAN 0x%04X, channel %d, extended PAN %s, stack profile %d; "
                 "permit-join open. Waiting for inverters (they join when their panels produce).",
                 node.version, info.pan_id, info.channel, info.extended_pan_id, STACK_PROFILE_ENECSYS)
        self._set_status(state="running", connected=True, firmware=node.version, firmware_build=build,
                         channel=int(info.channel), pan_id=f"0x{info.pan_id:04X}",
                         extended_pan_id=str(info.extended_pan_id), coordinator_ieee=str(node.ieee),
                         last_error=None)

    async def _check_stick(self, app: EnecsysApplication, path: str) -> None:
        """What ``solargw firmware verify`` would say about the stick, from the running service."""
        try:
            report = await stick_check.inspect(app._znp, device=path)  # zigpy-znp's ZNP: see above
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
