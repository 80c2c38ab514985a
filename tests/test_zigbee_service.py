"""The Zigbee service end to end: the real service (zigpy-znp) against the emulated coordinator,
simulated Enecsys inverters, the real store and a real mosquitto."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import tomli_w
from zigpy_znp.types.nvids import OsalNvIds

from appliance.mqtt import make_publisher
from appliance.protocols import enecsys
from appliance.settings import from_dict
from appliance.sim.enecsys_inverters import ForeignDevice, InverterFleet
from appliance.sim.sun import SimClock
from appliance.sim.zstack.air import RadioConditions
from appliance.sim.zstack.coordinator import DEFAULT_TC_LINK_KEY, CoordinatorEmulator, FirmwareVersion
from appliance.store import Store
from appliance.zigbee.service import ZigbeeService
from brokers import free_port, mosquitto
from vectors import CAPTURE_JOIN

SERIALS = [100095471, 100012445, 100048236, 100048590]


async def until(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def service_settings(tmp_path: Path, device: str, broker=None, channel: int = 13):
    data = {
        "data": {"dir": str(tmp_path / "data")},
        "zigbee": {"device": device, "channel": channel, "telemetry_json": str(tmp_path / "telemetry.json")},
        "mqtt": {"enabled": False},
    }
    if broker is not None:
        data["mqtt"] = {"enabled": True, "host": broker.host, "port": broker.port}
    return data


def fleet_for(emu, serials=SERIALS, **options) -> InverterFleet:
    options = {"interval": 0.3, "handshake_timeout": 2.0, "retry_delay": 0.3, "alarm_probability": 0.0,
               "clock": SimClock.at(12), **options}
    return InverterFleet(emu, serials, **options)


@pytest.mark.slow
def test_inverters_handshake_report_to_store_and_mqtt_and_junk_is_counted(tmp_path):
    async def scenario(broker, log):
        emu = CoordinatorEmulator()
        await emu.start()
        settings = from_dict(service_settings(tmp_path, emu.url, broker))
        store = Store.from_settings(settings)
        publisher = make_publisher(settings, service="zigbee")
        service = ZigbeeService(settings, store, publisher, status_seconds=0.2, permit_renew_seconds=1.0)
        fleet = fleet_for(emu)
        fleet.start()
        running = asyncio.create_task(service.run())
        await until(fleet.reporting, 20, "every inverter to get its handshake reply")

        # each inverter got its reply quickly (measured on the inverter's side of the air)
        latencies = fleet.latencies()
        assert len(latencies) == len(SERIALS)
        assert max(latencies) < 0.5, latencies
        assert all(i.stats.handshake_timeouts == 0 for i in fleet.inverters)

        # the network the service asked for, seen from the stick
        assert (emu.pan_id, emu.channel, emu.stack_profile) == (0x02AA, 13, 0)
        assert emu.extended_pan_id == bytes.fromhex("d37339d4cb1c60bb")[::-1]
        assert emu.nv.read(OsalNvIds.STACK_PROFILE) == b"\x00"
        writes = [i for i, e in enumerate(emu.events) if e.name == "nv_write"
                  and e.detail["nvid"] == OsalNvIds.STACK_PROFILE and e.detail["value"] == b"\x00"]
        resets = [i for i, e in enumerate(emu.events) if e.name == "reset"]
        assert writes and any(r > writes[0] for r in resets), "stack profile written, then the stick reset"
        assert emu.permit_join and emu.events_named("permit_join")[-1].detail["duration"] == 254
        # the replies on the air: APS unicast from endpoint 1 with the Enecsys profile, a valid checksum
        replies = [e.detail for e in emu.events_named("af_data_request") if e.detail["cluster"] == 0x0057]
        assert len(replies) == len(SERIALS)
        for reply in replies:
            assert (reply["profile"], reply["src_ep"], reply["dst_ep"], reply["ack"]) == (0xC00F, 1, 1, True)
            assert enecsys.classify(reply["data"]) == enecsys.FrameKind.HANDSHAKE_REPLY
            assert enecsys.checksum_ok(reply["data"]) and reply["data"][2:10] == emu.ieee.to_bytes(8, "little")

        # reports reach the store and the broker (after the start-up reports, 0 W with the start-up alarms)
        def producing() -> bool:
            latest = store.latest()
            return len(latest) == len(SERIALS) and all(
                r.kind == "report" and r.fields["ac_power_w"] > 0 for r in latest.values())

        await until(producing, 10, "a report of every inverter in the store")
        for serial in map(str, SERIALS):
            log.wait(f"solargw/inverter/{serial}/state", lambda m: json.loads(m.payload).get("ac_power_w"), 10)
            assert store.inverter(serial).model == "WSI-00003"

        # junk: a bad checksum and a foreign device's frames are counted and dropped
        before = store.inverter(str(SERIALS[0])).lifetime_wh
        rejected_before = len(store.rejected())
        counters_before = store.counters()

        def counted(name: str) -> int:
            return store.counters().get((name, "enecsys"), 0) - counters_before.get((name, "enecsys"), 0)

        corrupt = fleet.inverters[0].send_corrupt_report()
        truncated = bytes.fromhex("5700ef55f705009ac6342101")
        fleet.inverters[1].send(truncated)
        foreign = ForeignDevice(emu)
        foreign.join()
        foreign.send_zcl()
        foreign.send_on_enecsys_cluster()
        await until(lambda: counted("frames_ignored") >= 2, 5, "ignored frames")
        await until(lambda: len(store.rejected()) > rejected_before, 5, "the rejected frame")
        assert any(r.frame_hex == corrupt.hex() and "checksum" in r.reason for r in store.rejected())
        await until(lambda: any(r.frame_hex == truncated.hex() for r in store.rejected()), 5, "the malformed frame")
        assert counted("frames_ignored") == 2  # the foreign device's two frames, each counted once
        assert counted("packets_rejected") == 2  # the bad checksum and the truncated frame
        assert sorted(store.latest()) == sorted(map(str, SERIALS))  # none of it became a reading
        assert all(latest.frame_hex not in (corrupt.hex(), truncated.hex()) for latest in store.latest().values())
        assert store.inverter(str(SERIALS[0])).lifetime_wh >= before  # nothing went backwards

        # status for the web UI and the seed-compatible telemetry.json
        await until(lambda: len(store.status()["zigbee"][1]["joined_inverters"]) == len(SERIALS), 5, "status")
        status = store.status()["zigbee"][1]
        assert status["connected"] and status["state"] == "running"
        assert status["stick_problems"] == []  # the start-up check found the stick right
        assert (status["pan_id"], status["channel"], status["firmware"]) == ("0x02AA", 13, "Z-Stack 20220219")
        telemetry = json.loads((tmp_path / "telemetry.json").read_text())
        entry = telemetry["ef55f705009ac634"]
        assert entry["serial"] == "100095471" and entry["mac"] == "34c69a0005f755ef"
        assert entry["lifetime_wh"] == entry["kwh"] * 1000 + entry["wh"]
        # permit-join is renewed before it lapses (every second here)
        opened = lambda: [e for e in emu.events_named("permit_join") if e.detail["duration"] == 254]  # noqa: E731
        await until(lambda: len(opened()) >= 3, 5, "permit-join renewals")
        assert emu.events_named("permit_join")[-1].detail["duration"] == 254 and emu.permit_join

        service.stop()
        await asyncio.wait_for(running, 10)
        await fleet.stop()
        await emu.stop()
        publisher.close()

    with mosquitto() as broker, broker.subscribe("solargw/#") as log:
        asyncio.run(scenario(broker, log))


@pytest.mark.slow
def test_no_stick_then_stick_then_dropped_link(tmp_path):
    async def scenario():
        port = free_port()
        settings = from_dict(service_settings(tmp_path, f"socket://127.0.0.1:{port}"))
        store = Store.from_settings(settings)
        service = ZigbeeService(settings, store, status_seconds=0.2, max_backoff=1.0)
        running = asyncio.create_task(service.run())
        # nothing listens yet: the service stays up, says so and retries
        await until(lambda: service.status["state"] == "error" and service.status["reconnects"] >= 1, 10,
                    "a failed connection")
        assert "cannot talk to the stick" in store.status()["zigbee"][1]["last_error"]
        assert not running.done()

        emu = CoordinatorEmulator()
        await emu.start(port=port)
        fleet = fleet_for(emu, SERIALS[:2])
        fleet.start()
        def recorded() -> int:
            return store.counters().get(("readings_recorded", "enecsys"), 0)

        await until(lambda: fleet.reporting() and recorded() > 0, 20, "reports after the stick appeared")
        before = recorded()

        emu.drop_connections()  # the link dies; the stick reset on reconnect makes the inverters rejoin
        await until(lambda: service.status["state"] != "running", 10, "the service to notice")
        await until(lambda: len(emu.events_named("host_connected")) >= 2 and service.status["state"] == "running",
                    15, "the reconnection")
        await until(lambda: sum(i.stats.handshake_replies for i in fleet.inverters) >= 4, 15, "new handshakes")
        await until(lambda: recorded() > before + 2, 10, "new reports")
        assert len(emu.events_named("formed")) == 1  # the network survived: not formed again
        await fleet.stop()
        await emu.stop()

        # a new, blank stick on the same port: formed from the settings, not from zigpy's database
        fresh = CoordinatorEmulator(ieee=0x00124B0011223344)
        await fresh.start(port=port)
        fleet = fleet_for(fresh, SERIALS[2:3])
        fleet.start()
        await until(fleet.reporting, 30, "reports through the new stick")
        assert (fresh.pan_id, fresh.channel, fresh.stack_profile) == (0x02AA, 13, 0)
        assert store.status()["zigbee"][1]["coordinator_ieee"] == "00:12:4b:00:11:22:33:44"

        service.stop()
        await asyncio.wait_for(running, 10)
        await fleet.stop()
        await fresh.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_stock_firmware_is_diagnosed(tmp_path):
    async def scenario():
        # Koenkk's stock build of January 2021: the standard key, and no foreign-profile forwarding
        emu = CoordinatorEmulator(tc_link_key=DEFAULT_TC_LINK_KEY, firmware=FirmwareVersion(code_revision=20210120))
        await emu.start()
        settings = from_dict(service_settings(tmp_path, emu.url))
        store = Store.from_settings(settings)
        service = ZigbeeService(settings, store, status_seconds=0.1, join_watch_seconds=0.5)
        fleet = fleet_for(emu, SERIALS[:2])
        fleet.start()
        running = asyncio.create_task(service.run())
        # at start-up, the check `solargw firmware verify` makes: the build date gives it away
        await until(lambda: service.status["stick_problems"], 15, "the start-up check")
        [problem] = store.status()["zigbee"][1]["stick_problems"]
        assert "firmware build 20210120 predates 20210708" in problem
        # the key cannot be read: inverters that join but never start the handshake tell it
        await until(lambda: service.status.get("firmware_warning"), 15, "the firmware diagnosis")
        assert "ENCSYS-SOLAR-NET" in store.status()["zigbee"][1]["firmware_warning"]
        assert not store.latest()
        service.stop()
        await asyncio.wait_for(running, 10)
        await fleet.stop()
        await emu.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_subprocess_service_restarts_without_duplicating_energy(tmp_path):
    """``solargw zigbee`` as a real process; a restart must not count energy twice."""
    async def scenario(broker, log):
        emu = CoordinatorEmulator()
        await emu.start()
        settings_file = tmp_path / "solargw.toml"
        settings_file.write_text(tomli_w.dumps(service_settings(tmp_path, emu.url, broker)))
        env = {**os.environ, "SOLARGW_SETTINGS": str(settings_file), "SOLARGW_DATA_DIR": str(tmp_path / "data")}
        solargw = str(Path(sys.executable).with_name("solargw"))
        fleet = fleet_for(emu, SERIALS[:3])
        fleet.start()
        store = Store(tmp_path / "data")

        async def start_service():
            return await asyncio.create_subprocess_exec(solargw, "zigbee", env=env, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)

        async def stop_service(process) -> str:
            process.send_signal(signal.SIGTERM)
            output, _ = await asyncio.wait_for(process.communicate(), 20)
            assert process.returncode == 0, output.decode()
            return output.decode()

        def ledger() -> dict[str, float]:
            return {i.serial: i.lifetime_wh for i in store.inverters()}

        process = await start_service()
        await until(lambda: len(store.latest()) == 3, 30, "reports through the subprocess")
        await until(lambda: all(v > 0 for v in ledger().values()), 5, "the ledger")
        for serial in map(str, SERIALS[:3]):
            log.wait(f"solargw/inverter/{serial}/state", timeout=10)
        first_output = await stop_service(process)
        assert "Zigbee network up" in first_output and "PAN 0x02AA" in first_output
        assert "handshake reply sent" in first_output

        # clouds: no power, so the counters stop growing and every report after the restart repeats them
        for inverter in fleet.inverters:
            inverter.peak_w = 0
        await asyncio.sleep(0.5)
        before = ledger()
        today_before = sum(wh for _day, wh in store.energy_per_day())
        restarted_at = time.time()
        formed = len(emu.events_named("formed"))
        profile_writes = len([e for e in emu.events_named("nv_write") if e.detail["nvid"] == OsalNvIds.STACK_PROFILE])

        process = await start_service()
        await until(lambda: all(r.timestamp > restarted_at + 0.5 for r in store.latest().values()), 30,
                    "reports after the restart")
        await asyncio.sleep(1.0)
        # Each ledger equals its inverter's own lifetime counter: not counted twice. (A report sent
        # while the first service was shutting down is lost, but the energy it carried is not: the
        # counter may have grown past ``before`` by that report, and the ledger follows it once.)
        after = ledger()
        assert after == {str(i.serial): int(i.lifetime_wh) for i in fleet.inverters}
        assert all(after[serial] >= before[serial] for serial in before)
        grown = sum(after.values()) - sum(before.values())
        assert grown < 5, f"{grown} Wh appeared across the restart with no power"
        assert sum(wh for _day, wh in store.energy_per_day()) == pytest.approx(today_before + grown)
        # the restart found the network and the stack profile right: verified, not rewritten
        assert len(emu.events_named("formed")) == formed
        assert len([e for e in emu.events_named("nv_write")
                    if e.detail["nvid"] == OsalNvIds.STACK_PROFILE]) == profile_writes
        await stop_service(process)
        await fleet.stop()
        await emu.stop()

    with mosquitto() as broker, broker.subscribe("solargw/#") as log:
        asyncio.run(scenario(broker, log))


def test_auto_detection_finds_the_sonoff_dongle(tmp_path):
    from appliance.zigbee import port

    assert port.resolve("auto", tmp_path / "missing") is None
    assert port.resolve("socket://10.0.0.2:6638", tmp_path) == "socket://10.0.0.2:6638"
    (tmp_path / "usb-Some_Mouse-if00").touch()
    assert port.resolve("auto", tmp_path) is None
    sonoff = tmp_path / "usb-ITead_Sonoff_Zigbee_3.0_USB_Dongle_Plus_a4b3e1d2c3f2ed11-if00-port0"
    sonoff.touch()
    assert port.resolve("auto", tmp_path) == str(sonoff)
    assert port.resolve("", tmp_path) == str(sonoff)


def test_telemetry_json_has_the_seed_shape_and_is_replaced_atomically(tmp_path):
    from appliance.protocols import enecsys
    from appliance.zigbee.telemetry import TelemetryFile

    path = tmp_path / "telemetry.json"
    path.write_text('{"9d11f605009ac634": {"serial": "100012445"}}')
    telemetry = TelemetryFile(path)
    frame = bytes.fromhex("5700ef55f705009ac63421010000000214300388000034002c034e3100f32002030543000049")
    assert telemetry.update(enecsys.decode(frame, received_at=0))
    data = json.loads(path.read_text())
    assert data["9d11f605009ac634"] == {"serial": "100012445"}  # kept
    assert data["ef55f705009ac634"] == {
        "serial": "100095471", "mac": "34c69a0005f755ef", "state": 0, "dc_current": 1.3, "dc_watts": 44,
        "dc_volt": pytest.approx(33.85, abs=0.01), "efficiency": 0.846, "ac_freq": 49, "ac_volt": 243,
        "ac_watts": pytest.approx(37.224), "temp": 32, "wh": 515, "kwh": 1347, "lifetime_wh": 1347515}
    bad = bytearray(frame)
    bad[-1] ^= 1
    assert not telemetry.update(enecsys.decode(bytes(bad), received_at=0))
    assert [p.name for p in tmp_path.iterdir()] == ["telemetry.json"]  # no temporary file left behind


def _replace(path: Path, data: dict | str) -> None:
    """Rewrite the settings file the way the web UI does (a new file renamed over the old)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(data if isinstance(data, str) else tomli_w.dumps(data))
    os.replace(tmp, path)


@pytest.mark.slow
def test_the_running_service_follows_edits_of_the_settings_file(tmp_path):
    """The web UI's Settings page rewrites the file: a file that does not load changes nothing,
    new MQTT settings move the publisher to the new broker, a new channel re-forms the network."""
    async def scenario(first_log, second):
        emu = CoordinatorEmulator()
        await emu.start()
        settings_file = tmp_path / "solargw.toml"
        data = service_settings(tmp_path, emu.url, first)
        _replace(settings_file, data)
        env = {**os.environ, "SOLARGW_SETTINGS": str(settings_file), "SOLARGW_DATA_DIR": str(tmp_path / "data")}
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("solargw")), "zigbee", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        fleet = fleet_for(emu, SERIALS[:2])
        fleet.start()
        state_topic = f"solargw/inverter/{SERIALS[0]}/state"
        try:
            await asyncio.to_thread(first_log.wait, state_topic, timeout=30)

            _replace(settings_file, "[mqtt\n")
            await asyncio.sleep(3)
            assert process.returncode is None
            mark = first_log.mark()
            await asyncio.to_thread(first_log.wait, state_topic, timeout=10, after=mark)

            data["mqtt"] = {"enabled": True, "host": second.host, "port": second.port}
            _replace(settings_file, data)
            with second.subscribe("solargw/#") as second_log:
                await asyncio.to_thread(second_log.wait, state_topic, timeout=30)

            data["zigbee"]["channel"] = 15
            _replace(settings_file, data)
            await until(lambda: any(e.detail["channel"] == 15 and e.detail["pan_id"] == enecsys.PAN_ID
                                    for e in emu.events_named("network_up")), 30, "the network up on channel 15")
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = await asyncio.wait_for(process.communicate(), 20)
            await fleet.stop()
            await emu.stop()
        text = output.decode()
        assert process.returncode == 0, text
        assert "not valid TOML" in text and "keeping the settings in use" in text
        assert "the MQTT settings changed" in text and "radio settings changed" in text, text
        assert "PAN 0x02AA, channel 15" in text
        assert "Traceback" not in text

    with mosquitto() as first, mosquitto() as second, first.subscribe("solargw/#") as first_log:
        asyncio.run(scenario(first_log, second))


@pytest.mark.slow
def test_fifty_inverters_joining_at_once_are_all_answered_and_report(tmp_path):
    async def scenario():
        emu = CoordinatorEmulator()
        await emu.start()
        settings = from_dict(service_settings(tmp_path, emu.url))
        store = Store.from_settings(settings)
        service = ZigbeeService(settings, store, status_seconds=0.5)
        running = asyncio.create_task(service.run())
        await until(lambda: emu.permit_join, 20, "the network")
        fleet = fleet_for(emu, InverterFleet.default_serials(50), interval=1.0, handshake_timeout=3.0)
        fleet.start()  # all at once, on a network that is already up
        await until(fleet.reporting, 30, "all 50 inverters reporting")
        assert len({emu.nwk_of(inverter) for inverter in fleet.inverters}) == 50  # 50 short addresses
        assert all(i.stats.handshake_timeouts == 0 and i.stats.joins == 1 for i in fleet.inverters)
        await until(lambda: len(store.latest()) == 50 and all(
            r.kind == "report" for r in store.latest().values()), 20, "a report of each in the store")
        assert service.frames.handshakes == 50
        service.stop()
        await asyncio.wait_for(running, 10)
        await fleet.stop()
        await emu.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_frame_that_claims_another_inverters_identity_is_refused_and_kept(tmp_path):
    """The IEEE inside a frame must be its sender's: a forger's handshake is not answered and its
    report not recorded, both kept with the rejected frames; an unknown sender is looked up."""
    async def scenario():
        emu = CoordinatorEmulator()
        await emu.start()
        settings = from_dict(service_settings(tmp_path, emu.url))
        store = Store.from_settings(settings)
        service = ZigbeeService(settings, store, status_seconds=0.2)
        genuine = SERIALS[0]
        fleet = fleet_for(emu, [genuine])
        fleet.start()
        running = asyncio.create_task(service.run())
        await until(lambda: str(genuine) in store.latest(), 20, "the genuine inverter's reports")
        lifetime = store.inverter(str(genuine)).lifetime_wh

        stranger = ForeignDevice(emu)  # a non-Enecsys device
        twin = ForeignDevice(emu, ieee=enecsys.serial_to_ieee(SERIALS[1]))  # another inverter
        request = enecsys.encode_handshake_request(genuine)
        report = enecsys.encode_report(genuine, 9, 0, 2.0, 60, 0.95, 50, 240, 30, 60_000_000)
        for forger in (stranger, twin):
            assert forger.join() is not None
            assert forger.send(request) and forger.send(report)

        def refused() -> list:
            return [r for r in store.rejected() if "sender mismatch" in r.reason]

        await until(lambda: len(refused()) == 4, 10, "the four forged frames among the rejected")
        for forger in (stranger, twin):
            nwk = emu.nwk_of(forger)
            reasons = {r.reason for r in refused() if r.source == f"zigbee:0x{nwk:04x}"}
            assert reasons == {f"sender mismatch: 0x{nwk:04x} is {forger.ieee:016x}; the frame says "
                               f"34c69a0005f755ef (serial {genuine})"}
            assert not [e for e in emu.events_named("af_data_request") if e.detail["nwk"] == nwk]  # unanswered
        assert {r.frame_hex for r in refused()} == {request.hex(), report.hex()}
        assert store.counters()[("sender_mismatches", "enecsys")] == 4
        assert service.frames.handshakes == 1 and sorted(store.latest()) == [str(genuine)]
        assert store.inverter(str(genuine)).lifetime_wh < 50_000_000  # the forged counter went nowhere
        assert store.inverter(str(genuine)).lifetime_wh >= lifetime

        # a genuine sender the device list has lost (a restarted service, say) is asked who it is
        app = service.app
        app.devices.pop(next(ieee for ieee, d in app.devices.items() if d.nwk == emu.nwk_of(fleet.inverters[0])))
        recorded = store.counters().get(("readings_recorded", "enecsys"), 0)
        await until(lambda: store.counters().get(("readings_recorded", "enecsys"), 0) > recorded + 1, 10,
                    "reports after the lookup")
        assert emu.events_named("ieee_addr_answered")[-1].detail["nwk"] == emu.nwk_of(fleet.inverters[0])
        assert len(refused()) == 4

        service.stop()
        await asyncio.wait_for(running, 10)
        await fleet.stop()
        await emu.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_inverters_behind_a_realistic_radio_all_report(tmp_path):
    """Delay, loss with APS retries and a full child table: joins go through other inverters, and
    every inverter is answered and reports all the same."""
    async def scenario():
        radio = RadioConditions(hop_delay=0.010, hop_jitter=0.030, loss=0.05, max_children=4, seed=3)
        emu = CoordinatorEmulator(radio=radio)
        await emu.start()
        settings = from_dict(service_settings(tmp_path, emu.url))
        store = Store.from_settings(settings)
        service = ZigbeeService(settings, store, status_seconds=0.5)
        fleet = fleet_for(emu, InverterFleet.default_serials(10), interval=0.5, handshake_timeout=3.0)
        fleet.start()
        running = asyncio.create_task(service.run())
        await until(fleet.reporting, 40, "every inverter reporting")
        hops = [emu.network.get(inverter.ieee).hops for inverter in fleet.inverters]
        assert hops.count(1) == 4 and max(hops) >= 2
        assert min(fleet.latencies()) >= 2 * radio.hop_delay
        await until(lambda: len(store.latest()) == 10, 20, "a reading of each in the store")
        assert emu.air.stats.lost > 0 and emu.air.stats.aps_retries > 0
        service.stop()
        await asyncio.wait_for(running, 10)
        await fleet.stop()
        await emu.stop()

    asyncio.run(scenario())


def test_frame_handling_needs_no_zigpy_and_refuses_a_claimed_identity(tmp_path):
    import concurrent.futures

    from appliance.pipeline import Pipeline
    from appliance.zigbee.frames import EnecsysFrames

    probe = "import sys, appliance.zigbee.frames; print(sorted(m for m in sys.modules if m.startswith('zigpy')))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "[]\n"

    async def scenario():
        store = Store(tmp_path / "data")
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            frames = EnecsysFrames(store, Pipeline(store), executor)
            sent: list[tuple[int, bytes]] = []

            async def reply(nwk: int, data: bytes) -> None:
                sent.append((nwk, data))

            request = enecsys.encode_handshake_request(SERIALS[0])
            gateway = bytes(8)
            await frames.frame(0x1111, request, enecsys.serial_to_ieee(SERIALS[0]), gateway, reply)
            await frames.frame(0x2222, request, enecsys.serial_to_ieee(SERIALS[1]), gateway, reply)
            await frames.frame(0x3333, request, None, gateway, reply)
            await asyncio.get_running_loop().run_in_executor(executor, lambda: None)  # the store thread is done
        assert sent == [(0x1111, enecsys.handshake_reply(gateway))]
        reasons = sorted(r.reason for r in store.rejected())
        assert reasons == [
            "sender mismatch: 0x2222 is 34c69a0005f6119d; the frame says 34c69a0005f755ef (serial 100095471)",
            "sender mismatch: 0x3333 is not on the network's device list; the frame says 34c69a0005f755ef "
            "(serial 100095471)"]

    asyncio.run(scenario())


@pytest.mark.slow
def test_the_real_capture_replayed_through_solargw_zigbee_ends_in_data_json(tmp_path):
    """``solargw simulate enecsys --replay`` plays the captured join against the real ``solargw zigbee``;
    ``solargw web`` then serves the inverter with the capture's lifetime energy and model, and the
    replay found the service's answer shaped like the genuine gateway's.

    The speed stays near real time: the capture's lifetime counter moves 145 Wh in 100 s, and the
    ledger takes a step only if an inverter could have produced it in the time that passed."""
    from server import running_web

    port = free_port()
    solargw = [sys.executable, "-m", "appliance"]
    replay = subprocess.Popen([*solargw, "simulate", "enecsys", "--replay", str(CAPTURE_JOIN), "--speed", "1.3",
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    zigbee = None
    try:
        assert replay.stdout.readline().strip() == f"socket://127.0.0.1:{port}"
        with running_web(tmp_path) as web:
            settings_file = tmp_path / "zigbee.toml"
            settings_file.write_text(tomli_w.dumps({"data": {"dir": str(web.data_dir)}, "mqtt": {"enabled": False},
                                                    "zigbee": {"device": f"socket://127.0.0.1:{port}"}}))
            env = {**os.environ, "SOLARGW_SETTINGS": str(settings_file)}
            zigbee = subprocess.Popen([*solargw, "zigbee"], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
            out, err = replay.communicate(timeout=150)
            assert replay.returncode == 0, out + err
            assert "no reply mismatch" in out and "replay mismatch" not in err, out + err
            assert "inverter 100095471 (IEEE 34c69a0005f755ef) joined" in out
            assert "11 frames sent, 1 answers compared" in out
            entry = requests.get(web.url + "data.json", timeout=5).json()["100095471"]
            assert entry["lifetime_wh"] == 1_347_515 and entry["model"] == "WSI-00003"
            assert (entry["fields"]["dc_power_w"], entry["mac"]) == (44, "34c69a0005f755ef")
    finally:
        for process in (replay, zigbee):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(20)
    assert zigbee.returncode == 0
