"""An emulated Z-Stack 3.x coordinator stick, reachable over TCP (``socket://host:port``).

It speaks the ZNP protocol with zigpy-znp's own frame and command types, well enough for
zigpy-znp to connect, read the firmware version and NV items, form a network (or resume a
formed one), register endpoints, permit joins, start, and exchange AF frames. Unknown
synchronous requests get ``RPCError.CommandNotRecognized``, as on a real stick. Its NV
memory is :mod:`~appliance.sim.zstack.nv`, its serial link :mod:`~appliance.sim.zstack.link`,
its address and parent tables :mod:`~appliance.sim.zstack.network`, its radio
:mod:`~appliance.sim.zstack.air` (ideal unless given ``radio=``); this module is the stack:
formation, joins and AF.

What it models on purpose, because the appliance depends on it:

- NV that persists across connections and soft resets; a reset with ``STARTUP_OPTION``
  ClearConfig/ClearState restores factory NV (so STACK_PROFILE goes back to 2 when a
  network is re-formed);
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
  behaviour of Koenkk's builds since 2021-07-08) unless ``forward_foreign_profiles`` is off;
- every device's frame is APS-acknowledged; the devices' own stacks answer IEEE_addr_req.

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
from typing import Any, Callable

import zigpy.zdo.types as zdo_t
import zigpy_znp.commands as c
import zigpy_znp.const as const
import zigpy_znp.types as t
from zigpy_znp.frames import GeneralFrame
from zigpy_znp.types.nvids import ExNvIds, NvSysIds, OsalNvIds

from appliance.protocols import enecsys
from appliance.sim.zstack.air import IDEAL, Air, RadioConditions
from appliance.sim.zstack.link import HostLink
from appliance.sim.zstack.network import COORDINATOR_NWK, Joined, Network, RadioDevice
from appliance.sim.zstack.nv import ALIGN, NvStore, eui64

log = logging.getLogger(__name__)

DEFAULT_TC_LINK_KEY = b"ZigBeeAlliance09"

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


@dataclass(frozen=True)
class Beacon:
    """What a device scanning the channels learns about the running network."""

    pan_id: int
    channel: int
    extended_pan_id: bytes
    stack_profile: int
    permit_join: bool


@dataclass
class EmulatorEvent:
    name: str
    detail: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


class CoordinatorEmulator:
    """The emulated stick. ``await start()``, then point zigpy at :attr:`url`."""

    def __init__(
        self,
        *,
        ieee: int = 0x00124B0029ABCDEF,
        tc_link_key: bytes = enecsys.TC_LINK_KEY,
        firmware: FirmwareVersion | None = None,
        forward_foreign_profiles: bool = True,
        table_size: int = 16,
        formation_delay: float = 0.02,
        radio: RadioConditions = IDEAL,
    ):
        self.ieee = ieee
        self.tc_link_key = tc_link_key
        self.firmware = firmware or FirmwareVersion()
        self.forward_foreign_profiles = forward_foreign_profiles
        self.table_size = table_size
        self.formation_delay = formation_delay
        self.nv = NvStore(ieee, table_size, on_write=lambda nvid, value: self._record(
            "nv_write", nvid=nvid, value=value))
        self.link = HostLink(self._handle, self._record)
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
        self.air = Air(radio)
        self.network = Network(radio.max_children, radio.router_max_children, radio.seed)
        self._boot()

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        url = await self.link.start(host, port)
        log.info("emulated Z-Stack coordinator listening on %s", url)
        return url

    @property
    def url(self) -> str:
        return self.link.url

    @property
    def host(self) -> str:
        return self.link.host

    @property
    def port(self) -> int:
        return self.link.port

    async def stop(self) -> None:
        await self.link.stop()

    def drop_connections(self) -> None:
        """Cut the host link (a dead serial/TCP link). The stick keeps its state."""
        self.link.drop()

    @property
    def host_connected(self) -> bool:
        return self.link.connected

    # --- the air side, used by simulated devices --------------------------------------

    @property
    def permit_join(self) -> bool:
        return self.network_up and time.monotonic() < self._permit_until

    def beacon(self) -> Beacon | None:
        if not self.network_up:
            return None
        return Beacon(self.pan_id, self.channel, self.extended_pan_id, self.stack_profile, self.permit_join)

    def associate(self, device: RadioDevice, link_key: bytes, capabilities: int = 0x8E) -> int | None:
        """A device joins through the coordinator. Returns its NWK address, or None when no parent
        has room for it, or when the trust center's Transport-Key cannot be decrypted with
        ``link_key`` (the join fails after the TC device indication, as with a wrong firmware build)."""
        if not self.permit_join:
            return None
        joined = self.network.place(device, capabilities)
        if joined is None:
            self._record("association_refused", ieee=f"{device.ieee:016x}")
            return None
        nwk = joined.nwk
        self._record("tc_device_join", ieee=f"{device.ieee:016x}", nwk=nwk, parent=joined.parent, hops=joined.hops)
        self.link.send(c.ZDO.TCDevInd.Callback(SrcNwk=nwk, SrcIEEE=eui64(device.ieee), ParentNwk=joined.parent))
        if link_key != self.tc_link_key:
            self._record("key_exchange_failed", ieee=f"{device.ieee:016x}")
            self.network.remove(device.ieee)
            return None
        announce = (
            c.ZDO.EndDeviceAnnceInd.Callback(
                Src=nwk, NWK=nwk, IEEE=eui64(device.ieee), Capabilities=c.zdo.MACCapabilities(capabilities)),
            self._zdo_message(nwk, zdo_t.ZDOCmd.Device_annce, self._next_tsn(),
                              [nwk, eui64(device.ieee), capabilities], broadcast=True),
        )
        if self.air.conditions.instant:
            self.link.later(0.001, *announce)
        else:
            def heard() -> None:
                for message in announce:
                    self.link.send(message)
            self._transmit(joined, lambda: self.air.broadcast(joined.hops, heard))
        return nwk

    def leave(self, device: RadioDevice) -> None:
        joined = self.network.remove(device.ieee)
        if joined is not None:
            self._record("leave", ieee=f"{device.ieee:016x}")
            self.link.send(c.ZDO.LeaveInd.Callback(NWK=joined.nwk, IEEE=eui64(device.ieee), Request=False,
                                                   Remove=False, Rejoin=False))

    def nwk_of(self, device: RadioDevice) -> int | None:
        joined = self.network.get(device.ieee)
        return joined.nwk if joined else None

    def joined_ieees(self) -> list[int]:
        return list(self.network.by_ieee)

    def send_from(self, device: RadioDevice, data: bytes, *, cluster: int = 0x0057, profile: int = 0xC00F,
                  src_ep: int = 1, dst_ep: int = 1, lqi: int = 180) -> bool:
        """A joined device sends a unicast (APS ACK requested) to the coordinator. On an ideal radio,
        True if it reached the host; otherwise True if it went on the air (what becomes of it is in
        :attr:`air`'s statistics and, when the host got it, in the host's log)."""
        sent = self._uplink(device, data, cluster, profile, src_ep, dst_ep, lqi)
        return sent if isinstance(sent, bool) else True

    async def transmit(self, device: RadioDevice, data: bytes, **options) -> bool:
        """:meth:`send_from`, returning once the frame is through the air: True if acknowledged
        (a device's stack sends its next frame after that)."""
        sent = self._uplink(device, data, **options)
        return sent if isinstance(sent, bool) else await sent

    def _uplink(self, device: RadioDevice, data: bytes, cluster: int = 0x0057, profile: int = 0xC00F,
                src_ep: int = 1, dst_ep: int = 1, lqi: int = 180) -> bool | asyncio.Task:
        joined = self.network.get(device.ieee)
        if joined is None or not self.network_up:
            return False

        def arrive() -> bool:
            """The stick received it (and APS-acknowledges it): up to the host, unless Z-Stack drops it."""
            endpoint = self.endpoints.get(dst_ep)
            if endpoint is None or not self.network_up:
                return False
            if endpoint.ProfileId != profile and not self.forward_foreign_profiles:
                self._record("dropped_profile_mismatch", profile=profile)
                return False
            return self.link.send(c.AF.IncomingMsg.Callback(
                GroupId=0x0000, ClusterId=cluster, SrcAddr=joined.nwk, SrcEndpoint=src_ep, DstEndpoint=dst_ep,
                WasBroadcast=False, LQI=lqi, SecurityUse=False,
                TimeStamp=int(time.monotonic() * 1000) & 0xFFFFFFFF, TSN=self._next_tsn(),
                Data=t.ShortBytes(data), MacSrcAddr=joined.nwk if joined.hops == 1 else joined.parent,
                MsgResultRadius=30 - joined.hops))

        if self.air.conditions.instant:
            self.air.stats.aps_acks += 1
            return arrive()
        return self._transmit(joined, lambda: self.air.unicast(joined.hops, arrive))

    def _transmit(self, joined: Joined, carry: Callable[[], Any]) -> asyncio.Task:
        """Put a device's frame on the air after its earlier ones."""
        async def run() -> Any:
            async with joined.lock:
                return await carry()
        return self.link.spawn(run())

    def events_named(self, name: str) -> list[EmulatorEvent]:
        return [event for event in self.events if event.name == name]

    # --- power-up -------------------------------------------------------------------------

    def _boot(self) -> None:
        """What Z-Stack does at power-up or reset."""
        option = t.StartupOptions((self.nv.read(OsalNvIds.STARTUP_OPTION) or b"\x00")[0])
        if option & (t.StartupOptions.ClearConfig | t.StartupOptions.ClearState):
            self._record("factory_reset", option=int(option))
            self.nv.factory_reset(keep=(OsalNvIds.EXTADDR,))
        self.nv.write(OsalNvIds.STARTUP_OPTION, b"\x00")
        if self.nv.read(OsalNvIds.EXTADDR) is None:  # a deleted EXTADDR comes back as the hardware address
            self.nv.write(OsalNvIds.EXTADDR, eui64(self.ieee).serialize())
        self.endpoints.clear()
        self.network_up = False
        self.device_state = t.DeviceState.InitializedNotStarted
        self._permit_until = 0.0
        self.network.clear()
        self._primary_channels = t.Channels.ALL_CHANNELS
        self.stack_profile = (self.nv.read(OsalNvIds.STACK_PROFILE) or b"\x02")[0]

    # --- host link ------------------------------------------------------------------------

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
            self.link.send(c.RPCError.CommandNotRecognized.Rsp(
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
            self.link.send(response)

    def _not_recognized(self, header: t.CommandHeader) -> None:
        if header.type == t.CommandType.SREQ:
            self.link.send(c.RPCError.CommandNotRecognized.Rsp(
                ErrorCode=c.rpc_error.ErrorCode.InvalidCommandId, RequestHeader=header))

    def _handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            **self.nv.handlers(),
            c.SYS.Ping.Req: lambda r: c.SYS.Ping.Rsp(Capabilities=CAPABILITIES),
            c.SYS.Version.Req: self._version,
            c.SYS.ResetReq.Req: self._reset,
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
        end_devices = [j.nwk for j in self.network.children(COORDINATOR_NWK) if not j.router]
        return c.UTIL.GetDeviceInfo.Rsp(
            Status=t.Status.SUCCESS, IEEE=eui64(self.ieee), NWK=self._short_address(),
            DeviceType=Caps.Coordinator | Caps.Router | Caps.EndDevice, DeviceState=self.device_state,
            AssociatedDevices=t.NWKList(end_devices))

    def _ext_nwk_info(self, request: c.ZDO.ExtNwkInfo.Req) -> GeneralFrame:
        """The NIB in RAM: empty until the network is started."""
        nib = self.nv.nib() if self.network_up else None
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
        self._record("reset", type=int(request.Type), stack_profile_nv=(self.nv.read(OsalNvIds.STACK_PROFILE)
                                                                       or b"?")[0])
        self._boot()
        fw = self.firmware
        self.link.later(0.005, c.SYS.ResetInd.Callback(
            Reason=t.ResetReason.PowerUp, TransportRev=fw.transport_rev, ProductId=fw.product_id,
            MajorRel=fw.major, MinorRel=fw.minor, MaintRel=fw.maint))

    # --- network formation -------------------------------------------------------------

    def _bdb_set_channel(self, request: c.AppConfig.BDBSetChannel.Req):
        if request.IsPrimary:
            self._primary_channels = request.Channel
        return c.AppConfig.BDBSetChannel.Rsp(Status=t.Status.SUCCESS)

    def _bdb_start(self, request: c.AppConfig.BDBStartCommissioning.Req):
        Mode, Status = c.app_config.BDBCommissioningMode, c.app_config.BDBCommissioningStatus
        if not request.Mode & Mode.NwkFormation:
            return c.AppConfig.BDBStartCommissioning.Rsp(Status=t.Status.SUCCESS)
        formed = (self.nv.read(OsalNvIds.BDBNODEISONANETWORK) == b"\x01" and self.nv.nib() is not None)
        if formed:
            status = Status.FormationFailure  # Z-Stack's answer when it resumes an existing network
            self.link.later(self.formation_delay,
                        c.ZDO.StateChangeInd.Callback(State=t.DeviceState.StartedAsCoordinator),
                        c.AppConfig.BDBCommissioningNotification.Callback(
                            Status=status, Mode=Mode.NONE, RemainingModes=Mode.NONE),
                        then=self._resume)
        else:
            self.device_state = t.DeviceState.StartingAsCoordinator
            self.link.later(0, c.ZDO.StateChangeInd.Callback(State=t.DeviceState.StartingAsCoordinator),
                        c.AppConfig.BDBCommissioningNotification.Callback(
                            Status=Status.InProgress, Mode=Mode.NwkFormation, RemainingModes=Mode.NwkFormation))
            self.link.later(self.formation_delay,
                        c.ZDO.StateChangeInd.Callback(State=t.DeviceState.StartedAsCoordinator),
                        c.AppConfig.BDBCommissioningNotification.Callback(
                            Status=Status.Success, Mode=Mode.NwkFormation, RemainingModes=Mode.NONE),
                        then=self._form)
        return c.AppConfig.BDBStartCommissioning.Rsp(Status=t.Status.SUCCESS)

    def _form(self) -> None:
        channels = [ch for ch in range(11, 27) if self._primary_channels & t.Channels.from_channel_list([ch])]
        channel = channels[0] if channels else 11
        pan_id = t.uint16_t.deserialize(self.nv.read(OsalNvIds.PANID))[0]
        if pan_id in (0xFFFF, 0xFFFE):
            pan_id = int.from_bytes(os.urandom(2), "little") % 0xFFF0 + 1
        epid = self.nv.read(OsalNvIds.APS_USE_EXT_PANID) or bytes(8)
        if epid == bytes(8):
            epid = eui64(self.ieee).serialize()
        key = self.nv.read(OsalNvIds.PRECFGKEY) if self.nv.read(OsalNvIds.PRECFGKEYS_ENABLE) == b"\x01" else None
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
        self.nv.write(OsalNvIds.NIB, nib.serialize(align=ALIGN))
        self.nv.write(OsalNvIds.EXTENDED_PAN_ID, epid)
        self.nv.write(OsalNvIds.BDBNODEISONANETWORK, b"\x01")
        active = t.NwkKeyDesc(KeySeqNum=0, Key=t.KeyData(key)).serialize()
        self.nv.write(OsalNvIds.NWK_ACTIVE_KEY_INFO, active)
        self.nv.write(OsalNvIds.NWK_ALTERN_KEY_INFO, active)
        self.nv.items[(NvSysIds.ZSTACK, ExNvIds.NWK_SEC_MATERIAL_TABLE, 0)] = t.NwkSecMaterialDesc(
            FrameCounter=1, ExtendedPanID=t.EUI64(epid)).serialize(align=ALIGN)
        self._record("formed", pan_id=pan_id, channel=channel)
        self._resume()

    def _resume(self) -> None:
        nib = self.nv.nib()
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
            self.link.later(0, c.ZDO.MgmtPermitJoinRsp.Callback(Src=COORDINATOR_NWK, Status=zdo_t.Status.SUCCESS))
        return c.ZDO.MgmtPermitJoinReq.Rsp(Status=t.Status.SUCCESS)

    def _af_data_request(self, request: c.AF.DataRequestExt.Req):
        if not self.network_up:
            return c.AF.DataRequestExt.Rsp(Status=t.Status.NWK_NOT_PERMITTED)
        address = request.DstAddrModeAddress
        data = bytes(request.Data)
        if request.DstEndpoint == 0:
            if address.mode == t.AddrMode.NWK and address.address == COORDINATOR_NWK:
                self._answer_own_zdo(request.ClusterId, data)
            else:
                self._devices_answer_zdo(address, request.ClusterId, data)
            return c.AF.DataRequestExt.Rsp(Status=t.Status.SUCCESS)
        if address.mode != t.AddrMode.NWK:
            return c.AF.DataRequestExt.Rsp(Status=t.Status.SUCCESS)  # broadcasts/groups: nobody listens
        target = self.network.by_nwk(address.address)
        profile = self.endpoints[request.SrcEndpoint].ProfileId if request.SrcEndpoint in self.endpoints else 0
        ack = bool(request.Options & c.af.TransmitOptions.ACK_REQUEST)
        self._record("af_data_request", nwk=int(address.address), cluster=int(request.ClusterId), profile=profile,
                     src_ep=int(request.SrcEndpoint), dst_ep=int(request.DstEndpoint), ack=ack, data=data,
                     delivered=target is not None)

        def confirm(status: t.Status) -> c.AF.DataConfirm.Callback:
            return c.AF.DataConfirm.Callback(Status=status, Endpoint=request.SrcEndpoint, TSN=request.TSN)

        if target is None:
            self.link.later(0.002, confirm(t.Status.APS_NO_ACK if ack else t.Status.SUCCESS))
            return c.AF.DataRequestExt.Rsp(Status=t.Status.SUCCESS)
        device = target.device

        def deliver() -> None:
            device.deliver(int(request.ClusterId), profile, int(request.SrcEndpoint), int(request.DstEndpoint), data)

        if self.air.conditions.instant:
            asyncio.get_running_loop().call_soon(deliver)
            self.link.later(0.002, confirm(t.Status.SUCCESS))
        else:
            async def carry() -> None:
                arrived = await self.air.unicast(target.hops, deliver, ack=ack)
                failed = t.Status.APS_NO_ACK if ack else t.Status.MAC_NO_ACK
                self.link.send(confirm(t.Status.SUCCESS if arrived else failed))
            self.link.spawn(carry())
        return c.AF.DataRequestExt.Rsp(Status=t.Status.SUCCESS)

    def _devices_answer_zdo(self, address: t.AddrModeAddress, cluster: int, data: bytes) -> None:
        """The joined devices' own stacks answer IEEE_addr_req for their address (how a host learns
        who holds a short address it does not know)."""
        if cluster != zdo_t.ZDOCmd.IEEE_addr_req or len(data) < 3:
            return
        tsn, nwk = data[0], int.from_bytes(data[1:3], "little")
        target = self.network.by_nwk(nwk)
        if target is None or (address.mode == t.AddrMode.NWK and address.address != nwk):
            return
        answer = self._zdo_message(nwk, zdo_t.ZDOCmd.IEEE_addr_rsp, tsn,
                                   [zdo_t.Status.SUCCESS, eui64(target.device.ieee), nwk, None, None, None])
        self._record("ieee_addr_answered", nwk=nwk, ieee=f"{target.device.ieee:016x}")
        if self.air.conditions.instant:
            self.link.later(0.001, answer)
            return

        async def round_trip() -> None:
            if await self.air.broadcast(target.hops, lambda: None):
                await self.air.unicast(target.hops, lambda: self.link.send(answer), ack=False)
        self.link.spawn(round_trip())

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

    def _send_zdo(self, src: int, cluster: int, tsn: int, values: list) -> None:
        self.link.later(0.001, self._zdo_message(src, cluster, tsn, values))

    @staticmethod
    def _zdo_message(src: int, cluster: int, tsn: int, values: list, *,
                     broadcast: bool = False) -> c.ZDO.MsgCbIncoming.Callback:
        """A ZDO frame from ``src`` as Z-Stack hands it to the host."""
        _names, kinds = zdo_t.CLUSTERS[cluster]
        payload = b""
        for kind, value in zip(kinds, values, strict=True):
            if value is None:
                continue
            payload += (value if isinstance(value, kind) else kind(value)).serialize()
        return c.ZDO.MsgCbIncoming.Callback(
            Src=src, IsBroadcast=broadcast, ClusterId=cluster, SecurityUse=0, TSN=tsn,
            MacDst=0xFFFF if broadcast else COORDINATOR_NWK, Data=t.Bytes(payload))

    _tsn = 0

    def _next_tsn(self) -> int:
        self._tsn = (self._tsn + 1) & 0xFF
        return self._tsn
