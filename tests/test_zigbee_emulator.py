"""The emulated Z-Stack coordinator: raw ZNP frames, zigpy-znp against it, and the inverters behind it."""
from __future__ import annotations

import asyncio
import struct
import time

import pytest
import zigpy_znp.commands as c
import zigpy_znp.types as t
from zigpy_znp.api import ZNP
from zigpy_znp.frames import GeneralFrame, TransportFrame
from zigpy_znp.types.nvids import OsalNvIds
from zigpy_znp.zigbee.application import ControllerApplication

from appliance.protocols import enecsys
from appliance.sim.enecsys_inverters import EnecsysInverter, ForeignDevice
from appliance.sim.sun import SimClock
from appliance.sim.zstack.coordinator import DEFAULT_TC_LINK_KEY, CoordinatorEmulator
from appliance.zigbee.application import EnecsysApplication

pytestmark = pytest.mark.slow  # starts the ZNP emulator


async def until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def frame(command) -> bytes:
    return TransportFrame(command.to_frame(align=True)).serialize()


async def exchange(reader, writer, data: bytes, count: int = 1) -> list[GeneralFrame]:
    writer.write(data)
    await writer.drain()
    buffer, frames = b"", []
    while len(frames) < count:
        buffer += await asyncio.wait_for(reader.read(4096), 2)
        while buffer:
            try:
                parsed, buffer = TransportFrame.deserialize(buffer)
            except Exception:
                break
            frames.append(parsed.payload)
    return frames


def app_config(url: str, pan_id: int = 0x02AA, channel: int = 13) -> dict:
    return {"device": {"path": url},
            "network": {"pan_id": pan_id, "channel": channel, "extended_pan_id": "d3:73:39:d4:cb:1c:60:bb"},
            "ota": {"enabled": False}, "backup_enabled": False, "topology_scan_enabled": False,
            "network_validate_settings": False}


def test_raw_frames_ping_version_unknown_and_garbage():
    async def scenario():
        emu = CoordinatorEmulator()
        await emu.start()
        reader, writer = await asyncio.open_connection(emu.host, emu.port)
        # garbage and a frame with a bad FCS are skipped; the following ping is answered
        bad = bytearray(frame(c.SYS.Ping.Req()))
        bad[-1] ^= 0xFF
        (rsp,) = await exchange(reader, writer, b"\x00\x13\x37" + bytes(bad) + frame(c.SYS.Ping.Req()))
        ping = c.SYS.Ping.Rsp.from_frame(rsp)
        assert ping.Capabilities & t.MTCapabilities.APP_CNF
        (rsp,) = await exchange(reader, writer, frame(c.SYS.Version.Req()))
        version = c.SYS.Version.Rsp.from_frame(rsp)
        assert (version.MajorRel, version.MinorRel, version.CodeRevision) == (2, 7, 20220219)
        # a request Z-Stack does not implement gets RPCError.CommandNotRecognized, like a real stick
        (rsp,) = await exchange(reader, writer, frame(c.SYS.GetTime.Req()))
        error = c.RPCError.CommandNotRecognized.Rsp.from_frame(rsp)
        assert error.RequestHeader == c.SYS.GetTime.Req.header
        writer.close()
        await emu.stop()

    asyncio.run(scenario())


def test_zigpy_znp_forms_the_requested_network_then_resumes_it():
    async def scenario():
        emu = CoordinatorEmulator()
        await emu.start()
        app = ControllerApplication(app_config(emu.url, channel=13))
        await app.startup(auto_form=True)
        assert (app.state.network_info.pan_id, app.state.network_info.channel) == (0x02AA, 13)
        assert (emu.pan_id, emu.channel, emu.network_up) == (0x02AA, 13, True)
        nib = emu.nv.nib()
        assert nib.nwkPanId == 0x02AA and nib.nwkLogicalChannel == 13
        assert str(nib.extendedPANID) == "d3:73:39:d4:cb:1c:60:bb"
        assert app.state.node_info.version == "Z-Stack 20220219"
        assert sorted(emu.endpoints) == [1, 2, 242]
        await app.permit(60)
        assert emu.permit_join
        await app.shutdown()
        formed = len(emu.events_named("formed"))

        app = ControllerApplication(app_config(emu.url, channel=13))
        await app.startup(auto_form=True)  # the stick keeps its NV: no second formation
        assert len(emu.events_named("formed")) == formed == 1
        assert emu.network_up and emu.pan_id == 0x02AA
        assert not emu.permit_join  # zigpy closes joins at start-up, a reset clears them too
        await app.shutdown()
        await emu.stop()

    asyncio.run(scenario())


def test_stack_profile_takes_effect_at_the_next_reset_and_formation_restores_it():
    async def scenario():
        emu = CoordinatorEmulator()
        await emu.start()
        assert emu.nv.read(OsalNvIds.STACK_PROFILE) == b"\x02" and emu.stack_profile == 2
        znp = ZNP(ControllerApplication.SCHEMA(app_config(emu.url)))
        await znp.connect()
        assert znp.version == 3.30  # the extended NV tables of Z-Stack 3.x.0 on CC26x2
        assert await znp.nvram.osal_read(OsalNvIds.STACK_PROFILE, item_type=t.uint8_t) == 2
        await znp.nvram.osal_write(OsalNvIds.STACK_PROFILE, t.uint8_t(0))
        assert emu.nv.read(OsalNvIds.STACK_PROFILE) == b"\x00"
        assert emu.stack_profile == 2  # not until the stick restarts
        await znp.reset()
        assert emu.stack_profile == 0
        # a factory reset (what forming a network starts with) brings the default back
        await znp.nvram.osal_write(OsalNvIds.STARTUP_OPTION,
                                   t.StartupOptions.ClearState | t.StartupOptions.ClearConfig)
        await znp.reset()
        assert emu.nv.read(OsalNvIds.STACK_PROFILE) == b"\x02" and emu.stack_profile == 2
        assert emu.nv.read(OsalNvIds.EXTADDR) is not None
        # the TC link key is a build-time constant: no NV item holds it
        assert enecsys_key_not_in_nv(emu)
        await znp.disconnect()
        await emu.stop()

    asyncio.run(scenario())


def enecsys_key_not_in_nv(emu: CoordinatorEmulator) -> bool:
    return all(emu.tc_link_key not in value for value in emu.nv.values())


class EnecsysEndpointApp(ControllerApplication):
    """A bare zigpy-znp application whose endpoint 1 has the Enecsys profile, as the service's."""

    register_endpoints = EnecsysApplication.register_endpoints


async def started_network(emu: CoordinatorEmulator, *, pan_id: int = 0x02AA, stack_profile: int = 0):
    app = ControllerApplication(app_config(emu.url, pan_id=pan_id))
    await app.startup(auto_form=True)
    emu.nv.write(OsalNvIds.STACK_PROFILE, bytes([stack_profile]))
    await app.shutdown()
    app = EnecsysEndpointApp(app_config(emu.url, pan_id=pan_id))
    await app.startup(auto_form=True)  # its reset puts the stack profile in effect
    await app.permit(60)
    return app


def test_inverter_needs_pan_02aa_and_stack_profile_0():
    async def scenario():
        emu = CoordinatorEmulator()
        await emu.start()
        app = await started_network(emu, stack_profile=2)
        inverter = EnecsysInverter(emu, 100095471, retry_delay=0.1, handshake_timeout=0.3)
        inverter.start()
        await asyncio.sleep(0.5)
        assert inverter.stats.joins == 0 and not emu.events_named("tc_device_join")
        await app.shutdown()
        await inverter.stop()
        await emu.stop()

    asyncio.run(scenario())


def answer_handshakes(app):
    """Make a bare zigpy-znp application answer handshake requests (what the service does).
    Returns the list the received cluster-0x0057 frames go to, and the coroutine that sends."""
    import zigpy.types as zt

    frames: list[bytes] = []

    async def send(nwk, data):
        await app.send_packet(zt.ZigbeePacket(
            src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=0), src_ep=1,
            dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=nwk), dst_ep=1, tsn=app.get_sequence(),
            profile_id=0xC00F, cluster_id=0x0057, data=zt.SerializableBytes(data),
            tx_options=zt.TransmitOptions.ACK, radius=0))

    def receive(packet):
        if packet.cluster_id != 0x0057:
            return
        data = packet.data.serialize()
        frames.append(data)
        if enecsys.classify(data) == enecsys.FrameKind.HANDSHAKE_REQUEST:
            app.create_task(send(packet.src.address, enecsys.handshake_reply("00124b0029abcdef")))

    app.packet_received = receive
    return frames, send


def test_inverters_are_silent_at_night():
    async def scenario():
        emu = CoordinatorEmulator()
        await emu.start()
        app = await started_network(emu)
        answer_handshakes(app)
        night = EnecsysInverter(emu, 100095471, retry_delay=0.05, clock=SimClock.at(2))
        dusk = EnecsysInverter(emu, 100012445, interval=0.05, retry_delay=0.05, clock=SimClock.at(12))
        night.start()
        dusk.start()
        await until(lambda: dusk.stats.reports_sent >= 2, 5, "reports in daylight")
        dusk.clock = SimClock.at(21)  # after sunset
        await until(lambda: not dusk.reporting, 2, "the radio to go dark")
        await asyncio.sleep(0.3)
        assert night.stats.joins == 0 and len(emu.events_named("tc_device_join")) == 1  # dusk's only
        assert dusk.stats.joins == dusk.stats.handshake_replies == 1 and dusk.stats.handshake_timeouts == 0
        assert emu.nwk_of(dusk) is None
        assert any(e.detail["ieee"] == f"{dusk.ieee:016x}" for e in emu.events_named("leave"))
        await night.stop()
        await dusk.stop()
        await app.shutdown()
        await emu.stop()

    asyncio.run(scenario())


def test_unanswered_inverter_leaves_and_retries_and_foreign_device_frames_reach_the_host():
    async def scenario():
        emu = CoordinatorEmulator()
        await emu.start()
        app = await started_network(emu)
        received = []
        app.packet_received = received.append  # the host side: see what the stick delivers
        inverter = EnecsysInverter(emu, 100095471, retry_delay=0.1, handshake_timeout=0.2)
        inverter.start()
        await until(lambda: inverter.stats.handshake_timeouts >= 2, 5, "two unanswered handshakes")
        assert inverter.stats.handshake_replies == 0 and not inverter.reporting
        assert len(emu.events_named("leave")) >= 2
        requests = [p for p in received if p.cluster_id == 0x0057]
        assert requests and enecsys.classify(requests[0].data.serialize()) == enecsys.FrameKind.HANDSHAKE_REQUEST
        assert requests[0].profile_id == 0xC00F  # zigpy-znp reports the local endpoint's profile
        await inverter.stop()

        foreign = ForeignDevice(emu)
        assert foreign.join() is not None
        assert foreign.send_zcl() and foreign.send_on_enecsys_cluster()
        await until(lambda: any(p.cluster_id == 0x0006 for p in received), 2, "the ZCL frame")
        emu.forward_foreign_profiles = False  # stock Z-Stack drops frames whose profile is not the endpoint's
        assert not foreign.send_zcl() and foreign.send_on_enecsys_cluster()
        await app.shutdown()
        await emu.stop()

    asyncio.run(scenario())


def test_wrong_trust_center_key_fails_after_the_tc_indication():
    async def scenario():
        emu = CoordinatorEmulator(tc_link_key=DEFAULT_TC_LINK_KEY)
        await emu.start()
        app = await started_network(emu)
        inverter = EnecsysInverter(emu, 100048590, retry_delay=0.1)
        inverter.start()
        await until(lambda: inverter.stats.failed_joins >= 2, 3, "failed joins")
        assert emu.events_named("tc_device_join") and emu.events_named("key_exchange_failed")
        assert inverter.stats.handshake_requests == 0 and emu.joined_ieees() == []
        await inverter.stop()
        await app.shutdown()
        await emu.stop()

    asyncio.run(scenario())


def test_answered_inverter_reports_and_unicast_to_a_vanished_device_is_not_acked():
    async def scenario():
        emu = CoordinatorEmulator()
        await emu.start()
        app = await started_network(emu)
        frames, send = answer_handshakes(app)
        inverter = EnecsysInverter(emu, 100095471, interval=0.05, clock=SimClock.at(12),
                                     alarm_probability=0)
        inverter.start()
        await until(lambda: inverter.stats.reports_sent >= 3, 5, "reports")
        kinds = [enecsys.classify(f) for f in frames]
        assert kinds[:3] == [enecsys.FrameKind.HANDSHAKE_REQUEST, enecsys.FrameKind.HANDSHAKE_FOLLOW_UP,
                             enecsys.FrameKind.HANDSHAKE_FOLLOW_UP]
        readings = [enecsys.decode(f, received_at=0) for f in frames[3:]]
        assert readings[0].kind == "info" and readings[0].fields["model_string"] == "WSI-00003"
        reports = [r for r in readings if r.kind == "report"]
        assert all(r.checksum_ok for r in readings) and reports[0].fields["ac_power_w"] > 0
        lifetimes = [r.fields["lifetime_wh"] for r in reports]
        assert lifetimes == sorted(lifetimes)
        replies = [e for e in emu.events_named("af_data_request") if e.detail["cluster"] == 0x0057]
        assert replies and replies[0].detail["delivered"]
        await inverter.stop()

        import zigpy.exceptions
        with pytest.raises(zigpy.exceptions.DeliveryError):
            await send(0x4321, b"\x57\x01")  # nobody has that address: APS ACK never comes
        await app.shutdown()
        await emu.stop()

    asyncio.run(scenario())


async def device_and_network_info(emu: CoordinatorEmulator) -> tuple[c.UTIL.GetDeviceInfo.Rsp, tuple]:
    """Ask over a fresh host link; ZDO.ExtNwkInfo is decoded by the firmware's 24-byte layout."""
    reader, writer = await asyncio.open_connection(emu.host, emu.port)
    try:
        (info,) = await exchange(reader, writer, frame(c.UTIL.GetDeviceInfo.Req()))
        (nwk,) = await exchange(reader, writer, frame(c.ZDO.ExtNwkInfo.Req()))
    finally:
        writer.close()
    assert nwk.header == c.ZDO.ExtNwkInfo.Rsp.header and len(nwk.data) == 24
    short, state, pan_id, parent, epid, parent_ieee, channel = struct.unpack("<HBHH8s8sB", nwk.data)
    fields = (short, t.DeviceState(state), pan_id, parent, str(t.EUI64(epid)), str(t.EUI64(parent_ieee)), channel)
    return c.UTIL.GetDeviceInfo.Rsp.from_frame(info, align=True), fields


def test_device_info_and_network_info_follow_the_network_state():
    async def scenario():
        emu = CoordinatorEmulator()
        await emu.start()
        info, nwk = await device_and_network_info(emu)
        assert (info.Status, info.DeviceState, info.NWK) == (t.Status.SUCCESS, t.DeviceState.InitializedNotStarted,
                                                             0xFFFE)
        assert str(info.IEEE) == "00:12:4b:00:29:ab:cd:ef" and info.DeviceType & t.DeviceTypeCapabilities.Coordinator
        zero = "00:00:00:00:00:00:00:00"
        assert nwk == (0xFFFE, t.DeviceState.InitializedNotStarted, 0xFFFF, 0x0000, zero, zero, 0)

        app = ControllerApplication(app_config(emu.url, channel=13))
        app.connection_lost = lambda exc: None  # the raw link below replaces zigpy's: no reconnect
        await app.startup(auto_form=True)
        info, nwk = await device_and_network_info(emu)
        assert (info.DeviceState, info.NWK, str(info.IEEE)) == (
            t.DeviceState.StartedAsCoordinator, 0x0000, "00:12:4b:00:29:ab:cd:ef")
        assert info.AssociatedDevices == []
        assert nwk == (0x0000, t.DeviceState.StartedAsCoordinator, 0x02AA, 0x0000, "d3:73:39:d4:cb:1c:60:bb", zero,
                       13)
        await app.shutdown()

        znp = ZNP(ControllerApplication.SCHEMA(app_config(emu.url)))
        await znp.connect()
        await znp.reset()  # a reset holds the network until the host starts it again
        await znp.disconnect()
        info, nwk = await device_and_network_info(emu)
        assert (info.DeviceState, info.NWK) == (t.DeviceState.InitializedNotStarted, 0xFFFE)
        assert nwk[:3] == (0xFFFE, t.DeviceState.InitializedNotStarted, 0xFFFF)
        await emu.stop()

    asyncio.run(scenario())


def test_drop_connections_cuts_the_host_link():
    async def scenario():
        emu = CoordinatorEmulator()
        await emu.start()
        lost = asyncio.Event()
        app = ControllerApplication(app_config(emu.url))
        app.connection_lost = lambda exc: lost.set()
        await app.startup(auto_form=True)
        assert emu.host_connected
        emu.drop_connections()
        await asyncio.wait_for(lost.wait(), 5)
        assert not emu.host_connected and emu.network_up  # the stick itself keeps running
        await app.shutdown()
        await emu.stop()

    asyncio.run(scenario())
