"""An emulated Z-Stack 3.x coordinator stick, reachable over TCP (``socket://host:port``).

It speaks the ZNP serial protocol (SOF 0xFE, length, cmd0/cmd1, data, XOR FCS) with
zigpy-znp's own frame and command types, well enough for zigpy-znp to connect, read the
firmware version and NV items, form a network (or resume a formed one), register
endpoints, permit joins, start, and exchange AF frames. Unknown synchronous requests get
``RPCError.CommandNotRecognized``, as on a real stick.

What it models on purpose, because the appliance depends on it:

- an NV store (legacy OSAL items and the 3.30+ extended tables) that persists across
  connections and soft resets; a reset with ``STARTUP_OPTION`` ClearConfig/ClearState
  restores factory NV (so STACK_PROFILE goes back to 2 when a network is re-formed);
- the stack profile, PAN id and channel *in effect* are the ones read at the last reset
  or formation (writing NV alone changes nothing until the stick restarts);
- a reset forgets the joined devices and closes permit-join (the simulated inverters then
  join again, handshake included), and the network is down until the host starts it:
  ``UTIL.GetDeviceInfo`` says InitializedNotStarted (Z-Stack's "hold"), then
  StartingAsCoordinator while forming, then StartedAsCoordinator;
- ``ZDO.ExtNwkInfo`` answers with the firmware's 24-byte layout (short address, device
  state, PAN id, parent, extended PAN id, parent IEEE, one channel byte): zigpy-znp 1.1.1's
  schema for it (no state byte, a 4-byte channel mask) does not match what sticks send;
- the trust-center link key is a build-time constant that no command can read or change;
- frames whose profile does not match the endpoint's are forwarded to the host (the
  behaviour of Koenkk's builds since 2021-07-08) unless ``forward_foreign_profiles`` is off.

Run it stand-alone with ``solargw simulate enecsys`` (``--inverters 0`` for the stick alone).
Devices "on the air" (see :mod:`appliance.sim.enecsys_inverters`) use :meth:`beacon`,
:meth:`associate`, :meth:`send_from` and :meth:`leave`; they receive the host's unicasts
through their ``deliver(cluster, profile, src_ep, dst_ep, data)`` method.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import zigpy.zdo.types as zdo_t
import zigpy_znp.commands as c
import zigpy_znp.const as const
import zigpy_znp.types as t
from zigpy_znp.exceptions import InvalidFrame
from zigpy_znp.frames import GeneralFrame, TransportFrame
from zigpy_znp.types.nvids import ExNvIds, NvSysIds, OsalNvIds

from appliance.protocols import enecsys

log = logging.getLogger(__name__)

ALIGN = True  # CC26x2/CC13x2 structs are padded (zigpy-znp detects this via UTIL.AssocFindDevice)
LEGACY = (NvSysIds.ZSTACK, ExNvIds.LEGACY)
DEFAULT_TC_LINK_KEY = b"ZigBeeAlliance09"
ENECSYS_TC_LINK_KEY = enecsys.TC_LINK_KEY
COORDINATOR_NWK = 0x0000

CAPABILITIES = (
    t.MTCapabilities.SYS | t.MTCapabilities.MAC | t.MTCapabilities.AF | t.MTCapabilities.ZDO
    | t.MTCapabilities.SAPI | t.MTCapabilities.UTIL | t.MTCapabilities.APP | t.MTCapabilities.GP
    | t.MTCapabilities.APP_CNF
)


@dataclass(frozen=True)
class FirmwareVersion:
    """What ``SYS.Version`` reports. The default is the known-good Enecsys build's base."""

    transport_rev: int = 2
    product_id: int = 1
    major: int = 2
    minor: int = 7
    maint: int = 1
    code_revision: int = 20220219

    def __str__(self) -> str:
        return f"Z-Stack 3.x.0 {self.code_revision} (MT {self.major}.{self.minor}.{self.maint})"


class RadioDevice(Protocol):
    """A simulated device on the air behind the coordinator."""

    ieee: int

    def deliver(self, cluster: int, profile: int, src_ep: int, dst_ep: int, data: bytes) -> None: ...


@dataclass(frozen=True)
class Beacon:
    """What a device scanning the channels learns about the running network."""

    pan_id: int
    channel: int
    extended_pan_id: bytes
    stack_profile: int
    permit_join: bool


@dataclass
class _Joined:
    device: RadioDevice
    nwk: int
    capabilities: int


@dataclass
class EmulatorEvent:
    name: str
    detail: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


def _eui64(value: int) -> t.EUI64:
    return t.EUI64(value.to_bytes(8, "little"))


class CoordinatorEmulator:
    """The emulated stick. ``await start()``, then point zigpy at :attr:`url`."""

    def __init__(
        self,
        *,
        ieee: int = 0x00124B0029ABCDEF,
        tc_link_key: bytes = ENECSYS_TC_LINK_KEY,
        firmware: FirmwareVersion | None = None,
        forward_foreign_profiles: bool = True,
        table_size: int = 16,
        formation_delay: float = 0.02,
    ):
        self.ieee = ieee
        self.tc_link_key = tc_link_key
        self.firmware = firmware or FirmwareVersion()
        self.forward_foreign_profiles = forward_foreign_profiles
        self.table_size = table_size
        self.formation_delay = formation_delay
        self.nv: dict[tuple[int, int, int], bytes] = {}
        self.events: list[EmulatorEvent] = []
        self.endpoints: dict[int, c.AF.Register.Req] = {}
        self.network_up = False
        self.device_state = t.DeviceState.InitializedNotStarted
        self.pan_id: int | None = None
        self.channel: int | None = None
        self.extended_pan_id: bytes | None = None
        self.stack_profile: int | None = None
        """The stack profile in effect (read from NV at the last reset)."""
        self._permit_until = 0.0
        self._primary_channels = t.Channels.ALL_CHANNELS
        self._joined: dict[int, _Joined] = {}  # by IEEE
        self._next_nwk = 0x1A2B
        self._server: asyncio.base_events.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._connections: set[asyncio.Task] = set()
        self._tasks: set[asyncio.Task] = set()
        self._factory_reset()
        self._boot()

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._server = await asyncio.start_server(self._serve, host, port)
        sock = self._server.sockets[0].getsockname()
        self.host, self.port = sock[0], sock[1]
        log.info("emulated Z-Stack coordinator listening on %s", self.url)
        return self.url

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_connections()
        for task in list(self._connections | self._tasks):
            task.cancel()
        await asyncio.gather(*self._connections, *self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def drop_connections(self) -> None:
        """Cut the host link (a dead serial/TCP link). The stick keeps its state."""
        if self._writer is not None:
            self._record("link_dropped")
            transport = self._writer.transport
            self._writer = None
            transport.abort()

    @property
    def host_connected(self) -> bool:
        return self._writer is not None

    # --- the air side, used by simulated devices --------------------------------------

    @property
    def permit_join(self) -> bool:
        return self.network_up and time.monotonic() < self._permit_until

    def beacon(self) -> Beacon | None:
        if not self.network_up:
            return None
        return Beacon(self.pan_id, self.channel, self.extended_pan_id, self.stack_profile, self.permit_join)

    def associate(self, device: RadioDevice, link_key: bytes, capabilities: int = 0x8E) -> int | None:
        """A device joins through the coordinator. Returns its NWK address, or None when
        the trust center's Transport-Key cannot be decrypted with ``link_key`` (the join
        fails after the TC device indication, as with a wrong firmware build)."""
        if not self.permit_join:
            return None
        nwk = self._allocate_nwk(device.ieee)
        self._record("tc_device_join", ieee=f"{device.ieee:016x}", nwk=nwk)
        self._send(c.ZDO.TCDevInd.Callback(SrcNwk=nwk, SrcIEEE=_eui64(device.ieee), ParentNwk=COORDINATOR_NWK))
        if link_key != self.tc_link_key:
            self._record("key_exchange_failed", ieee=f"{device.ieee:016x}")
            self._joined.pop(device.ieee, None)
            return None
        self._joined[device.ieee] = _Joined(device, nwk, capabilities)
        self._send(c.ZDO.EndDeviceAnnceInd.Callback(
            Src=nwk, NWK=nwk, IEEE=_eui64(device.ieee), Capabilities=c.zdo.MACCapabilities(capabilities)))
        self._send_zdo(nwk, zdo_t.ZDOCmd.Device_annce, self._next_tsn(), [nwk, _eui64(device.ieee), capabilities],
                       broadcast=True)
        return nwk

    def leave(self, device: RadioDevice) -> None:
        joined = self._joined.pop(device.ieee, None)
        if joined is not None:
            self._record("leave", ieee=f"{device.ieee:016x}")
            self._send(c.ZDO.LeaveInd.Callback(NWK=joined.nwk, IEEE=_eui64(device.ieee), Request=False,
                                               Remove=False, Rejoin=False))

    def nwk_of(self, device: RadioDevice) -> int | None:
        joined = self._joined.get(device.ieee)
        return joined.nwk if joined else None

    def joined_ieees(self) -> list[int]:
        return list(self._joined)

    def send_from(self, device: RadioDevice, data: bytes, *, cluster: int = 0x0057, profile: int = 0xC00F,
                  src_ep: int = 1, dst_ep: int = 1, lqi: int = 180) -> bool:
        """A joined device sends a unicast to the coordinator. True if it reached the host."""
        joined = self._joined.get(device.ieee)
        if joined is None or not self.network_up:
            return False
        endpoint = self.endpoints.get(dst_ep)
        if endpoint is None:
            return False
        if endpoint.ProfileId != profile and not self.forward_foreign_profiles:
            self._record("dropped_profile_mismatch", profile=profile)
            return False
        return self._send(c.AF.IncomingMsg.Callback(
            GroupId=0x0000, ClusterId=cluster, SrcAddr=joined.nwk, SrcEndpoint=src_ep, DstEndpoint=dst_ep,
            WasBroadcast=False, LQI=lqi, SecurityUse=False, TimeStamp=int(time.monotonic() * 1000) & 0xFFFFFFFF,
            TSN=self._next_tsn(), Data=t.ShortBytes(data), MacSrcAddr=joined.nwk, MsgResultRadius=29))

    # --- NV -------------------------------------------------------------------------------

    def nv_get(self, nvid: int) -> bytes | None:
        """A legacy (OSAL) NV item's bytes."""
        return self.nv.get((*LEGACY, nvid))

    def nv_set(self, nvid: int, value: bytes) -> None:
        self.nv[(*LEGACY, nvid)] = bytes(value)

    def nib(self) -> t.NIB | None:
        raw = self.nv_get(OsalNvIds.NIB)
        return t.NIB.deserialize(raw, align=ALIGN)[0] if raw else None

    def events_named(self, name: str) -> list[EmulatorEvent]:
        return [event for event in self.events if event.name == name]

    def _factory_reset(self, *, keep: tuple[int, ...] = ()) -> None:
        kept = {nvid: self.nv_get(nvid) for nvid in keep if self.nv_get(nvid) is not None}
        self.nv.clear()
        legacy: dict[int, bytes] = {
            OsalNvIds.EXTADDR: _eui64(self.ieee).serialize(),
            OsalNvIds.STARTUP_OPTION: b"\x00",
            OsalNvIds.PANID: t.uint16_t(0xFFFF).serialize(),
            OsalNvIds.APS_USE_EXT_PANID: bytes(8),
            OsalNvIds.EXTENDED_PAN_ID: bytes(8),
            OsalNvIds.PRECFGKEY: bytes(16),
            OsalNvIds.PRECFGKEYS_ENABLE: b"\x00",
            OsalNvIds.CHANLIST: t.Channels.from_channel_list([11]).serialize(),
            OsalNvIds.LOGICAL_TYPE: b"\x00",
            OsalNvIds.STACK_PROFILE: b"\x02",
            OsalNvIds.CONCENTRATOR_ENABLE: b"\x00",
            OsalNvIds.CONCENTRATOR_DISCOVERY: b"\x78",
            OsalNvIds.CONCENTRATOR_RC: b"\x00",
            OsalNvIds.SRC_RTG_EXPIRY_TIME: b"\x0a",
            OsalNvIds.NWK_CHILD_AGE_ENABLE: b"\x01",
            OsalNvIds.BCAST_DELIVERY_TIME: b"\x1e",
            OsalNvIds.ZDO_DIRECT_CB: b"\x00",
            OsalNvIds.NWK_ACTIVE_KEY_INFO: const.EMPTY_KEY.serialize(),
            OsalNvIds.NWK_ALTERN_KEY_INFO: const.EMPTY_KEY.serialize(),
            OsalNvIds.TCLK_SEED: os.urandom(16),
            OsalNvIds.APS_LINK_KEY_TABLE: t.APSLinkKeyTable([]).serialize(align=ALIGN).ljust(
                2 + 8 * self.table_size, b"\x00"),
            OsalNvIds.BDBNODEISONANETWORK: b"\x00",
        }
        for nvid, value in legacy.items():
            self.nv_set(nvid, value)
        self.nv_set(OsalNvIds.EXTADDR, _eui64(self.ieee).serialize())
        for nvid, value in kept.items():
            self.nv_set(nvid, value)
        tables = {
            ExNvIds.ADDRMGR: const.EMPTY_ADDR_MGR_ENTRY_ZSTACK3.serialize(align=ALIGN),
            ExNvIds.TCLK_TABLE: t.TCLKDevEntry(
                txFrmCntr=0, rxFrmCntr=0, extAddr=t.EUI64(bytes(8)), keyAttributes=t.KeyAttributes.DEFAULT_KEY,
                keyType=t.KeyType.NONE, SeedShift_IcIndex=0).serialize(align=ALIGN),
            ExNvIds.APS_KEY_DATA_TABLE: t.APSKeyDataTableEntry(
                Key=t.KeyData(bytes(16)), TxFrameCounter=0, RxFrameCounter=0).serialize(align=ALIGN),
            ExNvIds.NWK_SEC_MATERIAL_TABLE: t.NwkSecMaterialDesc(
                FrameCounter=0, ExtendedPanID=t.EUI64(bytes(8))).serialize(align=ALIGN),
        }
        for item, fill in tables.items():
            for sub in range(self.table_size if item != ExNvIds.NWK_SEC_MATERIAL_TABLE else 4):
                self.nv[(NvSysIds.ZSTACK, item, sub)] = fill

    def _boot(self) -> None:
        """What Z-Stack does at power-up or reset."""
        option = t.StartupOptions(self.nv_get(OsalNvIds.STARTUP_OPTION)[0] if self.nv_get(OsalNvIds.STARTUP_OPTION)
                                  else 0)
        if option & (t.StartupOptions.ClearConfig | t.StartupOptions.ClearState):
            self._record("factory_reset", option=int(option))
            self._factory_reset(keep=(OsalNvIds.EXTADDR,))
        self.nv_set(OsalNvIds.STARTUP_OPTION, b"\x00")
        if self.nv_get(OsalNvIds.EXTADDR) is None:  # a deleted EXTADDR comes back as the hardware address
            self.nv_set(OsalNvIds.EXTADDR, _eui64(self.ieee).serialize())
        self.endpoints.clear()
        self.network_up = False
        self.device_state = t.DeviceState.InitializedNotStarted
        self._permit_until = 0.0
        self._joined.clear()
        self._primary_channels = t.Channels.ALL_CHANNELS
        self.stack_profile = (self.nv_get(OsalNvIds.STACK_PROFILE) or b"\x02")[0]

    # --- host link ------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:  # one serial port, one host: a new one replaces the old
            self.drop_connections()
        self._writer = writer
        self._record("host_connected")
        task = asyncio.current_task()
        self._connections.add(task)
        buffer = bytearray()
        try:
            while True:
                chunk = await reader.read(4096)
                if not chunk:
                    break
                buffer += chunk
                for frame in self._extract(buffer):
                    await self._handle(frame)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            if self._writer is writer:
                self._writer = None
                self._record("host_disconnected")
            writer.close()

    @staticmethod
    def _extract(buffer: bytearray):
        while True:
            start = buffer.find(0xFE)
            if start < 0:
                buffer.clear()
                return
            del buffer[:start]
            if len(buffer) < 5 or len(buffer) < buffer[1] + 5:
                return
            try:
                frame, rest = TransportFrame.deserialize(bytes(buffer))
            except InvalidFrame:
                del buffer[:1]
                continue
            del buffer[:len(buffer) - len(rest)]
            yield frame.payload

    def _send(self, command: t.CommandBase | GeneralFrame) -> bool:
        writer = self._writer
        if writer is None or writer.is_closing():
            return False
        frame = command if isinstance(command, GeneralFrame) else command.to_frame(align=ALIGN)
        writer.write(TransportFrame(frame).serialize())
        return True

    def _later(self, delay: float, *commands: t.CommandBase, then: Callable[[], None] | None = None) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            if then is not None:
                then()
            for command in commands:
                self._send(command)
        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _record(self, name: str, **detail: Any) -> None:
        self.events.append(EmulatorEvent(name, detail))
        log.debug("emulator: %s %s", name, detail)

    async def _handle(self, frame: GeneralFrame) -> None:
        cls = c.COMMANDS_BY_ID.get(frame.header)
        if cls is None or cls.Req is not cls:
            self._not_recognized(frame.header)
            return
        try:
            request = cls.from_frame(frame, align=ALIGN)
        except ValueError:
            self._send(c.RPCError.CommandNotRecognized.Rsp(
                ErrorCode=c.rpc_error.ErrorCode.InvalidParameter, RequestHeader=frame.header))
            return
        handler = self._handlers().get(cls)
        if handler is None:
            self._not_recognized(frame.header)
            return
        try:
            response = handler(request)
        except Exception:  # an emulator bug must show, not hang the host until its timeout
            log.exception("emulator failed to handle %s", request)
            return
        if response is not None:
            self._send(response)

    def _not_recognized(self, header: t.CommandHeader) -> None:
        if header.type == t.CommandType.SREQ:
            self._send(c.RPCError.CommandNotRecognized.Rsp(
                ErrorCode=c.rpc_error.ErrorCode.InvalidCommandId, RequestHeader=header))

    def _handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            c.SYS.Ping.Req: lambda r: c.SYS.Ping.Rsp(Capabilities=CAPABILITIES),
            c.SYS.Version.Req: self._version,
            c.SYS.ResetReq.Req: self._reset,
            c.SYS.OSALNVLength.Req: lambda r: c.SYS.OSALNVLength.Rsp(ItemLen=len(self.nv_get(r.Id) or b"")),
            c.SYS.OSALNVRead.Req: self._osal_read,
            c.SYS.OSALNVReadExt.Req: self._osal_read,
            c.SYS.OSALNVWrite.Req: self._osal_write,
            c.SYS.OSALNVWriteExt.Req: self._osal_write,
            c.SYS.OSALNVItemInit.Req: self._osal_init,
            c.SYS.OSALNVDelete.Req: self._osal_delete,
            c.SYS.NVLength.Req: lambda r: c.SYS.NVLength.Rsp(
                Length=len(self.nv.get((r.SysId, r.ItemId, r.SubId), b""))),
            c.SYS.NVRead.Req: self._nv_read,
            c.SYS.NVWrite.Req: self._nv_write,
            c.SYS.NVCreate.Req: self._nv_create,
            c.SYS.NVDelete.Req: self._nv_delete,
            c.SYS.SetTxPower.Req: lambda r: c.SYS.SetTxPower.Rsp(StatusOrPower=t.Status.SUCCESS),
            c.UTIL.AssocFindDevice.Req: lambda r: c.UTIL.AssocFindDevice.Rsp(
                Device=t.Bytes(b"\xfe\xff" + bytes(34))),
            c.UTIL.LEDControl.Req: lambda r: c.UTIL.LEDControl.Rsp(Status=t.Status.SUCCESS),
            c.UTIL.GetDeviceInfo.Req: self._device_info,
            c.ZDO.ExtNwkInfo.Req: self._ext_nwk_info,
            c.AppConfig.BDBSetChannel.Req: self._bdb_set_channel,
            c.AppConfig.BDBStartCommissioning.Req: self._bdb_start,
            c.AF.Register.Req: self._af_register,
            c.AF.DataRequestExt.Req: self._af_data_request,
            c.ZDO.MsgCallbackRegister.Req: lambda r: c.ZDO.MsgCallbackRegister.Rsp(Status=t.Status.SUCCESS),
            c.ZDO.MgmtPermitJoinReq.Req: self._permit_join,
            c.ZDO.ExtRouteDisc.Req: lambda r: c.ZDO.ExtRouteDisc.Rsp(Status=t.Status.SUCCESS),
            c.ZDO.ExtRouteChk.Req: lambda r: c.ZDO.ExtRouteChk.Rsp(Status=c.zdo.RoutingStatus.SUCCESS),
        }

    # --- SYS ------------------------------------------------------------------------------

    def _version(self, request: c.SYS.Version.Req) -> c.SYS.Version.Rsp:
        fw = self.firmware
        return c.SYS.Version.Rsp(
            TransportRev=fw.transport_rev, ProductId=fw.product_id, MajorRel=fw.major, MinorRel=fw.minor,
            MaintRel=fw.maint, CodeRevision=fw.code_revision,
            BootloaderBuildType=c.sys.BootloaderBuildType.NON_BOOTLOADER_BUILD, BootloaderRevision=0xFFFFFFFF)

    def _device_info(self, request: c.UTIL.GetDeviceInfo.Req) -> c.UTIL.GetDeviceInfo.Rsp:
        """The associated devices are the end devices among the coordinator's children."""
        Caps = t.DeviceTypeCapabilities
        end_devices = [j.nwk for j in self._joined.values() if not j.capabilities & 0x02]  # MAC: FFD bit clear
        return c.UTIL.GetDeviceInfo.Rsp(
            Status=t.Status.SUCCESS, IEEE=_eui64(self.ieee), NWK=self._short_address(),
            DeviceType=Caps.Coordinator | Caps.Router | Caps.EndDevice, DeviceState=self.device_state,
            AssociatedDevices=t.NWKList(end_devices))

    def _ext_nwk_info(self, request: c.ZDO.ExtNwkInfo.Req) -> GeneralFrame:
        """The NIB in RAM: empty until the network is started."""
        nib = self.nib() if self.network_up else None
        data = (
            t.NWK(self._short_address()).serialize() + t.uint8_t(self.device_state).serialize()
            + t.uint16_t(nib.nwkPanId if nib else 0xFFFF).serialize()
            + t.NWK(nib.nwkCoordAddress if nib else COORDINATOR_NWK).serialize()
            + (nib.extendedPANID.serialize() if nib else bytes(8))
            + (nib.nwkCoordExtAddress.serialize() if nib else bytes(8))
            + t.uint8_t(nib.nwkLogicalChannel if nib else 0).serialize()
        )
        return GeneralFrame(c.ZDO.ExtNwkInfo.Rsp.header, data)

    def _short_address(self) -> int:
        return COORDINATOR_NWK if self.network_up else 0xFFFE  # Z-Stack's INVALID_NODE_ADDR before start

    def _reset(self, request: c.SYS.ResetReq.Req) -> None:
        self._record("reset", type=int(request.Type), stack_profile_nv=(self.nv_get(OsalNvIds.STACK_PROFILE)
                                                                       or b"?")[0])
        self._boot()
        fw = self.firmware
        self._later(0.005, c.SYS.ResetInd.Callback(
            Reason=t.ResetReason.PowerUp, TransportRev=fw.transport_rev, ProductId=fw.product_id,
            MajorRel=fw.major, MinorRel=fw.minor, MaintRel=fw.maint))

    def _osal_read(self, request):
        rsp = type(request).Rsp
        value = self.nv_get(request.Id)
        if value is None or request.Offset > len(value):
            return rsp(Status=t.Status.INVALID_PARAMETER, Value=t.ShortBytes(b""))
        return rsp(Status=t.Status.SUCCESS, Value=t.ShortBytes(value[request.Offset:request.Offset + 244]))

    def _osal_write(self, request):
        rsp = type(request).Rsp
        value = self.nv_get(request.Id)
        if value is None or request.Offset + len(request.Value) > len(value):
            return rsp(Status=t.Status.INVALID_PARAMETER)
        new = value[:request.Offset] + bytes(request.Value) + value[request.Offset + len(request.Value):]
        self.nv_set(request.Id, new)
        self._record("nv_write", nvid=int(request.Id), value=new)
        return rsp(Status=t.Status.SUCCESS)

    def _osal_init(self, request: c.SYS.OSALNVItemInit.Req):
        if self.nv_get(request.Id) is not None:
            return c.SYS.OSALNVItemInit.Rsp(Status=t.Status.SUCCESS)
        self.nv_set(request.Id, bytes(request.Value).ljust(request.ItemLen, b"\x00")[:request.ItemLen])
        return c.SYS.OSALNVItemInit.Rsp(Status=t.Status.NV_ITEM_UNINIT)

    def _osal_delete(self, request: c.SYS.OSALNVDelete.Req):
        existed = self.nv.pop((*LEGACY, request.Id), None) is not None
        return c.SYS.OSALNVDelete.Rsp(Status=t.Status.SUCCESS if existed else t.Status.NV_ITEM_UNINIT)

    def _nv_read(self, request: c.SYS.NVRead.Req):
        value = self.nv.get((request.SysId, request.ItemId, request.SubId))
        if value is None or request.Offset > len(value):
            return c.SYS.NVRead.Rsp(Status=t.Status.INVALID_PARAMETER, Value=t.ShortBytes(b""))
        chunk = value[request.Offset:request.Offset + min(request.Length, 244)]
        return c.SYS.NVRead.Rsp(Status=t.Status.SUCCESS, Value=t.ShortBytes(chunk))

    def _nv_write(self, request: c.SYS.NVWrite.Req):
        key = (request.SysId, request.ItemId, request.SubId)
        value = self.nv.get(key)
        if value is None or request.Offset + len(request.Value) > len(value):
            return c.SYS.NVWrite.Rsp(Status=t.Status.INVALID_PARAMETER)
        self.nv[key] = value[:request.Offset] + bytes(request.Value) + value[request.Offset + len(request.Value):]
        return c.SYS.NVWrite.Rsp(Status=t.Status.SUCCESS)

    def _nv_create(self, request: c.SYS.NVCreate.Req):
        key = (request.SysId, request.ItemId, request.SubId)
        if key in self.nv:
            return c.SYS.NVCreate.Rsp(Status=t.Status.SUCCESS)
        self.nv[key] = bytes(request.Length)
        return c.SYS.NVCreate.Rsp(Status=t.Status.NV_ITEM_UNINIT)

    def _nv_delete(self, request: c.SYS.NVDelete.Req):
        existed = self.nv.pop((request.SysId, request.ItemId, request.SubId), None) is not None
        return c.SYS.NVDelete.Rsp(Status=t.Status.SUCCESS if existed else t.Status.NV_ITEM_UNINIT)

    # --- network formation -------------------------------------------------------------

    def _bdb_set_channel(self, request: c.AppConfig.BDBSetChannel.Req):
        if request.IsPrimary:
            self._primary_channels = request.Channel
        return c.AppConfig.BDBSetChannel.Rsp(Status=t.Status.SUCCESS)

    def _bdb_start(self, request: c.AppConfig.BDBStartCommissioning.Req):
        Mode, Status = c.app_config.BDBCommissioningMode, c.app_config.BDBCommissioningStatus
        if not request.Mode & Mode.NwkFormation:
            return c.AppConfig.BDBStartCommissioning.Rsp(Status=t.Status.SUCCESS)
        formed = (self.nv_get(OsalNvIds.BDBNODEISONANETWORK) == b"\x01" and self.nib() is not None)
        if formed:
            status = Status.FormationFailure  # Z-Stack's answer when it resumes an existing network
            self._later(self.formation_delay,
                        c.ZDO.StateChangeInd.Callback(State=t.DeviceState.StartedAsCoordinator),
                        c.AppConfig.BDBCommissioningNotification.Callback(
                            Status=status, Mode=Mode.NONE, RemainingModes=Mode.NONE),
                        then=self._resume)
        else:
            self.device_state = t.DeviceState.StartingAsCoordinator
            self._later(0, c.ZDO.StateChangeInd.Callback(State=t.DeviceState.StartingAsCoordinator),
                        c.AppConfig.BDBCommissioningNotification.Callback(
                            Status=Status.InProgress, Mode=Mode.NwkFormation, RemainingModes=Mode.NwkFormation))
            self._later(self.formation_delay,
                        c.ZDO.StateChangeInd.Callback(State=t.DeviceState.StartedAsCoordinator),
                        c.AppConfig.BDBCommissioningNotification.Callback(
                            Status=Status.Success, Mode=Mode.NwkFormation, RemainingModes=Mode.NONE),
                        then=self._form)
        return c.AppConfig.BDBStartCommissioning.Rsp(Status=t.Status.SUCCESS)

    def _form(self) -> None:
        channels = [ch for ch in range(11, 27) if self._primary_channels & t.Channels.from_channel_list([ch])]
        channel = channels[0] if channels else 11
        pan_id = t.uint16_t.deserialize(self.nv_get(OsalNvIds.PANID))[0]
        if pan_id in (0xFFFF, 0xFFFE):
            pan_id = int.from_bytes(os.urandom(2), "little") % 0xFFF0 + 1
        epid = self.nv_get(OsalNvIds.APS_USE_EXT_PANID) or bytes(8)
        if epid == bytes(8):
            epid = _eui64(self.ieee).serialize()
        key = self.nv_get(OsalNvIds.PRECFGKEY) if self.nv_get(OsalNvIds.PRECFGKEYS_ENABLE) == b"\x01" else None
        key = key or os.urandom(16)
        nib = t.NIB(
            SequenceNum=0, PassiveAckTimeout=5, MaxBroadcastRetries=2, MaxChildren=0, MaxDepth=20,
            MaxRouters=0, dummyNeighborTable=0, BroadcastDeliveryTime=30, ReportConstantCost=0,
            RouteDiscRetries=0, dummyRoutingTable=0, SecureAllFrames=1, SecurityLevel=5, SymLink=1,
            CapabilityFlags=143, TransactionPersistenceTime=7, nwkProtocolVersion=2, RouteDiscoveryTime=13,
            RouteExpiryTime=30, nwkDevAddress=COORDINATOR_NWK, nwkLogicalChannel=channel,
            nwkCoordAddress=COORDINATOR_NWK, nwkCoordExtAddress=t.EUI64(bytes(8)), nwkPanId=pan_id,
            nwkState=t.NwkState.NWK_ROUTER, channelList=t.Channels.from_channel_list([channel]),
            beaconOrder=15, superFrameOrder=15, scanDuration=4, battLifeExt=0, allocatedRouterAddresses=1,
            allocatedEndDeviceAddresses=1, nodeDepth=0, extendedPANID=t.EUI64(epid), nwkKeyLoaded=True,
            spare1=const.EMPTY_KEY, spare2=const.EMPTY_KEY, spare3=0, spare4=0, nwkLinkStatusPeriod=60,
            nwkRouterAgeLimit=3, nwkUseMultiCast=False, nwkIsConcentrator=True,
            nwkConcentratorDiscoveryTime=120, nwkConcentratorRadius=10, nwkAllFresh=1,
            nwkManagerAddr=COORDINATOR_NWK, nwkTotalTransmissions=0, nwkUpdateId=0)
        self.nv_set(OsalNvIds.NIB, nib.serialize(align=ALIGN))
        self.nv_set(OsalNvIds.EXTENDED_PAN_ID, epid)
        self.nv_set(OsalNvIds.BDBNODEISONANETWORK, b"\x01")
        active = t.NwkKeyDesc(KeySeqNum=0, Key=t.KeyData(key)).serialize()
        self.nv_set(OsalNvIds.NWK_ACTIVE_KEY_INFO, active)
        self.nv_set(OsalNvIds.NWK_ALTERN_KEY_INFO, active)
        self.nv[(NvSysIds.ZSTACK, ExNvIds.NWK_SEC_MATERIAL_TABLE, 0)] = t.NwkSecMaterialDesc(
            FrameCounter=1, ExtendedPanID=t.EUI64(epid)).serialize(align=ALIGN)
        self._record("formed", pan_id=pan_id, channel=channel)
        self._resume()

    def _resume(self) -> None:
        nib = self.nib()
        self.pan_id, self.channel = int(nib.nwkPanId), int(nib.nwkLogicalChannel)
        self.extended_pan_id = nib.extendedPANID.serialize()
        self.network_up = True
        self.device_state = t.DeviceState.StartedAsCoordinator
        self._record("network_up", pan_id=self.pan_id, channel=self.channel, stack_profile=self.stack_profile)

    # --- AF / ZDO -------------------------------------------------------------------------

    def _af_register(self, request: c.AF.Register.Req):
        if request.Endpoint in self.endpoints:
            return c.AF.Register.Rsp(Status=t.Status.APS_DUPLICATE_ENTRY)
        self.endpoints[request.Endpoint] = request
        self._record("endpoint_registered", endpoint=request.Endpoint, profile=request.ProfileId)
        return c.AF.Register.Rsp(Status=t.Status.SUCCESS)

    def _permit_join(self, request: c.ZDO.MgmtPermitJoinReq.Req):
        if not self.network_up:
            return c.ZDO.MgmtPermitJoinReq.Rsp(Status=t.Status.FAILURE)
        if request.AddrMode == t.AddrMode.Broadcast or request.Dst == COORDINATOR_NWK:
            self._permit_until = time.monotonic() + request.Duration
            self._record("permit_join", duration=request.Duration)
            self._later(0, c.ZDO.MgmtPermitJoinRsp.Callback(Src=COORDINATOR_NWK, Status=zdo_t.Status.SUCCESS))
        return c.ZDO.MgmtPermitJoinReq.Rsp(Status=t.Status.SUCCESS)

    def _af_data_request(self, request: c.AF.DataRequestExt.Req):
        if not self.network_up:
            return c.AF.DataRequestExt.Rsp(Status=t.Status.NWK_NOT_PERMITTED)
        address = request.DstAddrModeAddress
        data = bytes(request.Data)
        if request.DstEndpoint == 0:
            if address.mode == t.AddrMode.NWK and address.address == COORDINATOR_NWK:
                self._answer_own_zdo(request.ClusterId, data)
            return c.AF.DataRequestExt.Rsp(Status=t.Status.SUCCESS)
        if address.mode != t.AddrMode.NWK:
            return c.AF.DataRequestExt.Rsp(Status=t.Status.SUCCESS)  # broadcasts/groups: nobody listens
        target = next((j for j in self._joined.values() if j.nwk == address.address), None)
        profile = self.endpoints[request.SrcEndpoint].ProfileId if request.SrcEndpoint in self.endpoints else 0
        status = t.Status.SUCCESS
        if target is None:
            status = t.Status.APS_NO_ACK if request.Options & c.af.TransmitOptions.ACK_REQUEST else t.Status.SUCCESS
        self._record("af_data_request", nwk=int(address.address), cluster=int(request.ClusterId), profile=profile,
                     src_ep=int(request.SrcEndpoint), dst_ep=int(request.DstEndpoint),
                     ack=bool(request.Options & c.af.TransmitOptions.ACK_REQUEST), data=data,
                     delivered=target is not None)
        if target is not None:
            device = target.device
            asyncio.get_running_loop().call_soon(
                device.deliver, int(request.ClusterId), profile, int(request.SrcEndpoint),
                int(request.DstEndpoint), data)
        self._later(0.002, c.AF.DataConfirm.Callback(Status=status, Endpoint=request.SrcEndpoint, TSN=request.TSN))
        return c.AF.DataRequestExt.Rsp(Status=t.Status.SUCCESS)

    def _answer_own_zdo(self, cluster: int, data: bytes) -> None:
        """Z-Stack answers ZDO requests addressed to itself (ZDO_DIRECT_CB callbacks)."""
        tsn, args = data[0], data[1:]
        Cmd = zdo_t.ZDOCmd
        if cluster == Cmd.Node_Desc_req:
            descriptor = zdo_t.NodeDescriptor(
                byte1=0, byte2=0x40, mac_capability_flags=0x8F, manufacturer_code=0x0000, maximum_buffer_size=0x50,
                maximum_incoming_transfer_size=160, server_mask=0x2C41, maximum_outgoing_transfer_size=160,
                descriptor_capability_field=0)
            self._send_zdo(COORDINATOR_NWK, Cmd.Node_Desc_rsp, tsn, [zdo_t.Status.SUCCESS, COORDINATOR_NWK,
                                                                     descriptor])
        elif cluster == Cmd.Active_EP_req:
            self._send_zdo(COORDINATOR_NWK, Cmd.Active_EP_rsp, tsn,
                           [zdo_t.Status.SUCCESS, COORDINATOR_NWK, sorted(self.endpoints)])
        elif cluster == Cmd.Simple_Desc_req:
            endpoint = args[2] if len(args) > 2 else 0
            reg = self.endpoints.get(endpoint)
            if reg is None:
                self._send_zdo(COORDINATOR_NWK, Cmd.Simple_Desc_rsp, tsn,
                               [zdo_t.Status.NOT_ACTIVE, COORDINATOR_NWK, None])
            else:
                descriptor = zdo_t.SizePrefixedSimpleDescriptor(
                    endpoint=reg.Endpoint, profile=reg.ProfileId, device_type=reg.DeviceId,
                    device_version=reg.DeviceVersion, input_clusters=list(reg.InputClusters),
                    output_clusters=list(reg.OutputClusters))
                self._send_zdo(COORDINATOR_NWK, Cmd.Simple_Desc_rsp, tsn,
                               [zdo_t.Status.SUCCESS, COORDINATOR_NWK, descriptor])

    def _send_zdo(self, src: int, cluster: int, tsn: int, values: list, *, broadcast: bool = False) -> None:
        _names, kinds = zdo_t.CLUSTERS[cluster]
        payload = b""
        for kind, value in zip(kinds, values, strict=True):
            if value is None:
                continue
            payload += (value if isinstance(value, kind) else kind(value)).serialize()
        self._later(0.001, c.ZDO.MsgCbIncoming.Callback(
            Src=src, IsBroadcast=broadcast, ClusterId=cluster, SecurityUse=0, TSN=tsn,
            MacDst=0xFFFF if broadcast else COORDINATOR_NWK, Data=t.Bytes(payload)))

    _tsn = 0

    def _next_tsn(self) -> int:
        self._tsn = (self._tsn + 1) & 0xFF
        return self._tsn

    def _allocate_nwk(self, ieee: int) -> int:
        joined = self._joined.get(ieee)
        if joined is not None:
            return joined.nwk
        self._next_nwk = (self._next_nwk * 1103 + 0x3F1) % 0xFFF0 or 0x1234
        return self._next_nwk

