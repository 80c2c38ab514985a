"""The emulated Z-Stack coordinator: raw ZNP frames, zigpy-znp against it, and the inverters behind it."""
from __future__ import annotations

import asyncio
import json
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
from appliance.sim.replay import CaptureError, CapturedFrame, Replay, by_inverter, load_capture, reply_differences
from appliance.sim.sun import SimClock
from appliance.sim.zstack.air import Air, RadioConditions
from appliance.sim.zstack.coordinator import DEFAULT_TC_LINK_KEY, CoordinatorEmulator
from appliance.sim.zstack.network import Network
from appliance.zigbee.application import EnecsysApplication
from vectors import CAPTURE_JOIN

pytestmark = pytest.mark.slow  # starts the ZNP emulator


async def until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def captured_frames() -> list[tuple[str, bytes]]:
    return [(f["from"], bytes.fromhex(f["hex"])) for f in json.loads(CAPTURE_JOIN.read_text())["frames"]]


def shape(data: bytes) -> tuple:
    """What a frame is, without its values: the handshake step, or kind, channel and counter."""
    if data[:2] == enecsys.TYPE_HANDSHAKE:
        return ("handshake", enecsys.decode_handshake(data).step)
    reading = enecsys.decode(data, received_at=0)
    return (reading.kind, reading.fields["channel"], reading.fields["counter"])


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
        inverter = EnecsysInverter(emu, 100095471, interval=0.05, clock=SimClock.at(12), alarm_probability=0)
        inverter.start()
        await until(lambda: inverter.stats.reports_sent >= 4, 5, "reports")
        # what the real inverter sent in the capture, in the same order (counters restart at the join)
        captured = [data for sender, data in captured_frames() if sender == "inverter"]
        assert [shape(f) for f in frames[:9]] == [shape(f) for f in captured[:9]]
        assert frames[:3] == captured[:3]  # request, confirm and ready: byte for byte
        readings = [enecsys.decode(f, received_at=0) for f in frames if f[:2] == enecsys.TYPE_REPORT]
        assert readings[0].kind == "info" and readings[0].fields["model_string"] == "WSI-00003"
        assert [r.fields["alarm_code"] for r in readings[1:4]] == [0x1005, 0x1001, 0x1000]  # the start-up
        reports = [r for r in readings[4:] if r.kind == "report"]
        assert all(r.checksum_ok for r in readings) and reports[0].fields["ac_power_w"] > 0
        assert [r.fields["counter"] for r in reports] == list(range(1, len(reports) + 1))
        assert any(shape(f) == ("short", 2, 3) for f in frames)  # the short frames count on channel 2
        assert frames.count(captured[2]) >= 3  # and ready comes again
        lifetimes = [r.fields["lifetime_wh"] for r in readings[1:] if r.kind != "short"]
        assert lifetimes == sorted(lifetimes)
        await inverter.stop()
        await until(lambda: len(frames) == emu.air.stats.aps_acks, 5, "every frame the stick acknowledged")
        replies = [e for e in emu.events_named("af_data_request") if e.detail["cluster"] == 0x0057]
        assert replies and replies[0].detail["delivered"]

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


class Device:
    """A bare device on the air: it only needs an IEEE and somewhere to put what it receives."""

    def __init__(self, ieee: int):
        self.ieee = ieee

    def deliver(self, cluster, profile, src_ep, dst_ep, data) -> None:
        pass


def test_short_addresses_are_random_unique_and_never_a_live_one():
    network = Network(seed=7)
    devices = [Device(0x34C69A0000000000 + n) for n in range(250)]
    placed = [network.place(device, 0x8E) for device in devices]
    addresses = [joined.nwk for joined in placed]
    assert len(set(addresses)) == 250 and all(0x0001 <= a <= 0xFFF7 for a in addresses)
    assert sorted(addresses) != addresses  # stochastic, not a sequence
    assert network.place(devices[0], 0x8E).nwk == addresses[0]  # joining again while joined: same address
    for device in devices[:100]:  # they leave; 300 newcomers never get an address a joined device holds
        network.remove(device.ieee)
    for n in range(300):
        live = {j.nwk for j in network.by_ieee.values()}
        newcomer = network.place(Device(0x00158D0000000000 + n), 0x8E)
        assert newcomer.nwk not in live | {0x0000}
    assert len({j.nwk for j in network.by_ieee.values()}) == len(network.by_ieee) == 450


def test_child_tables_fill_up_then_joins_go_through_routers_or_are_refused():
    async def scenario():
        emu = CoordinatorEmulator(radio=RadioConditions(max_children=2, router_max_children=1))
        await emu.start()
        app = await started_network(emu)
        devices = [Device(0x34C69A0000000000 + n) for n in range(5)]
        for device in devices:
            assert emu.associate(device, enecsys.TC_LINK_KEY) is not None
        joined = [emu.network.get(d.ieee) for d in devices]
        assert [j.hops for j in joined] == [1, 1, 2, 2, 3]  # two on the stick, one under each inverter...
        assert joined[2].parent in (joined[0].nwk, joined[1].nwk) and joined[4].parent in (joined[2].nwk,
                                                                                           joined[3].nwk)
        joins = emu.events_named("tc_device_join")
        assert [e.detail["parent"] for e in joins] == [j.parent for j in joined]
        # an end device (not a router) takes no children: with no room left, the join is refused
        full = CoordinatorEmulator(radio=RadioConditions(max_children=1, router_max_children=0))
        await full.start()
        other = await started_network(full)
        assert full.associate(Device(1), enecsys.TC_LINK_KEY) is not None
        assert full.associate(Device(2), enecsys.TC_LINK_KEY) is None
        assert full.events_named("association_refused")[0].detail["ieee"] == f"{2:016x}"
        await other.shutdown()
        await full.stop()
        await app.shutdown()
        await emu.stop()

    asyncio.run(scenario())


def test_the_radio_delays_loses_and_aps_retries_frames_and_delivers_each_once():
    async def scenario():
        air = Air(RadioConditions(hop_delay=0.005, hop_jitter=0.005, loss=0.1, aps_ack_wait=0.03, seed=3))
        arrived: list[int] = []
        started = time.monotonic()
        acked = [await air.unicast(2, lambda n=n: arrived.append(n)) for n in range(40)]
        elapsed = time.monotonic() - started
        assert arrived == sorted(set(arrived))  # once each, however often it was sent
        assert all(n in arrived for n, ok in enumerate(acked) if ok)
        assert air.stats.lost > 0 and air.stats.aps_retries > 0 and sum(acked) >= 36
        assert elapsed >= sum(acked) * 2 * 2 * 0.005  # two hops out and two back, 5 ms each at least
        # nothing gets through: one try and three retries, an ACK wait apart, then the sender gives up
        dead = Air(RadioConditions(loss=0.999999, aps_ack_wait=0.02))
        started = time.monotonic()
        assert not await dead.unicast(1, lambda: arrived.append(-1))
        assert time.monotonic() - started >= 4 * 0.02 and -1 not in arrived
        assert (dead.stats.aps_retries, dead.stats.aps_failures) == (3, 1)
        # a broadcast goes out three times; the first copy that arrives counts
        copies = Air(RadioConditions(loss=0.5, seed=5))
        heard: list[int] = []
        results = [await copies.broadcast(1, lambda: heard.append(1)) for _ in range(50)]
        assert len(heard) == sum(results) >= 40 and copies.stats.transmissions > 50

    asyncio.run(scenario())


def test_on_a_realistic_radio_frames_take_time_and_arrive_in_order():
    async def scenario():
        radio = RadioConditions(hop_delay=0.010, hop_jitter=0.030, loss=0.05, aps_ack_wait=0.2, seed=11)
        emu = CoordinatorEmulator(radio=radio)
        await emu.start()
        app = await started_network(emu)
        frames, _send = answer_handshakes(app)
        inverter = EnecsysInverter(emu, 100095471, interval=0.2, clock=SimClock.at(12), alarm_probability=0)
        inverter.start()
        await until(lambda: len(frames) >= 12, 15, "reports over the radio")
        [latency] = inverter.stats.handshake_latencies
        assert latency >= 2 * radio.hop_delay  # request up, reply down
        captured = [data for sender, data in captured_frames() if sender == "inverter"]
        assert [shape(f) for f in frames[:9]] == [shape(f) for f in captured[:9]]  # in order, none twice
        others = [f for f in frames if f != captured[2]]  # all but the repeated ready frame: each once
        assert len(others) == len(set(others)) and emu.air.stats.transmissions > len(frames)
        await inverter.stop()
        await app.shutdown()
        await emu.stop()

    asyncio.run(scenario())


def rekeyed(frames: list[CapturedFrame], serial: int, nwk: int, later: float) -> list[CapturedFrame]:
    """The capture's inverter as another one: its IEEE and serial replaced, checksums made right."""
    old, new = 100095471, serial
    swaps = [(enecsys.ieee_to_frame(enecsys.serial_to_ieee(old)), enecsys.ieee_to_frame(enecsys.serial_to_ieee(new))),
             (old.to_bytes(4, "big"), new.to_bytes(4, "big"))]

    def swap(data: bytes) -> bytes:
        body = data[:-1]
        for before, after in swaps:
            body = body.replace(before, after)
        return enecsys.with_checksum(body)

    return [CapturedFrame(f.t + later, f.sender, nwk, swap(f.data) if f.sender == "inverter" else f.data)
            for f in frames]


def test_a_replayed_capture_is_answered_and_compared_inverter_by_inverter():
    async def scenario():
        emu = CoordinatorEmulator()
        await emu.start()
        app = await started_network(emu)
        received, _send = answer_handshakes(app)
        frames = load_capture(CAPTURE_JOIN)
        two = sorted(frames + rekeyed(frames, 100012445, 0x1234, later=0.5), key=lambda f: f.t)
        replay = Replay(emu, two, speed=40, grace=0.2)
        assert await replay.run() == []
        first, second = replay.inverters
        assert (first.ieee, second.ieee) == (0x34C69A0005F755EF, enecsys.serial_to_ieee(100012445))
        assert (first.sent, first.replies_compared) == (second.sent, second.replies_compared) == (11, 1)
        assert emu.network.by_nwk(first.nwk).device is first and emu.network.by_nwk(second.nwk).device is second
        assert len(received) == 22 and sorted(received) == sorted(f.data for f in two if f.sender == "inverter")
        assert len(emu.events_named("tc_device_join")) == 2  # each associated and announced itself

        # a service that answers wrongly, and says more than the gateway did
        def receive(packet) -> None:
            data = packet.data.serialize()
            if enecsys.classify(data) == enecsys.FrameKind.HANDSHAKE_REQUEST:
                wrong = enecsys.with_checksum(enecsys.handshake_reply(emu.ieee)[:-3] + b"\x03\x00")
                app.create_task(_send(packet.src.address, wrong))
                app.create_task(_send(packet.src.address, enecsys.handshake_reply(emu.ieee)))

        app.packet_received = receive
        mismatches = await Replay(emu, frames, speed=40, grace=0.2).run()
        assert len(mismatches) == 2, mismatches
        assert "t=0.019084 s: byte 16: 03 (gateway 02)" in mismatches[0]
        assert "where the gateway sent nothing" in mismatches[1]
        await app.shutdown()
        await emu.stop()

    asyncio.run(scenario())


def test_reply_differences_ignore_only_the_gateway_ieee_and_the_varying_bytes():
    genuine = bytes.fromhex("570195b4307a009ac634020132414a00020008")
    stick = 0x00124B0029ABCDEF
    for variant in enecsys.REPLY_VARIANTS:
        assert reply_differences(genuine, enecsys.handshake_reply(stick, variant), stick) == []
    assert reply_differences(genuine, genuine, stick) == [
        "it carries IEEE 34c69a007a30b495, not the stick's 00124b0029abcdef"]
    short = enecsys.with_checksum(enecsys.handshake_reply(stick)[:-2])
    assert any("18 bytes where the gateway sent 19" in p for p in reply_differences(genuine, short, stick))
    bad = bytearray(enecsys.handshake_reply(stick))
    bad[-1] ^= 1
    assert reply_differences(genuine, bytes(bad), stick) == ["its checksum is wrong"]
    with pytest.raises(CaptureError, match="goes to 0x0001, which sent nothing before"):
        by_inverter([CapturedFrame(0.0, "gateway", 1, genuine)])
