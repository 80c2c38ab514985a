"""zigpy-znp's ``ControllerApplication`` for the Enecsys network, and the zigpy config it runs with.

- Endpoint 1 is registered with the Enecsys profile 0xC00F (instead of zigpy's ZHA endpoint):
  Z-Stack sends with the source endpoint's profile, so replies go out as 0xC00F like the genuine
  gateway's, and matching frames are delivered even by builds that drop foreign profiles.
- Enecsys frames bypass zigpy's device model: ``packet_received`` takes cluster 0x0057 frames
  starting with 0x57 (zigpy-znp reports the local endpoint's profile, not the frame's, so the
  profile is no criterion) and hands them to :class:`~appliance.zigbee.frames.EnecsysFrames`.
  Enecsys inverters are not Zigbee HA devices, so they are not interviewed; frames from other
  devices are counted and dropped.
- Every device that joins goes into zigpy's device table (without an interview): the trust
  center's join indication and the device's announce give its short address and IEEE, and
  that table tells who sent a frame. A frame from a short address the table does not know
  waits (at most SENDER_LOOKUP_SECONDS) while the network is asked who holds it (ZDO
  IEEE_addr_req, which every Zigbee stack answers): after a restart of the service, inverters
  that stayed joined are recognised again this way.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Callable

import zigpy.exceptions
import zigpy.profiles.zgp
import zigpy.types as zt
import zigpy.zdo.types as zdo_t
import zigpy.zgp.types
from zigpy.zcl.clusters.general import GreenPowerProxy
from zigpy_znp.zigbee.application import ControllerApplication

from appliance.protocols import enecsys
from appliance.settings import Settings
from appliance.zigbee.frames import EnecsysFrames, JoinWatch

log = logging.getLogger(__name__)

SENDER_LOOKUP_SECONDS = 3.0


def zigpy_config(settings: Settings, device_path: str, database: Path | None) -> dict[str, Any]:
    """The zigpy configuration for ``[zigbee]`` on the stick at ``device_path``."""
    z = settings.zigbee
    return {
        "device": {"path": device_path},
        "database_path": str(database) if database else None,
        "network": {"pan_id": z.pan_id, "channel": z.channel, "channels": [z.channel],
                    "extended_pan_id": z.extended_pan_id},
        # Nothing on this network is a Zigbee HA device: no OTA (and no OTA providers: zigpy
        # would build its default ones, loading zigpy.ota.providers, ``cli.DEFERRED``), no topology
        # scans, and the network comes from the settings rather than from backups.
        "ota": {"enabled": False, "providers": []},
        "topology_scan_enabled": False,
        "backup_enabled": False,
        "network_validate_settings": False,
    }


class EnecsysApplication(ControllerApplication):
    """zigpy-znp's application with Enecsys frames taken out before zigpy's device model."""

    def __init__(self, config: dict, *, frames: EnecsysFrames, joins: JoinWatch,
                 on_connection_lost: Callable[[Exception | None], None]):
        super().__init__(config)
        self.frames = frames
        self.joins = joins
        self._on_connection_lost = on_connection_lost
        self._lookups: dict[int, asyncio.Future[int]] = {}

    async def register_endpoints(self) -> None:
        """Endpoint 1 speaks the Enecsys profile: Z-Stack sends with the source endpoint's profile
        (so replies go out as 0xC00F, like the genuine gateway's) and delivers frames whose profile
        matches it even on builds that drop the others. Green Power keeps its endpoint for zigpy."""
        await self.add_endpoint(zdo_t.SimpleDescriptor(
            endpoint=enecsys.ENDPOINT, profile=enecsys.PROFILE_ID, device_type=0x0000, device_version=0,
            input_clusters=[enecsys.CLUSTER_ID], output_clusters=[enecsys.CLUSTER_ID]))
        await self.add_endpoint(zdo_t.SimpleDescriptor(
            endpoint=zigpy.zgp.types.GP_ENDPOINT, profile=zigpy.profiles.zgp.PROFILE_ID,
            device_type=zigpy.profiles.zgp.DeviceType.COMBO_BASIC, device_version=0,
            input_clusters=[GreenPowerProxy.cluster_id], output_clusters=[GreenPowerProxy.cluster_id]))

    def packet_received(self, packet: zt.ZigbeePacket) -> None:
        if packet.dst_ep == 0 or packet.src_ep == 0:
            self._zdo_received(packet)
            return
        data = packet.data.serialize()
        if packet.cluster_id != enecsys.CLUSTER_ID or data[:1] != b"\x57":
            self.frames.ignore(f"cluster 0x{packet.cluster_id:04x} from {packet.src}")
            return
        if packet.src.addr_mode != zt.AddrMode.NWK:
            self.frames.ignore(f"Enecsys-looking frame from {packet.src}")
            return
        self.create_task(self._enecsys_frame(packet.src.address, data, time.time()), "enecsys-frame")

    async def _enecsys_frame(self, nwk: int, data: bytes, received_at: float) -> None:
        sender = await self.sender_ieee(nwk)
        await self.frames.frame(nwk, data, sender, self.gateway_ieee, self.send_enecsys, received_at)

    def _zdo_received(self, packet: zt.ZigbeePacket) -> None:
        """ZDO from the coordinator itself goes to zigpy; from the devices only what says who they
        are (announces, address responses) matters: no interviews, no hunts for unknown senders."""
        if packet.src.addr_mode == zt.AddrMode.NWK and packet.src.address == self.state.node_info.nwk:
            super().packet_received(packet)
        else:
            self._maybe_parse_zdo(packet)

    async def sender_ieee(self, nwk: int) -> int | None:
        """The IEEE of the device at short address ``nwk``, from zigpy's device table or else from
        the network; None if nobody answers in time."""
        known = self._ieee_at(nwk)
        if known is not None:
            return known
        lookup = self._lookups.get(nwk)
        if lookup is None:
            lookup = self._lookups[nwk] = asyncio.get_running_loop().create_future()
            self.create_task(self._ask_who_has(nwk), f"ieee-lookup-0x{nwk:04x}")
        try:
            return await asyncio.wait_for(asyncio.shield(lookup), SENDER_LOOKUP_SECONDS)
        except TimeoutError:
            if self._lookups.get(nwk) is lookup:
                del self._lookups[nwk]
            return None

    async def _ask_who_has(self, nwk: int) -> None:
        log.info("a frame came from 0x%04x, which is not on the device list: asking the network", nwk)
        try:
            await self._discover_unknown_device(zt.NWK(nwk))
        except (zigpy.exceptions.ZigbeeException, TimeoutError) as exc:
            log.warning("cannot ask who 0x%04x is: %s", nwk, exc)

    def _ieee_at(self, nwk: int) -> int | None:
        try:
            device = self.get_device(nwk=zt.NWK(nwk))
        except KeyError:
            return None
        return _ieee_int(device.ieee)

    @property
    def gateway_ieee(self) -> bytes:
        return bytes(self.state.node_info.ieee.serialize())

    async def send_enecsys(self, nwk: int, data: bytes) -> None:
        """APS unicast, profile 0xC00F, cluster 0x0057, endpoint 1 -> 1, APS ACK requested."""
        try:
            await self.send_packet(zt.ZigbeePacket(
                src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=self.state.node_info.nwk),
                src_ep=enecsys.ENDPOINT,
                dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=nwk),
                dst_ep=enecsys.ENDPOINT,
                tsn=self.get_sequence(),
                profile_id=enecsys.PROFILE_ID,
                cluster_id=enecsys.CLUSTER_ID,
                data=zt.SerializableBytes(data),
                tx_options=zt.TransmitOptions.ACK,
                radius=0,
            ))
        except (zigpy.exceptions.DeliveryError, TimeoutError) as exc:
            log.warning("handshake reply to 0x%04x not delivered: %s", nwk, exc)

    def handle_join(self, nwk, ieee, parent_nwk, *, handle_rejoin: bool = True) -> None:
        """Note who holds ``nwk`` (without zigpy's interview: nothing here is a Zigbee HA device)."""
        ieee, nwk = zt.EUI64(ieee), zt.NWK(nwk)
        if ieee == self.state.node_info.ieee:
            return
        for other in self.devices.values():  # an address a device held before it left is the newcomer's now
            if other.nwk == nwk and other.ieee not in (ieee, self.state.node_info.ieee):
                other.nwk = zt.NWK(0xFFFE)
        try:
            device = self.get_device(ieee=ieee)
        except KeyError:
            device = self.add_device(ieee, nwk)
            moved = True
        else:
            moved = device.nwk != nwk
            device.nwk = nwk
        value = _ieee_int(ieee)
        if moved:
            if enecsys.ieee_to_serial(value) is not None:
                log.info("inverter %s joined (0x%04x)", enecsys.serial_text(value), nwk)
            else:
                log.info("a non-Enecsys device %s joined (0x%04x): its frames will be ignored", ieee, nwk)
        lookup = self._lookups.pop(int(nwk), None)
        if lookup is not None and not lookup.done():
            lookup.set_result(value)

    def on_zdo_tc_device_join(self, msg) -> None:
        """The trust center says who joined at which address: noted at once (zigpy-znp itself
        waits a few seconds for the announce), then zigpy-znp's own handling."""
        ieee = _ieee_int(msg.SrcIEEE)
        if enecsys.ieee_to_serial(ieee) is not None:
            self.joins.joined(ieee)
        self.handle_join(nwk=msg.SrcNwk, ieee=msg.SrcIEEE, parent_nwk=msg.ParentNwk)
        super().on_zdo_tc_device_join(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._on_connection_lost(exc)


def _ieee_int(ieee: zt.EUI64) -> int:
    return int.from_bytes(bytes(zt.EUI64(ieee).serialize()), "little")
