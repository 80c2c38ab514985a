"""zigpy-znp's ``ControllerApplication`` for the Enecsys network, and the zigpy config it runs with.

- Endpoint 1 is registered with the Enecsys profile 0xC00F (instead of zigpy's ZHA endpoint):
  Z-Stack sends with the source endpoint's profile, so replies go out as 0xC00F like the genuine
  gateway's, and matching frames are delivered even by builds that drop foreign profiles.
- Enecsys frames bypass zigpy's device model: ``packet_received`` takes cluster 0x0057 frames
  starting with 0x57 (zigpy-znp reports the local endpoint's profile, not the frame's, so the
  profile is no criterion) and hands them to :class:`~appliance.zigbee.frames.EnecsysFrames`.
  Enecsys inverters are not Zigbee HA devices, so they are not interviewed; frames from other
  devices are counted and dropped.
"""
from __future__ import annotations

import logging
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


def zigpy_config(settings: Settings, device_path: str, database: Path | None) -> dict[str, Any]:
    """The zigpy configuration for ``[zigbee]`` on the stick at ``device_path``."""
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
